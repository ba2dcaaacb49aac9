"""The HDL learning engine (hdl/learning.py, spec §24.5) against the golden emulator, bit for bit.

* the arithmetic units :class:`TraceStep` and :class:`StdpUpdate` against
  :func:`neurovm.emulator.lif.trace_step` / :func:`~neurovm.emulator.lif.stdp_dw` on every corner
  and on random operands (Amaranth simulation);
* whole learning chips in Amaranth's simulator, fed the seeded learning sessions of
  ``tests/test_learning.py`` and the learning mode of ``tests/randnet.py``: every output word,
  including the read-back of every learned weight, trace, flag and ``pend`` bit, equals the
  emulator's (hdl tier);
* the Verilator model of a learning chip, word for word on random learning workloads, and
  ``VM.run(learn=True)`` on the Verilator backend (cosim tier).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from neurovm.config import TRACE_MAX, ChipConfig
from neurovm.emulator import Chip
from neurovm.emulator.lif import stdp_dw, trace_step
from neurovm.hdl.learning import RULE, StdpUpdate, TraceStep

from .randnet import random_workload
from .test_learning import learning_session, readback

# one small learning chip for the randnet workloads: 2 cores, 2 VMs, narrow weights (saturation)
RAND_CFG = ChipConfig(mesh_width=2, mesh_height=1, neurons_per_core=6, synapses_per_core=40, axons_per_core=8,
                      fanout_per_core=12, weight_bits=4, max_vms=2, vcores_per_vm=2, learning=1)


# ---------------------------------------------------------------------------
# Amaranth simulation helpers
# ---------------------------------------------------------------------------
def evaluate(unit, cases, outputs):
    """Drive the combinational ``unit`` with each dict of ``cases`` ({port path: value}); read ``outputs``."""
    got = []

    async def bench(ctx):
        for case in cases:
            for path, value in case.items():
                ctx.set(_port(unit, path), value)
            got.append(tuple(ctx.get(_port(unit, o)) for o in outputs))

    sim = Simulator(unit)
    sim.add_testbench(bench)
    sim.run()
    return got


def _port(unit, path):
    obj = unit
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def simulate_chip(cfg: ChipConfig, words, max_cycles: int = 1_000_000) -> np.ndarray:
    """The output words of :class:`neurovm.hdl.chip.NeuroChip` in Amaranth's simulator, fed ``words``
    (always ready for output), run until the chip has been idle with no input left for 50 clocks."""
    from neurovm.hdl.chip import NeuroChip

    dut = NeuroChip(cfg)
    words = [int(w) & 0xFFFF_FFFF for w in words]
    out = []

    async def bench(ctx):
        i, quiet = 0, 0
        ctx.set(dut.out.ready, 1)
        for _ in range(max_cycles):
            ctx.set(dut.cmd.valid, i < len(words))
            ctx.set(dut.cmd.payload, words[i] if i < len(words) else 0)
            took = i < len(words) and ctx.get(dut.cmd.ready)
            if ctx.get(dut.out.valid):
                out.append(ctx.get(dut.out.payload))
            quiet = quiet + 1 if (i >= len(words) and ctx.get(dut.idle)) else 0
            await ctx.tick()
            i += int(took)
            if quiet > 50:
                return
        raise AssertionError(f"simulate_chip: not idle after {max_cycles} clocks ({i} of {len(words)} words taken)")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.asarray(out, dtype=np.uint32)


def assert_same_words(got, want, what):
    if not np.array_equal(got, want):
        n = min(len(got), len(want))
        i = next((j for j in range(n) if got[j] != want[j]), n)
        raise AssertionError(f"{what}: outputs differ at word {i} of {len(want)} (HDL {len(got)} words): "
                             f"got {[hex(x) for x in got[i:i + 4]]}, golden {[hex(x) for x in want[i:i + 4]]}")


# ---------------------------------------------------------------------------
# the arithmetic units
# ---------------------------------------------------------------------------
@pytest.mark.hdl
def test_trace_step_unit_equals_the_emulator():
    rng = np.random.default_rng(5)
    corners = itertools.product([0, 1, 64, 126, TRACE_MAX], [0, 1, 2048, 4094, 4095], [0, 1, 127], [0, 1])
    cases = [dict(z=z, decay=d, impulse=i, s=s) for z, d, i, s in corners]
    cases += [dict(z=int(rng.integers(0, 128)), decay=int(rng.integers(0, 4096)), impulse=int(rng.integers(0, 128)),
                   s=int(rng.integers(0, 2))) for _ in range(1500)]
    got = evaluate(TraceStep(), cases, ["z_next"])
    for case, (z_next,) in zip(cases, got):
        want = int(trace_step(np.int64(case["z"]), np.int64(case["decay"]), case["impulse"], case["s"]))
        assert z_next == want, case


@pytest.mark.hdl
@pytest.mark.parametrize("weight_bits", [2, 8])
def test_stdp_update_unit_equals_the_emulator(weight_bits):
    cfg = ChipConfig(weight_bits=weight_bits)
    rng = np.random.default_rng(weight_bits)
    rates, shifts, traces = [-128, -1, 0, 1, 127], [0, 1, 15], [0, 1, 127]
    cases = []
    for ap, am, sp, sm, xv, yv in itertools.product(rates, rates, shifts, shifts, traces, traces):
        if rng.random() < 0.25:
            cases.append(_stdp_case(rng, cfg, ap, am, sp, sm, xv, yv))
    cases += [_stdp_case(rng, cfg, *(int(rng.integers(lo, hi + 1)) for lo, hi in
                                     [(-128, 127), (-128, 127), (0, 15), (0, 15), (0, 127), (0, 127)]))
              for _ in range(1500)]
    got = evaluate(StdpUpdate(cfg), cases, ["w_next"])
    for case, (w_next,) in zip(cases, got):
        dw = stdp_dw(case["x"], case["x0"], case["y"], case["y0"], case["rule.a_plus"], case["rule.s_plus"],
                     case["rule.a_minus"], case["rule.s_minus"])
        assert w_next == min(cfg.weight_max, max(cfg.weight_min, case["w"] + int(dw))), case


def _stdp_case(rng, cfg, a_plus, a_minus, s_plus, s_minus, x, y):
    w = int(rng.choice([cfg.weight_min, cfg.weight_max, 0])) if rng.random() < 0.3 else \
        int(rng.integers(cfg.weight_min, cfg.weight_max + 1))
    return {"w": w, "x": x, "y": y, "x0": int(rng.integers(0, 2)), "y0": int(rng.integers(0, 2)),
            "rule.a_plus": a_plus, "rule.a_minus": a_minus, "rule.s_plus": s_plus, "rule.s_minus": s_minus,
            "rule.epoch_log2": 0, "rule.enable": 1}


def test_rule_register_has_every_learn_rule_field():
    from neurovm.formats import LEARN_REGIONS, LearnRegion

    fmt = LEARN_REGIONS[LearnRegion.LEARN_RULE].fmt
    assert set(RULE.members.keys()) == set(fmt.fields)
    for name, f in fmt.fields.items():
        assert RULE.members[name].width == f.width and RULE.members[name].signed == f.signed, name


# ---------------------------------------------------------------------------
# whole learning chips in Amaranth's simulator
# ---------------------------------------------------------------------------
@pytest.mark.hdl
@pytest.mark.parametrize("seed", range(3))
def test_learning_sessions_in_simulation_equal_the_emulator(seed):
    """The seeded sessions of tests/test_learning.py (random configs, rules, epochs 1-4, fixed bits, traces)."""
    cfg, words, *_ = learning_session(seed, steps=16)
    words = list(words) + readback(cfg)
    assert_same_words(simulate_chip(cfg, words), np.asarray(Chip(cfg).feed(words), dtype=np.uint32),
                      f"learning session {seed}")


@pytest.mark.hdl
def test_random_learning_workloads_in_simulation_equal_the_emulator():
    """randnet's learning mode: several VMs, gated RUNs (per-domain epochs), trace rewrites mid-run."""
    for seed in range(6):
        words = random_workload(np.random.default_rng(seed), RAND_CFG, steps=12, learning=True)
        assert_same_words(simulate_chip(RAND_CFG, words), np.asarray(Chip(RAND_CFG).feed(words), dtype=np.uint32),
                          f"randnet learning seed {seed}")


