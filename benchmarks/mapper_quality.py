"""Mapper quality and speed: AER packet volume and mean hops of neurovm.mapper against
METIS (pymetis, a reference only: it cannot express the axon and fan-out limits) and
against a layer-by-layer contiguous fill, on three families; mapping time versus size.

    .venv/bin/python -m pip install pymetis   # benchmark-only
    .venv/bin/python benchmarks/mapper_quality.py

METIS gets the same number of parts as the mapper uses, on the symmetrised
graph with unit weights; its partition is then checked against the chip's
per-core limits.  Packet volume = sum over neurons of the number of distinct
foreign cores they reach (rate 1); mean hops after placing each partition with
the same placer on the mesh.

The mapper's searches are bounded by work (``work_budget``: neuron visits of
the local search, swap candidates of the placement), not by time, so every
mapping here is the same on any machine and load; only the times vary.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurovm.config import ChipConfig  # noqa: E402
from neurovm.mapper import LIMITS, MapError, Network, contiguous_partition, map_network, packet_volume, \
    resource_use  # noqa: E402
from neurovm.mapper.compile import mapping_report, place  # noqa: E402
from neurovm.mapper.network import NetArrays  # noqa: E402


def feedforward() -> NetArrays:
    net = Network()
    sizes = [784, 512, 512, 10]
    pops = [net.population(f"L{i}", s) for i, s in enumerate(sizes)]
    for a, b in zip(pops, pops[1:]):
        net.all_to_all(a, b, weight=1)
    return net.arrays()


def sheet(side: int, radius: float) -> NetArrays:
    net = Network()
    p = net.population("sheet", side * side)
    r = int(radius)
    offs = [(dx, dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1)
            if (dx or dy) and dx * dx + dy * dy <= radius * radius]
    x, y = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    x, y = x.ravel(), y.ravel()
    pairs = []
    for dx, dy in offs:
        nx_, ny_ = x + dx, y + dy
        ok = (nx_ >= 0) & (nx_ < side) & (ny_ >= 0) & (ny_ < side)
        pairs.append(np.stack([x[ok] * side + y[ok], nx_[ok] * side + ny_[ok]], axis=1))
    net.connect(p, p, np.concatenate(pairs))
    return net.arrays()


def random_sparse(n: int, degree: int, seed: int = 0) -> NetArrays:
    rng = np.random.default_rng(seed)
    net = Network()
    p = net.population("random", n)
    src = np.repeat(np.arange(n), degree)
    dst = rng.integers(0, n, size=src.size)
    keep = src != dst
    net.connect(p, p, np.stack([src[keep], dst[keep]], axis=1))
    return net.arrays()


def metis_parts(net: NetArrays, k: int, ufactor: int = 30) -> np.ndarray:
    """METIS k-way parts; ``ufactor`` is its allowed imbalance in 1/1000 (30 = its default)."""
    import pymetis

    und = np.concatenate([net.src * net.n + net.dst, net.dst * net.n + net.src])
    und = np.unique(und)
    a, b = und // net.n, und % net.n
    keep = a != b
    a, b = a[keep], b[keep]
    xadj = np.searchsorted(a, np.arange(net.n + 1))
    _, parts = pymetis.part_graph(k, adjacency=pymetis.CSRAdjacency(xadj, b), options=pymetis.Options(ufactor=ufactor))
    return np.asarray(parts, dtype=np.int64)


def evaluate(net, core_of, cfg):
    k = int(core_of.max()) + 1
    use = resource_use(net, core_of, k)
    viol = [f"{attr} x{int((use[name] > getattr(cfg, attr)).sum())}" for name, attr in LIMITS
            if (use[name] > getattr(cfg, attr)).any()]
    traffic = np.zeros((k, k))
    key = np.unique(net.src * k + core_of[net.dst])
    np.add.at(traffic, (core_of[key // k], key % k), 1.0)
    np.fill_diagonal(traffic, 0)
    pcore = place(traffic, cfg, list(range(cfg.num_cores))) if k <= cfg.num_cores else np.arange(k) % cfg.num_cores
    rep = mapping_report(net, core_of, pcore, cfg)
    return packet_volume(net, core_of), rep["mean_hops"], ", ".join(viol) or "none"


def main():
    cfg8 = ChipConfig(mesh_width=10, mesh_height=10, vcores_per_vm=100)
    families = [
        ("feed-forward 784-512-512-10", feedforward(), cfg8),
        ("2-D sheet 100x100, radius 3", sheet(100, 3.0), cfg8),
        ("random sparse 6,000 x out-degree 8", random_sparse(6000, 8), cfg8),
    ]
    from neurovm.mapper.partition import DEFAULT_WORK_CAP

    print(f"Default work budget: 10 passes of neuron visits, at most {DEFAULT_WORK_CAP:,} visits.\n")
    print("| family | synapses | method | cores | packet volume | mean hops | limits violated | time |")
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for name, net, cfg in families:
        t0 = time.perf_counter()
        m = map_network(net, cfg)
        t_map = time.perf_counter() - t0
        k = int(m.core_of.max()) + 1
        rows = [("neurovm.mapper", m.core_of, t_map)]
        if net.n <= 20000 and net.n > cfg.neurons_per_core:   # spectral bisection: multi-start pays
            t0 = time.perf_counter()
            m5 = map_network(net, cfg, starts=5)
            rows.append(("neurovm.mapper, starts=5", m5.core_of, time.perf_counter() - t0))
        t0 = time.perf_counter()
        fill = contiguous_partition(net, cfg, cfg.num_cores)
        rows.append(("contiguous fill", fill, time.perf_counter() - t0))
        try:
            t0 = time.perf_counter()
            parts = metis_parts(net, k)
            rows.append((f"METIS (k={k})", parts, time.perf_counter() - t0))
            t0 = time.perf_counter()
            parts = metis_parts(net, k, ufactor=10)
            rows.append((f"METIS (k={k}, ufactor=10)", parts, time.perf_counter() - t0))
        except ImportError:
            rows.append(("METIS: pymetis not installed", None, 0))
        for method, core_of, t in rows:
            if core_of is None:
                print(f"| {name} | {net.src.size:,} | {method} | | | | | |")
                continue
            vol, hops, viol = evaluate(net, core_of, cfg)
            print(f"| {name} | {net.src.size:,} | {method} | {int(core_of.max()) + 1} | {vol:,.0f} | {hops:.2f} "
                  f"| {viol} | {t:.2f} s |")
    print("\nMapping time (neurovm.mapper, whole map_network) versus size, locally connected sheets:\n")
    print("| network | neurons | synapses | chip | cores used | time |")
    print("|---|---:|---:|---|---:|---:|")
    cfg16 = ChipConfig(mesh_width=16, mesh_height=16, vcores_per_vm=256)
    for side, radius in ((100, 1.5), (250, 2.3)):
        net = sheet(side, radius)
        t0 = time.perf_counter()
        m = map_network(net, cfg16)
        print(f"| sheet {side}x{side}, radius {radius} | {net.n:,} | {net.src.size:,} | 16x16 | "
              f"{int(m.core_of.max()) + 1} | {time.perf_counter() - t0:.1f} s |")
    big = ChipConfig(mesh_width=16, mesh_height=16, vcores_per_vm=256, synapses_per_core=32768)
    net = sheet(250, 7.3)
    t0 = time.perf_counter()
    try:
        map_network(net, big)
        outcome = "mapped"
    except MapError as e:
        outcome = f"MapError: {str(e)[:90]}…"
    print(f"| sheet 250x250, radius 7.3 | {net.n:,} | {net.src.size:,} | 16x16, S=32768 (largest legal) | "
          f"{outcome} | {time.perf_counter() - t0:.1f} s |")


if __name__ == "__main__":
    main()
