"""Throughput versus offered load and latency versus hop count of MeshNoC
(run by benchmarks/router_throughput.py, not by the test suite).

Uniform random traffic (destinations uniform over all nodes, self included);
each node generates a packet with probability ``load`` per cycle into an
unbounded source queue (the offered load); sinks never stall.  Latency is
counted from generation to delivery, so it includes source queueing.
Writes JSON to $NEUROVM_BENCH_OUT.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import cocotb
import numpy as np

from mesh_tb import C, CFG, MeshTestbench
from neurovm.emulator.mesh import hops

LOADS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
WARMUP, WINDOW = 500, 2_500


class Generator:
    """Agent: every cycle, each node generates a packet with probability ``load``."""

    def __init__(self, tb: MeshTestbench, rng):
        self.tb, self.rng, self.load = tb, rng, 0.0

    def drive(self):
        if self.load:
            for s in np.flatnonzero(self.rng.random(C) < self.load):
                self.tb.send(int(s), int(self.rng.integers(0, C)))

    def sample(self):
        pass


@cocotb.test()
async def load_sweep(dut):
    rng = np.random.default_rng(0)
    tb = MeshTestbench(dut, rng)
    tb.track_latency = True
    gen = Generator(tb, rng)
    tb.loop.agents.insert(0, gen)
    await tb.reset()
    results = {"config": CFG.to_dict(), "sweep": [], "latency_by_hops": {}}
    for load in LOADS:
        gen.load = load
        await tb.loop.cycles(WARMUP)
        d0, l0 = tb.delivered, len(tb.latencies)
        await tb.loop.cycles(WINDOW)
        lat = [c for _, _, c in tb.latencies[l0:]]
        results["sweep"].append({"offered": load, "accepted": (tb.delivered - d0) / (WINDOW * C),
                                 "mean_latency": float(np.mean(lat)) if lat else None})
        gen.load = 0.0
        await tb.drain(f"drain after load {load}")
        if load == LOADS[0]:
            by = defaultdict(list)
            for s, d, c in tb.latencies[l0:]:
                by[sum(hops(CFG, s, d))].append(c)
            results["latency_by_hops"] = {h: float(np.mean(v)) for h, v in sorted(by.items())}
    await tb.check_counters()
    with open(os.environ["NEUROVM_BENCH_OUT"], "w") as fh:
        json.dump(results, fh, indent=1)
