"""The GPU engine against the CPU engine on the same command streams: every output word equal.

Usage::

    make check-gpu        # or: .venv/bin/python benchmarks/check_gpu.py [--cases 40] [--device cuda]

On a machine with CuPy and a CUDA device, for each seeded case (a random chip
configuration of tests/randnet.py and a batch of random multi-VM workloads
with malformed commands, one per copy, fed in ragged chunks) it runs
``Chip(config, batch=B, device="cuda")`` and ``Chip(config, batch=B)`` (numpy)
on the same streams and compares every output word and the final state
(u, v, ref, acc, counters) of every copy; then the 4,000-neuron 2% benchmark
network as a batch on the device, against numpy, with its throughput.  It
prints what it compared.  Without CuPy or a device it says so and exits with
status 2 (nothing was compared).

:func:`compare_engines` is the comparison; tests/test_check_gpu.py runs it
with numpy on both sides so this script is exercised in CI.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.randnet, from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))      # batch_throughput, beside this script

from neurovm.emulator import Chip  # noqa: E402
from neurovm.emulator.xp import DeviceUnavailableError, namespace, to_host  # noqa: E402
from neurovm.formats import Counter  # noqa: E402
from neurovm.host import protocol as P  # noqa: E402
from tests.randnet import random_config  # noqa: E402
from tests.test_emulator_batch import malformed_workload, ragged_chunks  # noqa: E402

STATE = ("u", "v", "ref", "acc", "counters")


def compare_engines(device: str, seeds, reference_device: str = "cpu", max_batch: int = 5, log=print) -> dict:
    """Run each seeded case on ``device`` and on ``reference_device``; count what was compared.

    Returns
    -------
    dict
        ``cases``, ``copies``, ``words`` and ``state_values`` compared, ``spikes`` seen, and
        ``mismatches``: a list of ``(seed, copy, what)`` (empty when the engines agree).
    """
    report = dict(cases=0, copies=0, words=0, state_values=0, spikes=0, mismatches=[])
    for seed in seeds:
        rng = np.random.default_rng(seed)
        cfg = random_config(rng)
        B = int(rng.integers(1, max_batch + 1))
        streams = [malformed_workload(rng, cfg, steps=int(rng.integers(3, 12))) for _ in range(B)]
        chunked = [ragged_chunks(rng, s, 3) for s in streams]
        outs, chips = [], []   # [0]: the device under test, [1]: the reference
        for dev in (device, reference_device):
            chip = Chip(cfg, batch=B, device=dev)
            calls = [chip.feed_each([c[k] for c in chunked]) for k in range(3)]
            outs.append([np.concatenate([call[b] for call in calls]) for b in range(B)])
            chips.append(chip)
        for b in range(B):
            got, want = outs[0][b], outs[1][b]
            report["words"] += len(want)
            report["spikes"] += int(np.sum((want >> 28) == int(P.OutType.SPIKE)))
            if not np.array_equal(got, want):
                report["mismatches"].append((seed, b, "output words"))
        for name in STATE:
            got, want = to_host(getattr(chips[0], name)), to_host(getattr(chips[1], name))
            report["state_values"] += want.size
            if not np.array_equal(got, want):
                report["mismatches"].append((seed, None, name))
        report["cases"] += 1
        report["copies"] += B
    log(f"compared {report['cases']} random cases ({report['copies']} chip copies) on {device} against"
        f" {reference_device}: {report['words']} output words ({report['spikes']} spikes),"
        f" {report['state_values']} state and counter values; mismatches: {len(report['mismatches'])}")
    return report


def benchmark_network(device: str, batch: int, steps: int, log=print) -> bool:
    """The 4,000-neuron 2% network as a batch on ``device`` and on numpy: same words; the device's speed."""
    from batch_throughput import load_words, network_config
    cfg = network_config(4000, 0.02)
    words, n_syn = load_words(cfg, 4000, 0.02, np.random.default_rng(0))
    results = []
    for dev, b in ((device, batch), ("cpu", 1)):
        chip = Chip(cfg, batch=b, device=dev)
        chip.feed(words)
        chip.feed(P.encode_run(30))  # past the first spikes
        ops0 = int(to_host(chip.counters)[..., Counter.SYN_OPS].sum())
        t0 = time.perf_counter()
        out = chip.feed(P.encode_run(steps))
        wall = time.perf_counter() - t0
        ops = int(to_host(chip.counters)[..., Counter.SYN_OPS].sum()) - ops0
        results.append(out[0])
        log(f"  {dev}: batch {b} x 4000 neurons ({n_syn} synapses each), {steps} steps: "
            f"{b * steps / wall:.1f} copy-steps/s, {ops / wall:.3e} synaptic events/s")
    same = np.array_equal(results[0], results[1])
    log(f"  copy 0 output words identical to numpy: {same}")
    return same


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64, help="copies of the 4,000-neuron network on the device")
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args(argv)
    try:
        namespace(args.device)
    except DeviceUnavailableError as exc:
        print(f"check-gpu: no GPU engine here, nothing compared: {exc}")
        return 2
    report = compare_engines(args.device, range(50_000, 50_000 + args.cases))
    for m in report["mismatches"]:
        print(f"  MISMATCH seed {m[0]} copy {m[1]}: {m[2]}")
    same = benchmark_network(args.device, args.batch, args.steps)
    ok = not report["mismatches"] and same
    print("check-gpu: PASS" if ok else "check-gpu: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
