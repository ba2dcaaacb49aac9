"""``SnnModel.predict`` throughput on the digits MLP: sequential against batched, side by side.

Usage::

    .venv/bin/python benchmarks/predict_throughput.py [--images 10000] [--steps 32] [--device cpu]
                                                      [--no-verilator] [--profile]

The digits MLP (64-64-10, ``neurovm.examples.digits_onnx``) converted at ``--steps``
timesteps, predicted through the chip's data path (mapped by the mapper, loaded into
a VM by the runtime's words) on:

* ``emulator, sequential`` -- ``predict(batch=1)``: one sample per run, the VM's state
  reset in between (today's path);
* ``emulator, batched`` -- ``predict()``: the loaded chip forked into up to 4096
  copies, one sample each (``Chip.run_batch``, spec §6.4); ``--images`` samples (the
  test set repeated);
* ``verilator, sequential`` and ``verilator, replicas`` -- ``predict(batch=1)`` and
  ``predict()`` on the Verilator model: one VM per free core and VM id (4 on the
  default chip), one RUN serving 4 samples.

Every row's predictions and scores are compared with the sequential emulator's on
the samples both ran, and the row says ``identical`` or fails.  Figures are images
per wall second and per CPU second of this process (the machine may be shared);
the load average before and after is printed.  ``--profile`` adds the ten most
expensive functions of the batched run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import neurovm
from neurovm.examples import digits_onnx


def timed(fn):
    """``fn()``'s result, wall seconds and CPU seconds of this process."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def row(label: str, n: int, wall: float, cpu: float, same: str) -> None:
    print(f"| {label} | {n} | {n / wall:,.0f} | {n / cpu:,.0f} | {same} |", flush=True)


def compare(got, want, k: int) -> str:
    """``identical`` if predictions and scores of the first ``k`` samples equal the reference's."""
    (p, s), (p0, s0) = got, want
    if np.array_equal(p[:k], p0[:k]) and np.array_equal(s[:k], s0[:k]):
        return f"identical ({k} compared)"
    raise SystemExit(f"predictions differ from the sequential emulator on the first {k} samples")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000, help="samples of the batched emulator run")
    ap.add_argument("--sequential", type=int, default=200, help="samples of the sequential emulator run")
    ap.add_argument("--verilator-images", type=int, default=40, help="samples of each Verilator run")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="emulator device of the batched run: cpu, cuda, cuda:N")
    ap.add_argument("--no-verilator", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    onx, data, _ = digits_onnx(hidden=(64,), seed=0)
    model = neurovm.convert_onnx(onx, data.x_train[:300], steps=args.steps)
    x = np.resize(data.x_test, (max(args.images, args.sequential, args.verilator_images), data.x_test.shape[1]))
    print(f"digits MLP {model.sizes}, {args.steps} steps, {model.cores_needed()} core(s) per replica; "
          f"load average before: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs\n")
    print("| path | images | images/s (wall) | images/s (CPU) | predictions and scores |")
    print("|---|---|---|---|---|")
    ref, wall, cpu = timed(lambda: model.predict(x[:args.sequential], batch=1, return_scores=True, progress=False))
    row("emulator, sequential (batch=1)", args.sequential, wall, cpu, "reference")
    model.predict(x[:64], progress=False)                                       # warm-up
    got, wall, cpu = timed(lambda: model.predict(x[:args.images], return_scores=True, progress=False,
                                                 chip=neurovm.open("emulator", model.config, device=args.device)))
    row(f"emulator {args.device}, batched (4096 copies per run)", args.images, wall, cpu,
        compare(got, ref, args.sequential))
    if not args.no_verilator:
        k = args.verilator_images
        chip = neurovm.open("verilator", model.config)   # built (or taken from the cache) before timing
        got, wall, cpu = timed(lambda: model.predict(x[:k], chip=chip, batch=1, return_scores=True,
                                                     progress=False))
        row("verilator, sequential (batch=1)", k, wall, cpu, compare(got, ref, min(k, args.sequential)))
        got, wall, cpu = timed(lambda: model.predict(x[:k], chip=chip, return_scores=True, progress=False))
        reps = min(len(chip.free_cores) // model.cores_needed(), model.config.max_vms)
        row(f"verilator, {reps} replicas", k, wall, cpu, compare(got, ref, min(k, args.sequential)))
        chip.backend.close()
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(model.predict, x[:args.images], progress=False)
        pstats.Stats(prof).sort_stats("tottime").print_stats(10)


if __name__ == "__main__":
    main()
