"""cocotb testbench of :class:`neurovm.hdl.core.LifCore` against the golden emulator.

The core is the only physical core of a 1x1 chip, bare-metal (hypervisor
domain).  The testbench plays the rest of that chip: it configures the core
through its configuration port, feeds axon events (before a step, as INJECT
would, and during the previous step, as the mesh would), loops fan-out items
addressed to vcore 0 back into the core (the mesh), turns the other fan-out
items into the UNMAPPED faults the chip would report, and closes each step.
The emulator (``neurovm.emulator.Chip`` of the same 1x1 configuration) sees
the equivalent command stream; the output words of every step, the state
(u, v, ref, acc) of every neuron after every step and counters 0..2 must match.

Run from pytest (``tests/test_core_hdl.py``); the configuration and seeds come
from the environment (NEUROVM_CFG, NEUROVM_SEEDS).
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from agents import CycleLoop, InOrderScoreboard, PulseDriver, StreamSink, StreamSource, random_pauses, value_of
from neurovm.config import HV_VM, U_MAX, U_MIN, V_MAX, V_MIN, ChipConfig
from neurovm.emulator import Chip
from neurovm.formats import (
    CFG_REQUEST,
    CORE_SPIKE,
    FANOUT_SOURCE,
    OUTPUT_FORMATS,
    REGIONS,
    CfgOp,
    FaultCause,
    FaultOrigin,
    OutType,
    Region,
)
from neurovm.hdl.core import CorePhase
from neurovm.host.protocol import encode_inject, encode_read, encode_read_counters, encode_run, encode_write
from neurovm.image import CoreImage
from tests.randnet import random_image

CFG = ChipConfig.from_dict(json.loads(os.environ.get("NEUROVM_CFG", "{}")))
assert CFG.num_cores == 1, "the core testbench models a 1x1 chip"
N, S, A, F = CFG.neurons_per_core, CFG.synapses_per_core, CFG.axons_per_core, CFG.fanout_per_core
_lo, _hi = (int(x) for x in os.environ.get("NEUROVM_SEEDS", "0:10").split(":"))
SEEDS = list(range(_lo, _hi))
STATE_REGIONS = (Region.STATE_U, Region.STATE_V, Region.STATE_REF, Region.ACC)
COUNTERS = ("syn_ops", "neuron_updates", "spikes_out")  # counters 0..2 of §9.1

_SPIKE = OUTPUT_FORMATS[OutType.SPIKE]
_FAULT = OUTPUT_FORMATS[OutType.FAULT]
_STEP_END = OUTPUT_FORMATS[OutType.STEP_END].pack(type=OutType.STEP_END)
_FAULT_HDR = _FAULT.pack(type=OutType.FAULT, vm=HV_VM, cause=FaultCause.UNMAPPED, origin=FaultOrigin.FANOUT)


class CoreModel:
    """The golden model of one core: a 1x1 emulator chip driven by host commands (bare-metal core 0)."""

    def __init__(self, config: ChipConfig):
        self.chip = Chip(config)

    def _feed(self, words, expect_output: bool):
        out = self.chip.feed(words)
        if not expect_output:
            assert out.size == 0, f"model rejected a command: {[hex(w) for w in out]}"
        return out.tolist()

    def write(self, region: Region, addr: int, words):
        self._feed(encode_write(HV_VM, 0, region, addr, words), False)

    def inject(self, axons):
        self._feed([w for a in axons for w in encode_inject(HV_VM, 0, int(a))], False)

    def step(self) -> list[int]:
        return self._feed(encode_run(1), True)

    def read(self, region: Region, addr: int, count: int) -> list[int]:
        return self._feed(encode_read(HV_VM, 0, region, addr, count), True)[1:]

    def counters(self) -> list[int]:
        return self._feed(encode_read_counters(HV_VM, 0, 0, len(COUNTERS)), True)[1:]


class CoreTestbench:
    """Agents around one LifCore plus the chip-side glue (loopback, fault words, step barrier)."""

    def __init__(self, dut, rng=None, gaps: float = 0.0, backpressure: float = 0.0):
        self.dut = dut
        rng = rng or np.random.default_rng(0)
        self.loop = CycleLoop(dut.clk)
        self.events = StreamSource(dut, "events", random_pauses(rng, gaps) if gaps else None)
        self.cfg = StreamSource(dut, "cfg")
        self.rdata = StreamSink(dut, "cfg_rdata")
        self.spikes = StreamSink(dut, "spikes", random_pauses(rng, backpressure) if backpressure else None,
                                 on_item=self._on_item)
        self.ctl = PulseDriver(dut, "start", "commit")
        # monitors sample before the event source, so a loop-back is queued in the cycle it arrives
        self.loop.add(self.spikes, self.rdata, self.events, self.cfg, self.ctl)
        self.board = InOrderScoreboard("core output", fmt=lambda w: f"0x{w:08x}")
        self.t = 0
        self.loopbacks = 0
        self.faults = 0
        self.reports = 0

    # ---------------------------------------------------------------- signals
    def phase(self) -> CorePhase:
        return CorePhase(value_of(self.dut.phase))

    def counters(self) -> list[int]:
        return [value_of(getattr(self.dut, n)) for n in COUNTERS]

    # ---------------------------------------------------------------- chip-side glue
    def _on_item(self, word: int):
        it = CORE_SPIKE.unpack(word)
        if it["report"]:
            self.reports += 1
            self.board.got(_SPIKE.pack(type=OutType.SPIKE, vm=HV_VM, vcore=0, neuron=it["neuron"]))
            self.board.got(self.t)
        elif it["vcore"] == 0:          # the mesh: back into this core, for the next step
            self.loopbacks += 1
            self.events.send(it["axon"])
        else:                            # a 1x1 bare-metal chip has no core `vcore`
            self.faults += 1
            self.board.got(_FAULT_HDR)
            self.board.got(word & 0xFF_FFFF)
            self.board.got(FANOUT_SOURCE.pack(vcore=0, neuron=it["neuron"]))

    # ---------------------------------------------------------------- procedures
    async def reset(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        self.loop.start()
        await self.loop.cycles(1)

    async def settle(self, what: str):
        """Wait until configuration requests are consumed and the core is back in IDLE."""
        await self.loop.wait_for(lambda: self.cfg.idle, f"{what}: requests consumed", 200_000)
        await self.loop.cycles(2)
        await self.loop.wait_for(lambda: self.phase() == CorePhase.IDLE, f"{what}: IDLE", 200_000)

    async def clear(self):
        self.cfg.send(CFG_REQUEST.pack(op=CfgOp.CLEAR, region=0, addr=0, data=0))
        await self.settle("CLEAR")

    async def write(self, region: Region, addr: int, words):
        self.cfg.extend(CFG_REQUEST.pack(op=CfgOp.WRITE, region=region, addr=addr + i, data=int(w))
                        for i, w in enumerate(words))
        await self.settle(f"WRITE {region.name}")

    async def read(self, region: Region, addr: int, count: int) -> list[int]:
        first = len(self.rdata.items)
        self.cfg.extend(CFG_REQUEST.pack(op=CfgOp.READ, region=region, addr=addr + i, data=0)
                        for i in range(count))
        await self.loop.wait_for(lambda: len(self.rdata.items) >= first + count, f"READ {region.name}")
        return self.rdata.items[first:first + count]

    async def step(self, pre, during, context: str):
        """One timestep: ``pre`` events arrive before it (INJECT), ``during`` while it runs (mesh)."""
        self.t += 1
        self.events.extend(pre)
        await self.loop.wait_for(lambda: self.events.idle and value_of(self.dut.syn_idle)
                                 and self.phase() == CorePhase.IDLE, f"{context}: pre-step events")
        self.ctl.pulse("start")
        await self.loop.wait_for(lambda: self.phase() == CorePhase.RUN, f"{context}: RUN")
        self.events.extend(during)
        await self.loop.wait_for(lambda: value_of(self.dut.done) and self.events.idle
                                 and value_of(self.dut.syn_idle), f"{context}: step done", 400_000)
        self.ctl.pulse("commit")
        await self.loop.wait_for(lambda: self.phase() == CorePhase.IDLE, f"{context}: commit")
        self.board.got(_STEP_END)
        self.board.got(self.t)


# -------------------------------------------------------------------- stimulus
def random_state(rng, cfg: ChipConfig) -> dict[Region, list[int]]:
    """Full-range initial u, v, ref, acc (corners included) as memory words."""
    n = cfg.neurons_per_core

    def pick(lo, hi):
        corners = np.array([lo, hi, 0, -1, 1, lo + 1, hi - 1])
        vals = rng.integers(lo, hi + 1, size=n)
        small = rng.integers(-3000, 3000, size=n)
        r = rng.random(n)
        return np.where(r < 0.15, rng.choice(corners, size=n), np.where(r < 0.6, small, vals))

    words = {
        Region.STATE_U: pick(U_MIN, U_MAX), Region.STATE_V: pick(V_MIN, V_MAX),
        Region.STATE_REF: rng.integers(0, 4, size=n) * (rng.random(n) < 0.3), Region.ACC: pick(U_MIN, U_MAX),
    }
    return {r: [int(x) & 0xFFFF_FFFF for x in w] for r, w in words.items()}


def random_train(rng, cfg: ChipConfig) -> list[int]:
    """Axon events for one step: none, a few, or a saturating burst."""
    r = rng.random()
    k = 0 if r < 0.15 else int(rng.integers(1, 6)) if r < 0.7 else int(rng.integers(cfg.axons_per_core,
                                                                                   3 * cfg.axons_per_core + 1))
    return rng.integers(0, cfg.axons_per_core, size=k).tolist()


async def load(tb: CoreTestbench, model: CoreModel, words: dict[Region, list[int]]):
    """Write the same words into the core and the model (CORE_CFG last: it folds ACC)."""
    for region in sorted(words, key=lambda r: (r == Region.CORE_CFG, r)):
        w = [int(x) for x in words[region]]
        if w:
            model.write(region, 0, w)
            await tb.write(region, 0, w)


async def check_state(tb: CoreTestbench, model: CoreModel, context: str):
    for region in STATE_REGIONS:
        got = await tb.read(region, 0, N)
        want = model.read(region, 0, N)
        if got != want:
            bad = next(i for i in range(N) if got[i] != want[i])
            raise AssertionError(f"{context}: {region.name}[{bad}] = 0x{got[bad]:08x}, golden 0x{want[bad]:08x}")
    got, want = tb.counters(), model.counters()
    assert got == want, f"{context}: counters {dict(zip(COUNTERS, got))}, golden {dict(zip(COUNTERS, want))}"


async def run_case(tb: CoreTestbench, words, trains, context: str, state_every: int = 1):
    """Load ``words``; run one step per ``(pre, during)`` in ``trains``; check everything.

    Returns the per-step expected outputs (for directed assertions).
    """
    model = CoreModel(CFG)
    await tb.clear()
    tb.t = 0
    await load(tb, model, words)
    outputs = []
    for i, (pre, during) in enumerate(trains):
        ctx = f"{context} step {i + 1}"
        model.inject(pre)
        expected = model.step()
        model.inject(during)
        outputs.append(expected)
        tb.board.expect(expected, ctx)
        await tb.step(pre, during, ctx)
        tb.board.check()
        if state_every and (i + 1) % state_every == 0:
            await check_state(tb, model, ctx)
    return outputs


def image_words(img: CoreImage, state=None) -> dict[Region, list[int]]:
    words = {r: list(map(int, w)) for r, w in img.region_words(CFG).items()}
    if state:
        words.update(state)
    return words


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    img = random_image(rng, CFG)
    words = image_words(img, random_state(rng, CFG) if rng.random() < 0.7 else None)
    steps = int(rng.integers(3, 9))
    trains = [(random_train(rng, CFG), random_train(rng, CFG) if rng.random() < 0.6 else [])
              for _ in range(steps)]
    return rng, words, trains


# -------------------------------------------------------------------- tests
@cocotb.test()
@cocotb.parametrize(seed=SEEDS)
async def random_core(dut, seed):
    """A seeded random core (image, state, input trains, stalls) against the golden model."""
    rng, words, trains = random_case(seed)
    gaps = float(rng.choice([0.0, 0.3, 0.7]))
    bp = float(rng.choice([0.0, 0.3, 0.8]))
    tb = CoreTestbench(dut, rng, gaps=gaps, backpressure=bp)
    await tb.reset()
    await run_case(tb, words, trains, f"seed {seed} (gaps {gaps}, backpressure {bp})")
