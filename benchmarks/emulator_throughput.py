"""Emulator throughput: synaptic events per second on a 4,000-neuron random network, 2% connectivity.

Usage::

    .venv/bin/python benchmarks/emulator_throughput.py [--steps 300] [--seed 0]

The network: 4,000 LIF neurons on a 4x4 chip (250 per core), each neuron
projecting to a random 2% of all neurons (about 320,000
synapses), weights signed random, a constant bias so that activity sustains.
The whole run goes through the command stream (one RUN per 100 steps); the
figure is synaptic operations (the chip's own SYN_OPS counters) per second,
measured twice:

* ``engine``: RUN words fed to the emulator (:meth:`neurovm.emulator.Chip.feed`),
  output words returned — the emulator itself;
* ``client``: :meth:`neurovm.host.ChipClient.run`, which also decodes every
  output word into spike records on the host.

Each is given per wall second and per CPU second of this process (on a machine
shared with other jobs the CPU-second figure is what a quiet machine shows).

Brian2 runs the same network (same synapses, weights, biases; the chip's LIF in
floating point, benchmarks/brian2_lif.py) in the same run, numpy and cython
targets, as the reference.  Brian2 2.9 does not import with numpy 2.4
(``ndarray.ptp``), so it runs in a subprocess of the first Python that can
import it: ``--brian2-python``, this one, or ``build/brian2-venv`` (``make bench``
creates it).  ``--no-brian2`` skips it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neurovm.config import ChipConfig
from neurovm.formats import Counter
from neurovm.host import ChipClient, EmulatorBackend
from neurovm.host import protocol as P
from neurovm.image import CoreImage
from neurovm.netbuild import images_from_edges

CFG = ChipConfig(mesh_width=4, mesh_height=4, neurons_per_core=256, synapses_per_core=32768,
                 axons_per_core=4096, fanout_per_core=4096, vcores_per_vm=16)


HERE = Path(__file__).resolve().parent


def build(n_neurons: int, p: float, rng, network: dict | None = None) -> dict[int, CoreImage]:
    """Core images of the random network; ``network``, if given, receives its synapses and parameters."""
    core_of = np.arange(n_neurons) // -(-n_neurons // CFG.num_cores)
    conn = rng.random((n_neurons, n_neurons)) < p  # conn[src, dst]
    np.fill_diagonal(conn, False)
    src, dst = np.nonzero(conn)
    params = dict(du=1024, dv=256, refract=2, bias_mant=rng.integers(40, 100, size=n_neurons), bias_exp=3,
                  vth_mant=120)
    weight = rng.integers(-50, 51, size=src.size)
    if network is not None:
        network.update(params, src=src, dst=dst, weight=weight)
    return images_from_edges(CFG, core_of, src, dst, weight, params)


def brian2_python(explicit: str | None) -> str | None:
    """The first Python that imports brian2: ``explicit``, this one, or build/brian2-venv's."""
    candidates = [explicit] if explicit else [sys.executable, str(HERE.parent / "build/brian2-venv/bin/python")]
    for python in candidates:
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", "import brian2"], capture_output=True).returncode == 0:
            return python
    return None


def run_brian2(network: dict, steps: int, python: str | None, n_neurons: int):
    """Time the same network in Brian2 (numpy and cython targets) and print it beside the emulator."""
    if python is None:
        print("brian2: not run (no Python here imports brian2; see this script's docstring)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "network.npz"
        np.savez(path, **network)
        for target in ("numpy", "cython"):
            proc = subprocess.run([python, str(HERE / "brian2_lif.py"), str(path), "--target", target,
                                   "--steps", str(steps)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"brian2 {target}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            n_steps, wall, spikes, events = proc.stdout.split()[-4:]
            wall, spikes, events = float(wall), int(spikes), int(events)
            print(f"brian2 {target}: {n_steps} steps, {events / int(n_steps):.0f} synaptic events/step,"
                  f" spikes/step {spikes / int(n_steps):.1f} ({spikes / int(n_steps) / n_neurons:.1%} of neurons)")
            print(f"  steps/s            {int(n_steps) / wall:12.1f}")
            print(f"  synaptic events/s  {events / wall:12.3e}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=4000)
    ap.add_argument("--connectivity", type=float, default=0.02)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-brian2", action="store_true", help="skip the Brian2 reference")
    ap.add_argument("--brian2-python", help="a Python interpreter with a working brian2")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    network = {}
    images = build(args.neurons, args.connectivity, rng, network)
    backend = EmulatorBackend(CFG)
    chip = ChipClient(backend)
    for q, img in images.items():
        chip.map(0, q, q)
        chip.load_core(0, q, img)
    t_load = time.perf_counter() - t0
    n_syn = sum(int(img.syn_len.sum()) for img in images.values())
    print(f"network: {args.neurons} neurons, {n_syn} synapses, {CFG.num_cores} cores; built+loaded in {t_load:.2f} s")
    def syn_ops() -> int:
        return sum(int(chip.counters(0, q)[Counter.SYN_OPS]) for q in range(CFG.num_cores))

    for label, run_100 in (("engine", lambda n: backend.chip.feed(P.encode_run(n))),
                           ("client", lambda n: chip.run(n))):
        ops0 = syn_ops()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        done = 0
        while done < args.steps:
            n = min(100, args.steps - done)
            run_100(n)
            done += n
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        ops = syn_ops() - ops0
        print(f"{label}: {args.steps} steps, {ops / args.steps:.0f} synaptic events/step")
        print(f"  steps/s            {args.steps / wall:12.1f}   (per CPU second {args.steps / cpu:10.1f})")
        print(f"  synaptic events/s  {ops / wall:12.3e}   (per CPU second {ops / cpu:10.3e})")
        print(f"  wall               {wall:12.2f} s  (CPU {cpu:.2f} s)", flush=True)
    if not args.no_brian2:
        run_brian2(network, args.steps, brian2_python(args.brian2_python), args.neurons)


if __name__ == "__main__":
    main()