def test_random_learning_workloads_do_learn(monkeypatch):
    """Not vacuous: in randnet's learning mode the learning passes move weights and saturate them at both
    ends (counted around the emulator's pass, the model the HDL must equal)."""
    from neurovm.emulator.engine import Engine

    seen = {"moved": 0, "at_min": 0, "at_max": 0}
    original = Engine._learning_pass

    def counting_pass(self, passing):
        before = np.array(self.syn_wraw, copy=True)
        original(self, passing)
        after = np.asarray(self.syn_wraw)
        seen["moved"] += int(np.sum(after != before))
        seen["at_min"] += int(np.sum((after == RAND_CFG.weight_min) & (before != RAND_CFG.weight_min)))
        seen["at_max"] += int(np.sum((after == RAND_CFG.weight_max) & (before != RAND_CFG.weight_max)))

    monkeypatch.setattr(Engine, "_learning_pass", counting_pass)
    for seed in range(6):
        Chip(RAND_CFG).feed(random_workload(np.random.default_rng(seed), RAND_CFG, steps=12, learning=True))
    assert seen["moved"] > 20 and seen["at_min"] > 0 and seen["at_max"] > 0, seen


# ---------------------------------------------------------------------------
# the Verilator model of a learning chip (cosim tier)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def verilated():
    from neurovm.host.backend import EmulatorBackend
    from neurovm.host.verilator import VerilatorBackend

    vb = VerilatorBackend(RAND_CFG)
    yield vb, EmulatorBackend(RAND_CFG)   # both live across cases: stream indices keep counting on both
    vb.close()


