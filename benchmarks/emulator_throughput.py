"""Emulator throughput: synaptic events per second on a 4,000-neuron random network, 2% connectivity.

Usage::

    .venv/bin/python benchmarks/emulator_throughput.py [--steps 300] [--seed 0]

The network: 4,000 LIF neurons on a 4x4 chip (250 per core), each neuron
projecting to a random 2% of all neurons (about 320,000
synapses), weights signed random, a constant bias so that activity sustains.
The whole run goes through the command stream (one RUN per 100 steps); the
figure is synaptic operations (the chip's own SYN_OPS counters) per wall second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from neurovm.config import ChipConfig
from neurovm.formats import Counter
from neurovm.host import ChipClient, EmulatorBackend
from neurovm.image import CoreImage
from neurovm.netbuild import images_from_edges

CFG = ChipConfig(mesh_width=4, mesh_height=4, neurons_per_core=256, synapses_per_core=32768,
                 axons_per_core=4096, fanout_per_core=4096, vcores_per_vm=16)


def build(n_neurons: int, p: float, rng) -> dict[int, CoreImage]:
    core_of = np.arange(n_neurons) // -(-n_neurons // CFG.num_cores)
    conn = rng.random((n_neurons, n_neurons)) < p  # conn[src, dst]
    np.fill_diagonal(conn, False)
    src, dst = np.nonzero(conn)
    params = dict(du=1024, dv=256, refract=2, bias_mant=rng.integers(40, 100, size=n_neurons), bias_exp=3,
                  vth_mant=120)
    return images_from_edges(CFG, core_of, src, dst, rng.integers(-50, 51, size=src.size), params)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=4000)
    ap.add_argument("--connectivity", type=float, default=0.02)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    images = build(args.neurons, args.connectivity, rng)
    chip = ChipClient(EmulatorBackend(CFG))
    for q, img in images.items():
        chip.map(0, q, q)
        chip.load_core(0, q, img)
    t_load = time.perf_counter() - t0
    n_syn = sum(int(img.syn_len.sum()) for img in images.values())
    print(f"network: {args.neurons} neurons, {n_syn} synapses, {CFG.num_cores} cores; built+loaded in {t_load:.2f} s")
    spikes = 0
    t0 = time.perf_counter()
    done = 0
    while done < args.steps:
        n = min(100, args.steps - done)
        spikes += len(chip.run(n).spikes)
        done += n
        print(f"  step {done}/{args.steps}", flush=True)
    wall = time.perf_counter() - t0
    syn_ops = sum(int(chip.counters(0, q)[Counter.SYN_OPS]) for q in range(CFG.num_cores))
    print(f"steps/s            {args.steps / wall:12.1f}")
    print(f"spikes/step        {spikes / args.steps:12.1f}  ({spikes / args.steps / args.neurons:.1%} of neurons)")
    print(f"synaptic events/s  {syn_ops / wall:12.3e}")
    print(f"wall               {wall:12.2f} s for {args.steps} steps")


if __name__ == "__main__":
    main()
