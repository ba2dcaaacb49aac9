"""Cycle-count measurements of LifCore (run by benchmarks/core_throughput.py, not by the test suite).

Writes a JSON report to $NEUROVM_BENCH_OUT.  Cycle counts are exact and
simulator-independent; wall time is irrelevant here.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from agents import value_of
from core_tb import CFG, N, S, A, CoreTestbench, image_words, neurons
from neurovm.hdl.core import CorePhase
from neurovm.image import CoreImage

RESULTS = {"config": CFG.to_dict(), "synops": [], "steps": []}


async def load_plain(tb, img):
    await tb.clear()
    for region, words in image_words(img).items():
        await tb.write(region, 0, list(map(int, words)))


@cocotb.test()
async def synops_per_clock(dut):
    """Saturating input: events back to back, every axon's list ``L`` synapses long."""
    tb = CoreTestbench(dut)
    await tb.reset()
    for L in (1, 2, 4, 16, 64, 256, 1024):
        L = min(L, S)
        img = CoreImage(**neurons(), syn_start=np.zeros(A, dtype=np.int64), syn_len=np.full(A, L),
                        target=np.arange(L) % N, weight=np.ones(L, dtype=np.int64))
        await load_plain(tb, img)
        events = [i % A for i in range(max(256, 32_768 // L))]
        ops0 = value_of(dut.syn_ops)
        c0 = tb.loop.cycle
        tb.events.extend(events)
        await tb.loop.wait_for(lambda: tb.events.idle and value_of(dut.syn_idle), "events absorbed", 10_000_000)
        cycles = tb.loop.cycle - c0
        ops = value_of(dut.syn_ops) - ops0
        assert ops == len(events) * L
        RESULTS["synops"].append({"syn_len": L, "events": len(events), "synops": ops, "cycles": cycles,
                                  "synops_per_clock": ops / cycles})


@cocotb.test()
async def cycles_per_step(dut):
    """Cycles from `start` to `done` for a step with a fraction of neurons firing, ``f`` fan-out each."""
    tb = CoreTestbench(dut)
    await tb.reset()
    for frac in (0.0, 0.1, 0.5, 1.0):
        for f in (0, 1, 4):
            k = int(round(frac * N))
            fire = np.arange(N) < k
            img = CoreImage(**neurons(bias_mant=np.where(fire, 4095, 0), bias_exp=7,
                                      vth_mant=np.where(fire, 0, 2**17 - 1), fo_start=0, fo_len=f, report=0),
                            fo_axon=np.zeros(max(f, 1), dtype=np.int64), fo_vcore=np.ones(max(f, 1), dtype=np.int64),
                            syn_start=[0], syn_len=[0], target=[0], weight=[0])
            await load_plain(tb, img)
            tb.board.expected.clear()
            c0 = tb.loop.cycle
            tb.ctl.pulse("start")
            await tb.loop.wait_for(lambda: tb.phase() == CorePhase.RUN, "RUN")
            await tb.loop.wait_for(lambda: value_of(dut.done), "done", 1_000_000)
            cycles = tb.loop.cycle - c0
            tb.ctl.pulse("commit")
            await tb.loop.wait_for(lambda: tb.phase() == CorePhase.IDLE, "IDLE")
            assert tb.faults == k * f
            tb.faults = 0
            tb.board.errors.clear()
            RESULTS["steps"].append({"neurons": N, "firing": k, "fanout": f, "cycles": cycles})
    with open(os.environ["NEUROVM_BENCH_OUT"], "w") as fh:
        json.dump(RESULTS, fh, indent=1)
