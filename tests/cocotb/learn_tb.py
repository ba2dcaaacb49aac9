"""cocotb testbench of a learning :class:`neurovm.hdl.core.LifCore` (spec §24) against the emulator.

The agents, the chip-side glue and the golden model are those of ``core_tb.py`` (a 1x1
bare-metal chip); this bench adds what learning needs: the core's ``t_dom`` input (the
domain timestep of the step, for the epoch test), images with random rules (corners:
rates -128/127/0, shifts 0/15, decays 0/4095, impulses 0/127, epochs 1..8), ``fixed`` bits and
initial traces, fan-out looped back during the step (the mesh; foreign events during a step
are not modelled: see :func:`random_learning_case`), rule rewrites between steps (``enable`` toggling: ``pend`` must still be taken
by every step), and after every step the read-back of every SYN word, trace, flag and ``pend``
bit, besides the state words and counters that ``core_tb.check_state`` compares.

Run from pytest (``tests/test_learning_hdl.py``); NEUROVM_CFG (with ``learning = 1``) and
NEUROVM_SEEDS come from the environment.
"""

from __future__ import annotations

import cocotb
import numpy as np

from core_tb import CFG, SEEDS, CoreModel, CoreTestbench, check_state, image_words, load, random_train
from neurovm.formats import LEARN_REGIONS, SYN_LEARNING, LearnRegion, Region
from neurovm.image import CoreImage
from tests.randnet import random_learning_image, random_learning_rule

assert CFG.learning == 1, "the learning testbench needs a chip configuration with learning=1"
N, S, A = CFG.neurons_per_core, CFG.synapses_per_core, CFG.axons_per_core
LEARN_STATE = ((Region.SYN, S), (LearnRegion.PRE_TRACE, A), (LearnRegion.POST_TRACE, N),
               (LearnRegion.LEARN_CFG, 2), (LearnRegion.LEARN_RULE, 1))
#: What the random cases exercised (checked by ``random_learning_coverage``).
COVERAGE = {"passes": 0, "weights_moved": 0, "saturated_min": 0, "saturated_max": 0, "enable_off_steps": 0}


class LevelDriver:
    """Drives one input to a level, in the cycle loop's drive phase (the agents' protocol of agents.py)."""

    def __init__(self, sig):
        self.sig, self.value = sig, 0
        sig.value = 0

    def drive(self):
        self.sig.value = self.value

    def sample(self):
        pass


class LearnTestbench(CoreTestbench):
    """:class:`core_tb.CoreTestbench` that also drives ``t_dom`` (the step's domain timestep, low bits)."""

    def __init__(self, dut, *args, **kwargs):
        super().__init__(dut, *args, **kwargs)
        self.t_dom = self.loop.add(LevelDriver(dut.t_dom))

    async def step(self, pre, during, context: str):
        self.t_dom.value = (self.t + 1) & ((1 << len(self.dut.t_dom)) - 1)
        await super().step(pre, during, context)


async def check_learning_state(tb, model, context: str, before_syn=None):
    """Every learning word (SYN with ``fixed``, traces, flags, ``pend``, LEARN_CFG/RULE) equals the model's."""
    for region, size in LEARN_STATE:
        got, want = await tb.read(region, 0, size), model.read(region, 0, size)
        if got != want:
            bad = next(i for i in range(size) if got[i] != want[i])
            raise AssertionError(f"{context}: {region.name}[{bad}] = 0x{got[bad]:08x}, golden 0x{want[bad]:08x}")
        if region is Region.SYN and before_syn is not None:
            _count_weights(before_syn, want)
    await check_state(tb, model, context)


def _count_weights(before, after):
    w = SYN_LEARNING.fmt["weight"]
    b, a = w.get(np.array(before, dtype=np.int64)), w.get(np.array(after, dtype=np.int64))
    COVERAGE["weights_moved"] += int(np.sum(a != b))
    COVERAGE["saturated_min"] += int(np.sum((a == CFG.weight_min) & (b != CFG.weight_min)))
    COVERAGE["saturated_max"] += int(np.sum((a == CFG.weight_max) & (b != CFG.weight_max)))