@pytest.mark.cosim
def test_random_learning_chips_on_verilator_identical_to_emulator(verilated):
    vb, eb = verilated
    for seed in range(30):
        words = random_workload(np.random.default_rng(70_000 + seed), RAND_CFG, steps=16, learning=True)
        want = eb.exchange(words)
        assert_same_words(vb.exchange(words), want, f"learning cosim seed {70_000 + seed}")


@pytest.mark.cosim
def test_vm_learns_on_the_verilator_backend_like_on_the_emulator(verilated):
    """``VM.run(learn=True)`` through the runtime: same spikes and the same learned weights on both backends."""
    import networkx as nx

    from neurovm.host import protocol as P
    from neurovm.host.backend import EmulatorBackend
    from neurovm.host.runtime import Chip as HvChip
    from neurovm.image import LearningRule

    vb, _ = verilated
    g = nx.DiGraph()
    for i in range(4):
        g.add_node(f"in{i}", population="in", report=False)
    g.add_node("out", population="out", report=True, du=4095, dv=600, vth_mant=4, refract=1)
    for i in range(4):
        g.add_edge(f"in{i}", "out", weight=3)
    raster = np.random.default_rng(3).random((40, 4)) < 0.4
    results = []
    for backend in (vb, EmulatorBackend(RAND_CFG)):
        backend.exchange(P.encode_reset())   # the shared model still holds the last workload's MMU
        chip = HvChip(backend)
        vm = chip.create_vm("stdp")
        vm.load(g)
        vm.set_learning(LearningRule(a_plus=60, a_minus=50, s_plus=6, s_minus=6, x_impulse=100, y_impulse=100))
        res = vm.run(raster.shape[0], {"in": raster}, learn=True)
        results.append((res.step.tolist(), res.neuron.tolist(), {k: v.tolist() for k, v in vm.weights().items()}))
    assert results[0] == results[1]
    assert results[1][0], "the output neuron never spiked"
    assert any(w != 3 for ws in results[1][2].values() for w in ws), "no weight moved"


# ---------------------------------------------------------------------------
# lint: the learning core and chip under the waivers of hdl/lint.vlt (no new waiver)
# ---------------------------------------------------------------------------
LINT_BLOCKS = {
    "lif_core-learning": ("core", ChipConfig(learning=1)),
    "lif_core-learning-tiny": ("core", ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=1,
                                                  synapses_per_core=1, axons_per_core=1, fanout_per_core=1,
                                                  weight_bits=2, learning=1)),
    "chip_pins-learning": ("chip", RAND_CFG),
}


@pytest.mark.hdl
@pytest.mark.parametrize("name", list(LINT_BLOCKS))
def test_learning_hdl_is_lint_clean(name, tmp_path):
    import subprocess

    from neurovm.hdl.chip import ChipPins
    from neurovm.hdl.core import LifCore
    from neurovm.hdl.toolchain import export_verilog, verilator_env

    from .test_lint import WAIVERS

    kind, cfg = LINT_BLOCKS[name]
    top = "lif_core" if kind == "core" else "chip_pins"
    vfile, _ = export_verilog((LifCore if kind == "core" else ChipPins)(cfg), top, tmp_path / f"{top}.v")
    res = subprocess.run(["verilator", "--lint-only", "-Wall", str(WAIVERS), str(vfile)],
                         capture_output=True, text=True, env=verilator_env())
    warnings = [line for line in res.stderr.splitlines() if line.startswith("%")]
    assert res.returncode == 0 and not warnings, "\n".join(warnings[:30])


# ---------------------------------------------------------------------------
# cocotb: one learning core against the emulator (tests/cocotb/learn_tb.py)
# ---------------------------------------------------------------------------
LEARN_CORE = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=16, synapses_per_core=128,
                        axons_per_core=24, fanout_per_core=48, weight_bits=6, learning=1)


@pytest.mark.hdl
def test_learning_core_matches_golden_model_under_cocotb():
    from neurovm.hdl.core import LifCore

    from .hdl_runner import config_env, run_cocotb

    results = run_cocotb(LifCore(LEARN_CORE), "lif_core", "core_learn", "learn_tb",
                         config_env(LEARN_CORE) | {"NEUROVM_SEEDS": "0:24"}, run_name="learn")
    names = [r["name"] for r in results]
    assert any(n.startswith("random_learning_core") for n in names) and len(results) == 3, names
