"""Batched emulator throughput and memory: events/s and steps/s against batch size and network size.

Usage::

    .venv/bin/python benchmarks/batch_throughput.py [--steps 50] [--batches 1,4,16,32] [--device cpu]

For each network (random LIF networks at 2% connectivity, built like
benchmarks/emulator_throughput.py, one chip configuration sized to each) and each
batch size B, ``Chip(config, batch=B, device=...)`` gets the image broadcast to
every copy (:meth:`~neurovm.emulator.Chip.feed`), then ``RUN`` words; the
figures are the copies' SYN_OPS counters summed, per wall second and per CPU
second of this process.

Memory: the engine's arrays are measured (:meth:`~neurovm.emulator.engine.Engine.footprint`,
the device side) together with the raw core memories the host keeps per copy;
the per-copy total gives bytes per neuron and per synapse slot of the
configuration, and the largest batch of each network that fits in 24 GiB
(CPU) and 80 GiB (GPU, device side only).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from neurovm.config import ChipConfig
from neurovm.emulator import Chip
from neurovm.formats import Counter
from neurovm.host import protocol as P
from neurovm.netbuild import images_from_edges

GIB = 1 << 30


def network_config(n_neurons: int, p: float) -> ChipConfig:
    """A square mesh of 256-neuron cores with room for ``n_neurons`` at connectivity ``p``."""
    side = int(np.ceil(np.sqrt(n_neurons / 250)))
    cores = side * side
    per_core = -(-n_neurons // cores)
    fan_in = int(per_core * n_neurons * p * 1.3) + 64
    pow2 = lambda x: 1 << int(np.ceil(np.log2(max(x, 2))))  # noqa: E731
    return ChipConfig(mesh_width=side, mesh_height=side, neurons_per_core=256, synapses_per_core=pow2(fan_in),
                      axons_per_core=pow2(n_neurons), fanout_per_core=pow2(per_core * cores),
                      vcores_per_vm=cores)


def load_words(cfg: ChipConfig, n_neurons: int, p: float, rng) -> tuple[list[int], int]:
    """Command words that map and load the network on VM 0; and its number of synapses."""
    core_of = np.arange(n_neurons) // -(-n_neurons // cfg.num_cores)
    conn = rng.random((n_neurons, n_neurons)) < p
    np.fill_diagonal(conn, False)
    src, dst = np.nonzero(conn)
    params = dict(du=1024, dv=256, refract=2, bias_mant=rng.integers(40, 100, size=n_neurons), bias_exp=3,
                  vth_mant=120)
    images = images_from_edges(cfg, core_of, src, dst, rng.integers(-50, 51, size=src.size), params)
    words = P.encode_reset()
    for q, img in images.items():
        words += P.encode_mmu_map(0, q, q)
        for region, data in img.region_words(cfg).items():
            words += P.encode_write(0, q, region, 0, [int(x) for x in data])
    return words, int(src.size)


def host_bytes(chip: Chip) -> int:
    """Bytes of the raw core memories and MMU tables the host keeps for every copy."""
    arrays = list(chip.mem.values()) + [chip._mmu_valid, chip._mmu_pcore, chip._mmu_perms, chip._owner_valid,
                                        chip._owner_vm, chip._owner_vcore]
    return int(sum(a.nbytes for a in arrays))


def measure(cfg, words, batch: int, steps: int, device: str) -> dict:
    chip = Chip(cfg, batch=batch, device=device)
    chip.feed(words)
    chip.feed(P.encode_run(2))  # decode tables, build routes
    ops0 = int(chip.counters[..., Counter.SYN_OPS].sum())
    wall0, cpu0 = time.perf_counter(), time.process_time()
    chip.feed(P.encode_run(steps))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    ops = int(chip.counters[..., Counter.SYN_OPS].sum()) - ops0
    device_bytes = sum(chip.engine.footprint().values())
    return dict(batch=batch, wall=wall, cpu=cpu, ops=ops, steps=steps, device_bytes=device_bytes,
                host_bytes=host_bytes(chip), groups=chip.engine.footprint())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="1000,4000", help="neuron counts, comma-separated")
    ap.add_argument("--connectivity", type=float, default=0.02)
    ap.add_argument("--batches", default="1,4,16,32", help="batch sizes, comma-separated")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"device {args.device}; {args.steps} steps per run; p = {args.connectivity}")
    print(f"{'neurons':>8} {'synapses':>9} {'batch':>6} {'steps/s':>9} {'events/s':>10} {'events/CPU-s':>12}"
          f" {'MiB/copy':>9}")
    summary = []
    for n in (int(x) for x in args.networks.split(",")):
        cfg = network_config(n, args.connectivity)
        words, n_syn = load_words(cfg, n, args.connectivity, np.random.default_rng(args.seed))
        last = None
        for b in (int(x) for x in args.batches.split(",")):
            r = measure(cfg, words, b, args.steps, args.device)
            per_copy = (r["device_bytes"] + r["host_bytes"]) / b
            print(f"{n:>8} {n_syn:>9} {b:>6} {r['steps'] / r['wall']:>9.1f} {r['ops'] / r['wall']:>10.3e}"
                  f" {r['ops'] / r['cpu']:>12.3e} {per_copy / 2**20:>9.2f}", flush=True)
            last = r
        summary.append((n, n_syn, cfg, last))
    print("\nmemory per copy (measured arrays; per-step temporaries not included)")
    for n, n_syn, cfg, r in summary:
        b = r["batch"]
        g = {k: v / b for k, v in r["groups"].items()}
        neurons, slots = cfg.num_cores * cfg.neurons_per_core, cfg.num_cores * cfg.synapses_per_core
        device = r["device_bytes"] / b
        total = device + r["host_bytes"] / b
        print(f"  {n} neurons ({cfg.num_cores} cores x {cfg.neurons_per_core}), {n_syn} synapses"
              f" ({slots} synapse slots):")
        print(f"    bytes per neuron slot  {g['neuron'] / neurons:8.1f}   bytes per synapse slot"
              f" {g['synapse'] / slots:6.1f} (device)   per synapse used {g['synapse'] / n_syn:6.1f}")
        print(f"    per copy: device {device / 2**20:.2f} MiB, host {r['host_bytes'] / b / 2**20:.2f} MiB;"
              f" largest batch in 24 GiB (CPU, all): {int(24 * GIB // total)}"
              f" = {int(24 * GIB // total) * n:.3g} neurons;"
              f" in 80 GiB (GPU, device side): {int(80 * GIB // device)}")


if __name__ == "__main__":
    main()