def random_learning_case(seed: int):
    rng = np.random.default_rng(seed)
    img = random_learning_image(rng, CFG)
    words = image_words(img)
    steps = int(rng.integers(4, 12))
    # no foreign events during a step: core_tb's model injects them after the step, which is after the
    # learning pass, while a mesh delivery comes before it (§24.4 step 3).  Fan-out to vcore 0 still
    # loops back during the step, as the mesh delivers it, and the model delivers it the same way.
    trains = [(random_train(rng, CFG), []) for _ in range(steps)]
    rewrites = {i: random_learning_rule(rng).rule_word() for i in range(steps) if rng.random() < 0.15}
    return words, trains, rewrites


async def run_learning_case(tb, words, trains, rewrites, context: str):
    """Load, then per step: maybe a new LEARN_RULE, the step, and the whole learning state checked."""
    model = CoreModel(CFG)
    await tb.clear()
    tb.t = 0
    await load(tb, model, words)
    for i, (pre, during) in enumerate(trains):
        ctx = f"{context} step {i + 1}"
        if i in rewrites:
            model.write(LearnRegion.LEARN_RULE, 0, [rewrites[i]])
            await tb.write(LearnRegion.LEARN_RULE, 0, [rewrites[i]])
        rule = LEARN_REGIONS[LearnRegion.LEARN_RULE].fmt.unpack(model.read(LearnRegion.LEARN_RULE, 0, 1)[0])
        COVERAGE["enable_off_steps"] += int(not rule["enable"])
        COVERAGE["passes"] += int(rule["enable"] and (i + 1) % (1 << rule["epoch_log2"]) == 0)
        before = model.read(Region.SYN, 0, S)
        model.inject(pre)
        expected = model.step()
        model.inject(during)
        tb.board.expect(expected, ctx)
        await tb.step(pre, during, ctx)
        tb.board.check()
        await check_learning_state(tb, model, ctx, before)


@cocotb.test()
async def random_learning_core(dut):
    """Seeded random learning cores (NEUROVM_SEEDS) against the emulator, state checked every step."""
    tb = LearnTestbench(dut)
    await tb.reset()
    for seed in SEEDS:
        words, trains, rewrites = random_learning_case(seed)
        await run_learning_case(tb, words, trains, rewrites, f"seed {seed}")


@cocotb.test()
async def shared_entry_of_consecutive_axons(dut):
    """Every axon's list is the same entry 0 (lists overlap, §5): the pass updates it once per axon,
    in order, saturating each time -- the read of the next list must see the previous write.  dw = +1
    per axon (x = 127, a_plus = 1, s_plus = 6), so the first pass takes the weight from 0 to
    min(A, weight_max), and a stale read would lose increments."""
    from neurovm.image import LearningRule

    tb = LearnTestbench(dut)
    await tb.reset()
    img = CoreImage(syn_start=[0] * A, syn_len=[1] * A, target=[0], weight=[0], du=[4095] * N, dv=[4095] * N,
                    bias_mant=[1] + [0] * (N - 1), vth_mant=[0] * N, report=[1] * N,
                    pre_x=[127] * A, post_y=[127] * N)
    rule = LearningRule(a_plus=1, a_minus=1, s_plus=6, s_minus=15, epoch_log2=0, x_impulse=127, y_impulse=127)
    words = image_words(img.with_learning(rule))
    trains = [(list(range(A)), []) for _ in range(3)]
    await run_learning_case(tb, words, trains, {}, "shared entry")


@cocotb.test()
async def random_learning_coverage(dut):
    """Runs last: the random cases were not vacuous (passes, moves, saturation both ways, enable off)."""
    if len(SEEDS) < 20:
        return
    missing = [k for k, v in COVERAGE.items() if v == 0]
    assert not missing, f"never exercised: {missing} ({COVERAGE})"
