"""The whole chip on three backends, side by side in one run, on the same command words:
the Verilator model (sim/), Amaranth's Python simulator of the same HDL, and the emulator.

    .venv/bin/python benchmarks/chip_speed.py [--steps 40] [--amaranth-steps 3] [--baseline HEAD]

Workload: the `make sim` demo's two tenant VMs (a synfire ring and a random
E/I network, 256 neurons, 4,700 synapses) on the default 2x2 chip: map,
load, then RUN with injected input.  The Python simulator runs the same
stream truncated to its first ``--amaranth-steps`` steps (it is slow); its
output is checked word for word against the Verilator model's on that prefix.
With ``--baseline REV`` the Verilator model of commit REV (as it builds there, see
benchmarks/verilator_speed.py) runs the same words too, in the same process, and
the speed-up of the working tree's model over it is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurovm.config import DEFAULT_CONFIG  # noqa: E402
from neurovm.demo import NOISE_N, RING_GROUP, noise_network, ring_network, tenant_words  # noqa: E402
from neurovm.host import protocol as P  # noqa: E402


def workload(steps: int, seed: int = 1) -> tuple[list[int], list[int]]:
    """(setup words, per-step words): the demo's tenants, then `steps` single-step RUNs with input."""
    cfg = DEFAULT_CONFIG
    rng = np.random.default_rng(seed)
    tenants = {0: (ring_network(), {0: 0, 1: 3}), 1: (noise_network(rng), {0: 1, 1: 2})}
    setup = [w for vm, (net, placement) in tenants.items() for w in tenant_words(cfg, vm, net, placement)]
    for a in range(RING_GROUP):
        setup += P.encode_inject(0, 0, a)
    noise_core_of = tenants[1][0][1]
    per_step = []
    for _ in range(steps):
        words = []
        for a in rng.choice(NOISE_N, size=8, replace=False):
            words += P.encode_inject(1, int(noise_core_of[a]), int(a))
        per_step.append(words + P.encode_run(1))
    return setup, per_step


def run_verilator(setup, steps_words, library=None):
    """Clock the Verilator model (the working tree's, or the prebuilt ``library``) through the words."""
    from neurovm.host.verilator import VerilatedChip

    chip = VerilatedChip(DEFAULT_CONFIG, quiet=False, library=library)
    chip.push(setup)
    chip.run()
    c0 = chip.cycles
    out = [chip.pull()]
    t0 = time.perf_counter()
    for w in steps_words:
        chip.push(w)
        chip.run()
    wall = time.perf_counter() - t0
    out.append(chip.pull())
    return np.concatenate(out), chip.cycles - c0, wall, chip


def run_amaranth(setup, steps_words):
    from amaranth.sim import Simulator

    from neurovm.hdl.chip import ChipPins

    dut = ChipPins(DEFAULT_CONFIG)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out, stats = [], {}

    async def bench(ctx):
        async def feed(words):
            i, n = 0, 0
            while True:
                if i < len(words):
                    ctx.set(dut.cmd_valid, 1)
                    ctx.set(dut.cmd_data, words[i])
                else:
                    ctx.set(dut.cmd_valid, 0)
                ctx.set(dut.out_ready, 1)
                _, _, took, ov, od, idle = await ctx.tick().sample(dut.cmd_ready, dut.out_valid, dut.out_data,
                                                                      dut.idle)
                n += 1
                took = bool(took) and i < len(words)
                if took:
                    i += 1
                if ov:
                    out.append(od)
                if i == len(words) and not took and idle and not ov:
                    return n
        await feed(setup)
        t0 = time.perf_counter()
        cycles = 0
        for w in steps_words:
            cycles += await feed(w)
        stats.update(cycles=cycles, wall=time.perf_counter() - t0)

    sim.add_testbench(bench)
    sim.run()
    return np.array(out, dtype=np.uint32), stats["cycles"], stats["wall"]


def run_emulator(setup, steps_words):
    from neurovm.emulator import Chip

    chip = Chip(DEFAULT_CONFIG)
    out = [chip.feed(setup)]
    t0 = time.perf_counter()
    for w in steps_words:
        out.append(chip.feed(w))
    return np.concatenate(out), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--amaranth-steps", type=int, default=3)
    ap.add_argument("--baseline", help="also run this commit's Verilator model (e.g. HEAD) and print the speed-up")
    args = ap.parse_args()
    setup, steps = workload(args.steps)
    v_out, v_cycles, v_wall, _ = run_verilator(setup, steps)
    e_out, e_wall = run_emulator(setup, steps)
    assert np.array_equal(v_out, e_out), "Verilator and emulator outputs differ"
    baseline_rows = []
    if args.baseline:
        b_out, b_cycles, b_wall, _ = run_verilator(setup, steps, library=baseline_library(args.baseline))
        assert np.array_equal(b_out, e_out), f"the Verilator model of {args.baseline} differs from the emulator"
        assert b_cycles == v_cycles, f"cycle counts differ: {args.baseline} {b_cycles}, working tree {v_cycles}"
        baseline_rows = [(f"Verilator model of {args.baseline}", b_cycles / b_wall, args.steps / b_wall, args.steps)]
    a_out, a_cycles, a_wall = run_amaranth(setup, steps[: args.amaranth_steps])
    assert np.array_equal(a_out, e_out[: a_out.size]), "Amaranth simulator output differs"
    rows = [
        ("Verilator model (sim/)", v_cycles / v_wall, args.steps / v_wall, args.steps),
        ("Amaranth Python simulator", a_cycles / a_wall, args.amaranth_steps / a_wall, args.amaranth_steps),
        ("emulator (numpy)", None, args.steps / e_wall, args.steps),
    ]
    rows[1:1] = baseline_rows
    print(f"default 2x2 chip, demo workload; {v_cycles / args.steps:,.0f} clock cycles per step\n")
    print("| backend | steps run | cycles/s | timesteps/s |")
    print("|---|---:|---:|---:|")
    for name, cps, sps, n in rows:
        print(f"| {name} | {n} | {'-' if cps is None else f'{cps:,.0f}'} | {sps:,.1f} |")
    amaranth = rows[1 + len(baseline_rows)]
    print(f"\nVerilator / Amaranth simulator: {rows[0][1] / amaranth[1]:,.0f}x cycles/s "
          f"(same HDL, same words; outputs identical on the common prefix)")
    if baseline_rows:
        print(f"Verilator model, working tree / {args.baseline}: {rows[0][1] / rows[1][1]:.2f}x cycles/s "
              f"(same words, same cycle count, outputs identical)")


def baseline_library(rev: str) -> str:
    """The model library of commit ``rev``, built (or found in build/sim) by its own code."""
    import tempfile

    from verilator_speed import baseline_tree, build_library

    with tempfile.TemporaryDirectory(prefix="neurovm-baseline-") as tmp:
        return build_library(baseline_tree(rev, Path(tmp)), ROOT / "build" / "sim")


if __name__ == "__main__":
    main()
