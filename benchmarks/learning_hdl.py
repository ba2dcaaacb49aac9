"""Cost of the HDL learning engine (spec §24.5) in clock cycles, on the Verilator model of a chip.

One 1x1 chip with the default core (N=256, S=16384, A=1024, F=1024), every axon's synapse list
``L`` entries long (all A lists together cover ``A * L`` entries), all neurons active, a tenth of
them firing every step, ``EVENTS`` injected events per step.  Measured for the same workload:

* the chip without the learning engine (``learning = 0``);
* a learning chip with ``enable = 0`` (pend is still taken every step: the RUN axon sweep);
* ``enable = 1`` between passes (``epoch_log2 = 7``: the traces only, LEARN = N + 2 clocks);
* ``enable = 1`` with a pass every step (``epoch_log2 = 0``): A + sum(L) more clocks.

Cycles per step are chip clocks per step of a ``RUN 10`` (host interface, barrier and output
included), averaged.  "Pass synapses / clock" is ``A * L`` over the extra clocks of a pass step.
Every variant's output is checked word for word against the emulator.

    .venv/bin/python benchmarks/learning_hdl.py [--lens 1 4 16] [--core]

``--core`` also runs the cocotb cycle benchmark of benchmarks/core_throughput.py
(tests/cocotb/core_bench.py) on the default core *with* the learning engine (``enable = 0``
after RESET): events through the synapse pipeline back to back, and cycles start->done.

Prints a Markdown table (pasted into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurovm.config import HV_VM, ChipConfig  # noqa: E402
from neurovm.emulator import Chip  # noqa: E402
from neurovm.host import protocol as P  # noqa: E402
from neurovm.host.verilator import VerilatedChip  # noqa: E402
from neurovm.image import CoreImage, LearningRule  # noqa: E402

EVENTS = 64
STEPS = 10
ROUNDS = 3


def image(cfg: ChipConfig, L: int, rule: LearningRule | None) -> CoreImage:
    """Every axon a list of ``L`` synapses (lists tile SYN), neurons 0, 10, 20, ... fire every step."""
    N, A = cfg.neurons_per_core, cfg.axons_per_core
    n = np.arange(N)
    fire = n % 10 == 0
    img = CoreImage(syn_start=(np.arange(A) * L) % cfg.synapses_per_core, syn_len=np.full(A, L),
                    target=np.arange(A * L) % N, weight=np.where(np.arange(A * L) % 3 == 0, 2, -1),
                    du=np.full(N, 4095), dv=np.full(N, 2048), bias_mant=np.where(fire, 4095, 0),
                    bias_exp=np.where(fire, 7, 0), vth_mant=np.where(fire, 0, 2**17 - 1), report=fire)
    return img if rule is None else img.with_learning(rule)


def session(cfg, img, rng) -> tuple[list[int], list[tuple[list[int], list[int]]]]:
    """The set-up words and, per round, its EVENTS injections and its RUN (then a READ, which waits
    for the last step's LEARN phase: a core takes configuration only in IDLE)."""
    setup = P.encode_reset()
    for region, data in img.region_words(cfg).items():
        setup += P.encode_write(HV_VM, 0, region, 0, data)
    rounds = []
    for _ in range(ROUNDS):
        w = []
        for a in rng.integers(0, cfg.axons_per_core, size=EVENTS):
            w += P.encode_inject(HV_VM, 0, int(a))
        rounds.append((w, P.encode_run(STEPS) + P.encode_read(HV_VM, 0, 11, 0, 1)))   # READ: waits for LEARN
    return setup, rounds


def measure(cfg, img, seed: int = 0) -> float:
    """Chip clocks per step (RUN + its drain), checked against the emulator word for word."""
    rng = np.random.default_rng(seed)
    setup, rounds = session(cfg, img, rng)
    chip, gold = VerilatedChip(cfg), Chip(cfg)
    try:
        assert np.array_equal(chip.feed(setup), gold.feed(setup))
        per_step = []
        for inject, run in rounds:
            got = list(chip.feed(inject))
            c0 = chip.cycles
            got += list(chip.feed(run))
            per_step.append((chip.cycles - c0) / STEPS)
            want = list(gold.feed(inject)) + list(gold.feed(run))
            assert got == want, "the Verilator model and the emulator disagree"
        return float(np.mean(per_step))
    finally:
        chip.close()


def core_bench_learning():
    """core_bench.py on the default LifCore with learning=1: synaptic ops per clock, cycles per step."""
    from core_throughput import core_bench   # benchmarks/core_throughput.py, beside this script

    res = core_bench(ChipConfig(mesh_width=1, mesh_height=1, learning=1), "core_default_learning")
    print("\nLifCore with the learning engine (default core, enable = 0), tests/cocotb/core_bench.py\n")
    print("| synapses per axon | synaptic ops | cycles | synops / clock |")
    print("|---:|---:|---:|---:|")
    for r in res["synops"]:
        print(f"| {r['syn_len']} | {r['synops']} | {r['cycles']} | {r['synops_per_clock']:.3f} |")
    print("\n| firing | fan-out each | cycles start→done |")
    print("|---:|---:|---:|")
    for r in res["steps"]:
        print(f"| {r['firing']} | {r['fanout']} | {r['cycles']} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lens", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--core", action="store_true", help="also the cocotb core benchmark with learning=1")
    args = ap.parse_args(argv)
    base = dict(mesh_width=1, mesh_height=1)
    plain, learning = ChipConfig(**base), ChipConfig(**base, learning=1)
    rules = {"enable = 0": LearningRule(enable=0), "enable = 1, no pass": LearningRule(epoch_log2=7),
             "enable = 1, pass every step": LearningRule(epoch_log2=0)}
    print(f"Default core (N={plain.neurons_per_core}, S={plain.synapses_per_core}, A={plain.axons_per_core}), "
          f"{EVENTS} events and 26 spiking neurons per step; chip clocks per step (Verilator)\n")
    print("| synapses per axon (L) | learning = 0 | learning = 1, enable = 0 | enable = 1, no pass | "
          "enable = 1, pass every step | pass synapses / clock |")
    print("|---:|---:|---:|---:|---:|---:|")
    for L in args.lens:
        t0 = time.perf_counter()
        row = {"off": measure(plain, image(plain, L, None))}
        for name, rule in rules.items():
            row[name] = measure(learning, image(learning, L, rule))
        extra = row["enable = 1, pass every step"] - row["enable = 1, no pass"]
        total = learning.axons_per_core * L
        print(f"| {L} | {row['off']:.1f} | {row['enable = 0']:.1f} | {row['enable = 1, no pass']:.1f} | "
              f"{row['enable = 1, pass every step']:.1f} | {total / extra:.3f} |", flush=True)
        print(f"<!-- L={L}: {time.perf_counter() - t0:.0f} s -->", file=sys.stderr)
    if args.core:
        core_bench_learning()


if __name__ == "__main__":
    main()
