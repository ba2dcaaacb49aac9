"""The host interface: parses the 32-bit command stream (docs/architecture.md §8)
and produces the output stream, driving the MMU, the cores and the step barrier.

One command at a time, strictly in order (a RUN finishes before the next
command starts).  Checks run in the order of §8.3; the first failure emits
exactly one ERROR or FAULT message and the rest of the command (its declared
length) is skipped, so framing is kept and the next command works.

RUN executes each step as: wait until every core is IDLE, pulse ``start``,
then drain the cores' output items **in physical-core order** (core 0 until it
is done, then core 1, ...): a report item becomes a SPIKE message, a fan-out
item is translated by the MMU into an AER packet for the mesh or a fan-out
FAULT message.  Draining one core at a time gives the canonical output order
of §6.3 without any reordering buffer, and cannot deadlock: a waiting core's
items sit in its spike FIFO (depth N) while its inputs keep flowing.  When
every core is done, the mesh is empty (packets in == packets out) and every
synapse pipeline is idle, the interface pulses ``commit`` and emits STEP_END.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from neurovm.config import HV_VM, MAX_COMMAND_WORDS, ChipConfig
from neurovm.formats import (
    AER_PACKET,
    CFG_REQUEST,
    COMMAND_FORMATS,
    COUNTER_BITS,
    FANOUT_SOURCE,
    MMU_ENTRY,
    NUM_COUNTERS,
    OUTPUT_FORMATS,
    REGIONS,
    WORD_BITS,
    CfgOp,
    Counter,
    ErrorCode,
    FaultCause,
    FaultOrigin,
    GUEST_COUNTERS,
    Opcode,
    OutType,
    Perm,
    Region,
    WordFormat,
    region_specs,
)

from .core import CorePhase
from .learning import EPOCH_T_BITS
from .layouts import COMMAND_LAYOUTS, CORE_COUNTERS, CORE_COUNTERS_LAYOUT, LINK_LAYOUTS, MMU_ENTRY_LAYOUT, counter_port

__all__ = ["HostInterface", "pack_word", "region_word_bad"]

_PRIVILEGED = (Opcode.RUN, Opcode.MMU_MAP, Opcode.RESET)
#: Width of a region address: the address word of READ/WRITE, the core's ``CFG_REQUEST.addr``.
REGION_ADDR_BITS = CFG_REQUEST["addr"].width
#: The longest message staged before it is sent (ERROR and FAULT: a header and two words).
MAX_MESSAGE_WORDS = 3


class _Ret(enum.IntEnum):
    """Where state EMIT goes once the staged message is out."""

    HDR = 0
    SKIP = 1
    WDATA = 2
    DRAIN = 3
    STEP_DONE = 4


def pack_word(fmt: WordFormat, **fields) -> Value:
    """An Amaranth expression for ``fmt.pack(**fields)`` (values are truncated to their fields)."""
    word = Const(0, fmt.bits)
    for name, v in fields.items():
        f = fmt[name]
        word = word | (Value.cast(v).as_unsigned()[:f.width] << f.lsb)
    return word[:fmt.bits]


def region_word_bad(config: ChipConfig, region: Region, word: Value) -> Value:
    """True if ``word`` is not a legal memory word of ``region`` (§5; §8.3 check 10)."""
    spec = region_specs(config)[region]
    bad = (word & spec.fmt.reserved_mask) != 0
    vals = {}
    for name, f in spec.fmt.fields.items():
        v = word[f.lsb:f.lsb + f.width]
        vals[name] = v.as_signed() if f.signed else v
        lo, hi = spec.bounds(config)[name]
        if lo > f.min:
            bad = bad | (vals[name] < lo)
        if hi < f.max:
            bad = bad | (vals[name] > hi)
    if spec.extent is not None:
        s, n, size_attr = spec.extent
        bad = bad | ((vals[s] + vals[n]) > getattr(config, size_attr))
    return bad


class _Ctx:
    """The signals the stages of :meth:`HostInterface.elaborate` share (one namespace, named once)."""


class HostInterface(wiring.Component):
    """Command parser and executor of one NeuroVM chip.

    Parameters
    ----------
    config : ChipConfig

    The core-side ports are arrays indexed by physical core; ``mmu`` is the
    flipped port set of :class:`~neurovm.hdl.mmu.VirtMMU`.

    ``elaborate`` is staged: the message stage (staging of up to three output
    words), the header decode (every field through the generated command
    layouts, the §8.3 checks 1-6 as signals), host translation (checks 7 and 9),
    the chip-level counters and the mesh accounting, the core links, then one
    FSM whose states are grouped by command family (parse, memory access,
    reset/counters, RUN, output/skip).
    """

    def __init__(self, config: ChipConfig, mmu_signature):
        self.config = config
        C = config.num_cores
        cb = max(1, (C - 1).bit_length())
        self.core_bits = cb
        super().__init__({
            "cmd": In(stream.Signature(WORD_BITS)),
            "out": Out(stream.Signature(WORD_BITS)),
            "mmu": In(mmu_signature),
            "cfg": Out(stream.Signature(LINK_LAYOUTS["CFG_REQUEST"])).array(C),
            "cfg_rdata": In(stream.Signature(WORD_BITS)).array(C),
            "inject": Out(stream.Signature(LINK_LAYOUTS["AXON_EVENT"])).array(C),
            "spikes": In(stream.Signature(LINK_LAYOUTS["CORE_SPIKE"])).array(C),
            "start": Out(C), "commit": Out(1),   # start: one bit per core (only stepping cores, §6.1)
            "phase": In(CorePhase).array(C), "done": In(1).array(C), "syn_idle": In(1).array(C),
            "core_counters": In(CORE_COUNTERS_LAYOUT).array(C),
            "mesh_in": Out(stream.Signature(LINK_LAYOUTS["AER_PACKET"])).array(C),
            "mesh_delivered": In(C),      # local_out transfers this clock, one bit per core
            "packets_routed": In(COUNTER_BITS).array(C),
            "mesh_clear": Out(C),
            "timestep": Out(WORD_BITS),
            "idle": Out(1),
            "at_boundary": Out(1),
            # learning chips (§24.5): the low bits of each core's domain timestep T[d], for the epoch test
            **({"core_t": Out(EPOCH_T_BITS).array(C)} if config.learning else {}),
        })

    # ================================================================== elaborate
    def elaborate(self, platform):
        m = Module()
        x = _Ctx()
        self._message_stage(m, x)
        self._command_registers(m, x)
        self._header_decode(m, x)
        self._host_translation(m, x)
        self._chip_counters(m, x)
        self._core_links(m, x)
        self._core_timesteps(m, x)
        with m.FSM() as fsm:
            # nothing to do until more command words arrive (between commands, or inside one)
            m.d.comb += self.at_boundary.eq(fsm.ongoing("HDR"))
            m.d.comb += self.idle.eq(fsm.ongoing("HDR") | fsm.ongoing("WORD2")
                                     | ((fsm.ongoing("WDATA") | fsm.ongoing("SKIP")) & (x.skip != 0)))
            self._parse_states(m, x)
            self._access_states(m, x)
            self._reset_and_counter_states(m, x)
            self._run_states(m, x)
            self._output_states(m, x)
            # named once elaborated, for the invariants of the induction proof (neurovm.hdl.formal):
            # each state's "ongoing" flag, and the registers the stages share
            self.in_state = {name: fsm.ongoing(name) for name in list(fsm.encoding)}
        self.registers = x
        return m

    # ------------------------------------------------------------------ stages
    def _message_stage(self, m, x):
        """Up to three words of one message are staged, then sent one per clock by state EMIT."""
        x.msg = Array(Signal(WORD_BITS, name=f"msg{i}") for i in range(MAX_MESSAGE_WORDS))
        x.msg_n = Signal(range(MAX_MESSAGE_WORDS + 1))
        x.msg_i = Signal(range(MAX_MESSAGE_WORDS + 1))
        x.ret = Signal(range(len(_Ret)))   # where EMIT returns to
        x.out_valid = Signal()
        x.out_word = Signal(WORD_BITS)
        m.d.comb += [self.out.valid.eq(x.out_valid), self.out.payload.eq(x.out_word)]
        x.out_ok = self.out.ready

    def _emit(self, m, x, words, to: "_Ret"):
        for i, w in enumerate(words):
            m.d.sync += x.msg[i].eq(w)
        m.d.sync += [x.msg_n.eq(len(words)), x.msg_i.eq(0), x.ret.eq(to)]
        m.next = "EMIT"

    def _error(self, m, x, code, word, index, to, detail=0):
        self._emit(m, x, [pack_word(OUTPUT_FORMATS[OutType.ERROR], type=OutType.ERROR, code=code, detail=detail),
                          word, index], to)

    def _fault(self, m, x, cause, vm, word, index, to):
        self._emit(m, x, [pack_word(OUTPUT_FORMATS[OutType.FAULT], type=OutType.FAULT, vm=vm, cause=cause,
                                    origin=FaultOrigin.HOST), word, index], to)

    def _command_registers(self, m, x):
        """The command being executed, the input stream index, and the per-command counters."""
        c = self.config
        x.sidx = Signal(WORD_BITS)           # stream index of the next input word (§8.3)
        x.hdr = Signal(WORD_BITS)
        x.hdr_idx = Signal(WORD_BITS)
        x.skip = Signal(range(MAX_COMMAND_WORDS))   # words of the current command still to be dropped
        x.addr = Signal(REGION_ADDR_BITS)
        x.word2 = Signal(WORD_BITS)          # the second word (READ/WRITE address, MMU_MAP entry)
        x.k = Signal(range(MAX_COMMAND_WORDS))    # data word / request counter
        x.k2 = Signal(range(MAX_COMMAND_WORDS))   # response counter
        x.pcore = Signal(self.core_bits)
        x.steps_left = Signal(COMMAND_FORMATS[Opcode.RUN]["steps"].width)
        x.timestep = Signal(WORD_BITS)       # T: every executed step (STEP_END)
        m.d.comb += self.timestep.eq(x.timestep)
        # T[d] per domain (§6.1): guest VMs 0..max_vms-1, then the bare-metal cores (HV_VM) last
        x.domains = list(range(c.max_vms)) + [HV_VM]
        x.t_dom = Array(Signal(WORD_BITS, name=f"t_dom_{d}") for d in x.domains)
        x.run_domains = Signal(COMMAND_FORMATS[Opcode.RUN]["domains"].width)   # the RUN's domain set
        x.stepping = Signal(c.num_cores)     # cores whose domain the RUN names
        x.pending = Signal(c.num_cores)      # cores that have not yet accepted a broadcast CLEAR
        x.word_in = self.cmd.payload
        x.take_word = Signal()
        m.d.comb += self.cmd.ready.eq(x.take_word)
        with m.If(self.cmd.valid & x.take_word):
            m.d.sync += x.sidx.eq(x.sidx + 1)

    def _header_decode(self, m, x):
        """Every header field through the command layouts; §8.3 checks 1-6 and the payload length."""
        c = self.config
        h = {op: data.View(COMMAND_LAYOUTS[op], x.hdr) for op in Opcode}
        x.op = h[Opcode.NOP].op
        x.f_vm = h[Opcode.WRITE].vm
        x.f_vcore = h[Opcode.WRITE].vcore
        x.f_region = h[Opcode.WRITE].region
        x.f_count = h[Opcode.WRITE].count
        x.f_axon = h[Opcode.INJECT].axon
        x.f_steps = h[Opcode.RUN].steps
        x.f_domains = h[Opcode.RUN].domains
        x.f_first = h[Opcode.READ_COUNTERS].first
        x.f_ccount = h[Opcode.READ_COUNTERS].count
        x.f_scope = h[Opcode.RESET].scope
        x.f_pcore = h[Opcode.RESET].pcore
        x.f_tag = h[Opcode.SYNC].tag

        # payload length after the header, taken from the header even when malformed (§8.1)
        x.payload = Signal(range(MAX_COMMAND_WORDS))
        with m.Switch(x.op):
            with m.Case(Opcode.WRITE):
                m.d.comb += x.payload.eq(1 + x.f_count)
            with m.Case(Opcode.READ, Opcode.MMU_MAP):
                m.d.comb += x.payload.eq(1)

        x.reserved = Signal()
        with m.Switch(x.op):
            for o, fmt in COMMAND_FORMATS.items():
                with m.Case(o):
                    cond = (x.hdr & fmt.reserved_mask) != 0
                    if o == Opcode.RESET:
                        cond = cond | (~x.f_scope & (x.f_pcore != 0))
                    m.d.comb += x.reserved.eq(cond)
        x.known = Signal()
        m.d.comb += x.known.eq(Cat(x.op == o for o in Opcode).any())
        has_vm = ~((x.op == Opcode.NOP) | (x.op == Opcode.SYNC))
        x.bad_vm = has_vm & (x.f_vm != HV_VM) & (x.f_vm >= c.max_vms)
        x.privileged = Cat(x.op == o for o in _PRIVILEGED).any()
        x.is_hv = x.f_vm == HV_VM
        # region sizes for the address check
        specs = region_specs(c)   # a learning chip has the regions 12-15 too (§24.1)
        x.sizes = Array(Const(specs[r].size(c), REGION_ADDR_BITS + 1) if r in specs.keys()
                        else Const(0, REGION_ADDR_BITS + 1) for r in range(1 << x.f_region.shape().width))
        every_id = max(specs.keys()) == (1 << x.f_region.shape().width) - 1   # a learning chip has all 16
        x.region_ok = Const(1) if every_id else x.f_region <= max(specs.keys())

    def _host_translation(self, m, x):
        """(vm, vcore) of host commands through the MMU (§7.2): checks 7 (hypervisor core) and 9."""
        mmu, C = self.mmu, self.config.num_cores
        m.d.comb += [mmu.h_vm.eq(x.f_vm), mmu.h_vcore.eq(x.f_vcore)]
        need = Signal(len(Perm))
        with m.Switch(x.op):
            with m.Case(Opcode.WRITE):
                m.d.comb += need.eq(Perm.W)
            with m.Case(Opcode.READ, Opcode.READ_COUNTERS):
                m.d.comb += need.eq(Perm.R)
            with m.Case(Opcode.INJECT):
                m.d.comb += need.eq(Perm.S)
        x.hv_bad_core = x.is_hv & (x.f_vcore >= C)
        x.guest_unmapped = ~x.is_hv & ~mmu.h_mapped
        hv_counters = (x.op == Opcode.READ_COUNTERS) & (x.f_first + x.f_ccount > GUEST_COUNTERS)   # §9.1
        x.guest_denied = ~x.is_hv & mmu.h_mapped & (~(mmu.h_perms & need).any() | hv_counters)
        x.resolved = Mux(x.is_hv, x.f_vcore[:self.core_bits], mmu.h_pcore)

    def _resolve(self, m, x, then: str):
        """Checks 7 and 9 on the current command; else latch its physical core and go to ``then``."""
        with m.If(x.hv_bad_core):
            self._error(m, x, ErrorCode.BAD_ADDRESS, x.hdr, x.hdr_idx, _Ret.SKIP)
        with m.Elif(x.guest_unmapped):
            self._fault(m, x, FaultCause.UNMAPPED, x.f_vm, x.hdr, x.hdr_idx, _Ret.SKIP)
        with m.Elif(x.guest_denied):
            self._fault(m, x, FaultCause.PERMISSION, x.f_vm, x.hdr, x.hdr_idx, _Ret.SKIP)
        with m.Else():
            m.d.sync += x.pcore.eq(x.resolved)
            m.next = then

    def _chip_counters(self, m, x):
        """Counters 3-5 per core (the host interface counts the packets it pushes) and the mesh accounting."""
        c = self.config
        C = c.num_cores
        x.sent = Array(Signal(COUNTER_BITS, name=f"packets_sent_{p}") for p in range(C))
        x.hopx = Array(Signal(COUNTER_BITS, name=f"hops_x_{p}") for p in range(C))
        x.hopy = Array(Signal(COUNTER_BITS, name=f"hops_y_{p}") for p in range(C))
        x.xs = Array(Const(c.core_xy(p)[0], AER_PACKET["dst_x"].width) for p in range(C))
        x.ys = Array(Const(c.core_xy(p)[1], AER_PACKET["dst_y"].width) for p in range(C))
        # packets in the mesh, for the step barrier
        x.in_flight = Signal(WORD_BITS)
        x.pushed = Signal()
        delivered = Signal(range(C + 1))
        m.d.comb += delivered.eq(sum(self.mesh_delivered[p] for p in range(C)))
        m.d.sync += x.in_flight.eq(x.in_flight + x.pushed - delivered)
        # READ_COUNTERS: counter i of core p, in the order of formats.Counter
        x.counter_of = []
        for p in range(C):
            core = self.core_counters[p]
            by_counter = {Counter.PACKETS_SENT: x.sent[p], Counter.HOPS_X: x.hopx[p], Counter.HOPS_Y: x.hopy[p],
                          Counter.PACKETS_ROUTED: self.packets_routed[p]}
            by_counter.update({cn: getattr(core, counter_port(cn)) for cn in CORE_COUNTERS})
            x.counter_of.append(Array(by_counter[cn] for cn in Counter))

    def _clear_chip_counters(self, m, x, cores):
        """RESET: zero counters 3-5 of ``cores`` (an iterable of core indices or one index Value)."""
        for p in cores:
            m.d.sync += [x.sent[p].eq(0), x.hopx[p].eq(0), x.hopy[p].eq(0)]

    def _core_links(self, m, x):
        """Per-core stream ports as arrays indexed by the current physical core, and the WRITE word check."""
        c = self.config
        C = c.num_cores
        x.all_idle = Cat(self.phase[p] == CorePhase.IDLE for p in range(C)).all()
        x.stepping_in_run = Cat((self.phase[p] == CorePhase.RUN) | ~x.stepping[p] for p in range(C)).all()
        x.all_syn_idle = Cat(self.syn_idle[p] for p in range(C)).all()
        # the item being handled in a RUN, translated by the MMU (§7.3)
        x.item = Signal(LINK_LAYOUTS["CORE_SPIKE"])
        m.d.comb += [self.mmu.f_src.eq(x.pcore), self.mmu.f_vcore.eq(x.item.vcore)]
        x.dest = Signal(self.core_bits)
        # MMU_MAP entry
        x.entry = data.View(MMU_ENTRY_LAYOUT, x.word2)
        m.d.comb += self.mmu.map_entry.eq(x.word2)
        # WRITE data word check (§8.3 check 10)
        x.bad_field = Signal()
        with m.Switch(x.f_region):
            for r in region_specs(c):
                with m.Case(r):
                    m.d.comb += x.bad_field.eq(region_word_bad(c, r, x.word_in))
        x.cfg_req = Signal(LINK_LAYOUTS["CFG_REQUEST"])
        x.cfg_valid = Signal(C)
        for p in range(C):
            m.d.comb += [self.cfg[p].payload.eq(x.cfg_req), self.cfg[p].valid.eq(x.cfg_valid[p])]
        x.cfg_ready = Array(self.cfg[p].ready for p in range(C))
        x.rdata_valid = Array(self.cfg_rdata[p].valid for p in range(C))
        x.rdata = Array(self.cfg_rdata[p].payload for p in range(C))
        x.spk_valid = Array(self.spikes[p].valid for p in range(C))
        x.spk_payload = Array(self.spikes[p].payload.as_value() for p in range(C))
        x.done = Array(self.done[p] for p in range(C))

    # ------------------------------------------------------------------ FSM: parse
    def _parse_states(self, m, x):
        """HDR (take a header) and DECODE (§8.3 checks 1-6, then dispatch by opcode)."""
        with m.State("HDR"):
            m.d.comb += x.take_word.eq(1)
            with m.If(self.cmd.valid):
                m.d.sync += [x.hdr.eq(x.word_in), x.hdr_idx.eq(x.sidx)]
                m.next = "DECODE"

        with m.State("DECODE"):
            m.d.sync += x.skip.eq(x.payload)
            with m.If(~x.known):
                self._error(m, x, ErrorCode.UNKNOWN_OPCODE, x.hdr, x.hdr_idx, _Ret.HDR)
                m.d.sync += x.skip.eq(0)
            with m.Elif(x.reserved):
                self._error(m, x, ErrorCode.RESERVED_BITS, x.hdr, x.hdr_idx, _Ret.SKIP)
            with m.Elif(x.bad_vm):
                self._error(m, x, ErrorCode.BAD_VM, x.hdr, x.hdr_idx, _Ret.SKIP)
            with m.Elif(x.privileged & ~x.is_hv):
                self._fault(m, x, FaultCause.PRIVILEGE, x.f_vm, x.hdr, x.hdr_idx, _Ret.SKIP)
            with m.Else():
                self._dispatch(m, x)

    def _dispatch(self, m, x):
        """A well-formed header: the opcode's own checks (5-7), then its first state."""
        c = self.config
        with m.Switch(x.op):
            with m.Case(Opcode.NOP):
                m.next = "HDR"
            with m.Case(Opcode.SYNC):
                self._emit(m, x, [pack_word(OUTPUT_FORMATS[OutType.SYNC_ACK], type=OutType.SYNC_ACK,
                                            tag=x.f_tag)], _Ret.HDR)
            with m.Case(Opcode.RUN):
                with m.If((x.f_steps == 0) | (x.f_domains == 0)):
                    self._error(m, x, ErrorCode.BAD_LENGTH, x.hdr, x.hdr_idx, _Ret.HDR)
                with m.Else():
                    C = c.num_cores
                    m.d.sync += [x.steps_left.eq(x.f_steps), x.run_domains.eq(x.f_domains),
                                 x.stepping.eq(Cat(Array(x.f_domains)[self.mmu.core_dom[p]] for p in range(C)))]
                    m.next = "STEP_START"
            with m.Case(Opcode.READ_COUNTERS):
                with m.If((x.f_ccount == 0) | (x.f_first + x.f_ccount > NUM_COUNTERS)):
                    self._error(m, x, ErrorCode.BAD_LENGTH, x.hdr, x.hdr_idx, _Ret.HDR)
                with m.Else():
                    self._resolve(m, x, "COUNTERS_HDR")
            with m.Case(Opcode.INJECT):
                with m.If(x.f_axon >= c.axons_per_core):
                    self._error(m, x, ErrorCode.BAD_ADDRESS, x.hdr, x.hdr_idx, _Ret.HDR)
                with m.Else():
                    self._resolve(m, x, "INJECT")
            with m.Case(Opcode.RESET):
                self._dispatch_reset(m, x)
            with m.Case(Opcode.WRITE, Opcode.READ):
                with m.If(x.f_count == 0):
                    self._error(m, x, ErrorCode.BAD_LENGTH, x.hdr, x.hdr_idx, _Ret.SKIP)
                with m.Elif(~x.region_ok):
                    self._error(m, x, ErrorCode.BAD_REGION, x.hdr, x.hdr_idx, _Ret.SKIP)
                with m.Else():
                    m.next = "WORD2"
            with m.Case(Opcode.MMU_MAP):
                m.next = "WORD2"

    def _dispatch_reset(self, m, x):
        """RESET chip (everything, MMU and T included) or RESET core p (its memories and counters)."""
        C, cb = self.config.num_cores, self.core_bits
        all_cores = (1 << C) - 1
        with m.If(~x.f_scope):
            m.d.sync += [x.pending.eq(all_cores), x.timestep.eq(0)]
            m.d.sync += [t.eq(0) for t in x.t_dom]
            self._clear_chip_counters(m, x, range(C))
            m.d.comb += [self.mmu.reset.eq(1), self.mesh_clear.eq(all_cores)]
            m.next = "CLEAR"
        with m.Elif(x.f_pcore >= C):
            self._error(m, x, ErrorCode.BAD_ADDRESS, x.hdr, x.hdr_idx, _Ret.HDR)
        with m.Else():
            target = x.f_pcore[:cb]
            m.d.sync += x.pending.eq(1 << target)
            self._clear_chip_counters(m, x, [target])
            m.d.comb += self.mesh_clear.eq(1 << target)
            m.next = "CLEAR"

    # ------------------------------------------------------------------ FSM: memory access
    def _access_states(self, m, x):
        """WORD2/CHECK2 (address or MMU entry, checks 7-9), READ, WRITE data (check 10), INJECT."""
        c = self.config
        C = c.num_cores
        with m.State("WORD2"):   # the address word of READ/WRITE, the entry of MMU_MAP
            m.d.comb += x.take_word.eq(1)
            with m.If(self.cmd.valid):
                m.d.sync += [x.word2.eq(x.word_in), x.addr.eq(x.word_in[:REGION_ADDR_BITS]), x.skip.eq(x.skip - 1),
                             x.k.eq(0), x.k2.eq(0)]
                m.next = "CHECK2"

        with m.State("CHECK2"):
            w2_idx = x.hdr_idx + 1
            with m.If(x.op == Opcode.MMU_MAP):
                self._check_map_entry(m, x, w2_idx)
            with m.Else():
                size = x.sizes[x.f_region]
                with m.If((x.word2 >= size) | (x.word2 + x.f_count > size)):
                    self._error(m, x, ErrorCode.BAD_ADDRESS, x.word2, w2_idx, _Ret.SKIP)
                with m.Else():
                    self._resolve(m, x, "ACCESS")

        with m.State("ACCESS"):
            with m.If(x.op == Opcode.WRITE):
                m.next = "WDATA"
            with m.Else():   # READ_DATA header, then the words as they come
                m.d.comb += [x.out_valid.eq(1), x.out_word.eq(pack_word(
                    OUTPUT_FORMATS[OutType.READ_DATA], type=OutType.READ_DATA, count=x.f_count))]
                with m.If(x.out_ok):
                    m.next = "RDATA"

        with m.State("RDATA"):
            m.d.comb += x.cfg_req.eq(pack_word(CFG_REQUEST, op=CfgOp.READ, region=x.f_region, addr=x.addr + x.k))
            with m.If(x.k < x.f_count):
                m.d.comb += x.cfg_valid.eq(1 << x.pcore)
                with m.If(x.cfg_ready[x.pcore]):
                    m.d.sync += x.k.eq(x.k + 1)
            m.d.comb += [x.out_valid.eq(x.rdata_valid[x.pcore]), x.out_word.eq(x.rdata[x.pcore])]
            for p in range(C):
                m.d.comb += self.cfg_rdata[p].ready.eq((x.pcore == p) & x.out_ok)
            with m.If(x.rdata_valid[x.pcore] & x.out_ok):
                m.d.sync += x.k2.eq(x.k2 + 1)
                with m.If(x.k2 + 1 == x.f_count):
                    m.next = "HDR"

        with m.State("WDATA"):
            with m.If(x.skip == 0):
                m.next = "HDR"
            with m.Elif(self.cmd.valid):
                with m.If(x.bad_field):
                    m.d.comb += x.take_word.eq(1)
                    m.d.sync += [x.skip.eq(x.skip - 1), x.k.eq(x.k + 1)]
                    self._error(m, x, ErrorCode.BAD_FIELD, x.word_in, x.sidx, _Ret.WDATA, detail=x.addr + x.k)
                with m.Else():
                    m.d.comb += [x.cfg_req.eq(pack_word(CFG_REQUEST, op=CfgOp.WRITE, region=x.f_region,
                                                        addr=x.addr + x.k, data=x.word_in)),
                                 x.cfg_valid.eq(1 << x.pcore)]
                    with m.If(x.cfg_ready[x.pcore]):
                        m.d.comb += x.take_word.eq(1)
                        m.d.sync += [x.skip.eq(x.skip - 1), x.k.eq(x.k + 1)]

        with m.State("INJECT"):
            for p in range(C):
                m.d.comb += [self.inject[p].payload.axon.eq(x.f_axon), self.inject[p].valid.eq(x.pcore == p)]
            with m.If(Array(self.inject[p].ready for p in range(C))[x.pcore]):
                m.next = "HDR"

    def _check_map_entry(self, m, x, w2_idx):
        """MMU_MAP entry word: §8.3 check 8 (reserved bits, tvm, vcore/pcore), then CORE_OWNED (check 9)."""
        c, e = self.config, x.entry
        with m.If((x.word2 & MMU_ENTRY.reserved_mask) != 0):
            self._error(m, x, ErrorCode.RESERVED_BITS, x.word2, w2_idx, _Ret.HDR)
        with m.Elif(e.tvm >= c.max_vms):
            self._error(m, x, ErrorCode.BAD_VM, x.word2, w2_idx, _Ret.HDR)
        with m.Elif((e.vcore >= c.vcores_per_vm) | (e.valid & (e.pcore >= c.num_cores))):
            self._error(m, x, ErrorCode.BAD_ADDRESS, x.word2, w2_idx, _Ret.HDR)
        with m.Elif(self.mmu.map_owned):
            self._fault(m, x, FaultCause.CORE_OWNED, e.tvm, x.word2, w2_idx, _Ret.HDR)
        with m.Else():
            m.d.comb += self.mmu.map_apply.eq(1)
            m.next = "HDR"

    # ------------------------------------------------------------------ FSM: RESET, READ_COUNTERS
    def _reset_and_counter_states(self, m, x):
        C = self.config.num_cores
        with m.State("CLEAR"):   # RESET: CLEAR to every pending core; then wait for IDLE
            m.d.comb += [x.cfg_req.eq(pack_word(CFG_REQUEST, op=CfgOp.CLEAR)), x.cfg_valid.eq(x.pending)]
            accepted = Cat(self.cfg[p].valid & self.cfg[p].ready for p in range(C))
            m.d.sync += x.pending.eq(x.pending & ~accepted)
            with m.If((x.pending & ~accepted) == 0):
                m.next = "CLEAR_WAIT"

        with m.State("CLEAR_WAIT"):
            with m.If(x.all_idle):
                m.next = "HDR"

        with m.State("COUNTERS_HDR"):
            m.d.comb += [x.out_valid.eq(1), x.out_word.eq(pack_word(OUTPUT_FORMATS[OutType.COUNTERS],
                                                                    type=OutType.COUNTERS, count=x.f_ccount))]
            with m.If(x.out_ok):
                m.d.sync += x.k.eq(x.f_first)
                m.next = "COUNTERS"

        with m.State("COUNTERS"):
            counter_index = x.k[:(NUM_COUNTERS - 1).bit_length()]
            m.d.comb += [x.out_valid.eq(1),
                         x.out_word.eq(Array(x.counter_of)[x.pcore][counter_index])]
            with m.If(x.out_ok):
                m.d.sync += x.k.eq(x.k + 1)
                with m.If(x.k + 1 == x.f_first + x.f_ccount):
                    m.next = "HDR"

    # ------------------------------------------------------------------ FSM: RUN
    def _run_states(self, m, x):
        """Per step: start every core, drain them in physical-core order (§6.3), barrier, commit."""
        C = self.config.num_cores
        mmu = self.mmu
        with m.State("STEP_START"):
            with m.If(x.all_idle):
                m.d.comb += self.start.eq(x.stepping)
                m.d.sync += x.timestep.eq(x.timestep + 1)
                for i, d in enumerate(x.domains):
                    with m.If(x.run_domains[d]):
                        m.d.sync += x.t_dom[i].eq(x.t_dom[i] + 1)
                m.next = "STEP_WAIT_RUN"

        with m.State("STEP_WAIT_RUN"):
            with m.If(x.stepping_in_run):
                m.d.sync += x.pcore.eq(0)
                m.next = "DRAIN"

        with m.State("DRAIN"):    # the items of core `pcore`, in order
            for p in range(C):
                m.d.comb += self.spikes[p].ready.eq(x.pcore == p)
            with m.If(x.spk_valid[x.pcore]):
                m.d.sync += x.item.eq(x.spk_payload[x.pcore])
                m.next = "ITEM"
            with m.Elif(x.done[x.pcore] | ~Array(x.stepping)[x.pcore]):   # a frozen core has nothing
                with m.If(x.pcore == C - 1):
                    m.next = "BARRIER"
                with m.Else():
                    m.d.sync += x.pcore.eq(x.pcore + 1)

        with m.State("ITEM"):
            src = pack_word(FANOUT_SOURCE, vcore=mmu.dom_vcore, neuron=x.item.neuron)
            with m.If(x.item.report):
                self._emit(m, x, [pack_word(OUTPUT_FORMATS[OutType.SPIKE], type=OutType.SPIKE, vm=mmu.dom_vm,
                                            vcore=mmu.dom_vcore, neuron=x.item.neuron),
                                  self._domain_timestep(x, mmu.dom_vm)], _Ret.DRAIN)
            with m.Elif(mmu.f_ok):
                m.d.sync += x.dest.eq(mmu.f_pcore)
                m.next = "PUSH"
            with m.Else():
                fanout_word = pack_word(REGIONS[Region.FANOUT].fmt, axon=x.item.axon, vcore=x.item.vcore)
                self._emit(m, x, [pack_word(OUTPUT_FORMATS[OutType.FAULT], type=OutType.FAULT, vm=mmu.dom_vm,
                                            cause=mmu.f_cause, origin=FaultOrigin.FANOUT),
                                  fanout_word, src], _Ret.DRAIN)

        with m.State("PUSH"):     # one AER packet into the mesh at this core's node
            self._push_packet(m, x)

        with m.State("BARRIER"):
            with m.If((x.in_flight == 0) & x.all_syn_idle & ~x.pushed):
                m.d.comb += self.commit.eq(1)
                m.next = "STEP_COMMIT"

        with m.State("STEP_COMMIT"):
            with m.If(x.all_idle):
                m.d.sync += x.steps_left.eq(x.steps_left - 1)
                self._emit(m, x, [pack_word(OUTPUT_FORMATS[OutType.STEP_END], type=OutType.STEP_END),
                                  x.timestep], _Ret.STEP_DONE)

    def _core_timesteps(self, m, x):
        """Learning chips: each core's domain timestep ``T[d]`` (low bits), for its epoch test (§24.4 step 5)."""
        if self.config.learning:
            for p in range(self.config.num_cores):
                m.d.comb += self.core_t[p].eq(self._domain_timestep(x, self.mmu.core_dom[p]))

    def _domain_timestep(self, x, vm):
        """``T[vm]``: the timestep of the domain ``vm`` (a guest VM id, or HV_VM for bare-metal cores)."""
        return x.t_dom[Mux(vm == HV_VM, len(x.domains) - 1, vm)]

    def _push_packet(self, m, x):
        """The current fan-out item as an AER packet into the mesh; count PACKETS_SENT and hops."""
        C = self.config.num_cores
        xs, ys, src, dst = x.xs, x.ys, x.pcore, x.dest
        pkt = pack_word(AER_PACKET, axon=x.item.axon, dst_x=xs[dst], dst_y=ys[dst])
        for p in range(C):
            m.d.comb += [self.mesh_in[p].payload.eq(pkt), self.mesh_in[p].valid.eq(src == p)]
        with m.If(Array(self.mesh_in[p].ready for p in range(C))[src]):
            m.d.comb += x.pushed.eq(1)
            dx = Mux(xs[dst] > xs[src], xs[dst] - xs[src], xs[src] - xs[dst])
            dy = Mux(ys[dst] > ys[src], ys[dst] - ys[src], ys[src] - ys[dst])
            m.d.sync += [x.sent[src].eq(x.sent[src] + 1), x.hopx[src].eq(x.hopx[src] + dx),
                         x.hopy[src].eq(x.hopy[src] + dy)]
            m.next = "DRAIN"

    # ------------------------------------------------------------------ FSM: output and skipping
    def _output_states(self, m, x):
        """EMIT (send the staged message, then return) and SKIP (drop the rest of a refused command)."""
        with m.State("EMIT"):
            m.d.comb += [x.out_valid.eq(1), x.out_word.eq(x.msg[x.msg_i])]
            with m.If(x.out_ok):
                m.d.sync += x.msg_i.eq(x.msg_i + 1)
                with m.If(x.msg_i + 1 == x.msg_n):
                    with m.Switch(x.ret):
                        with m.Case(_Ret.HDR):
                            m.next = "HDR"
                        with m.Case(_Ret.SKIP):
                            m.next = "SKIP"
                        with m.Case(_Ret.WDATA):
                            m.next = "WDATA"
                        with m.Case(_Ret.DRAIN):
                            m.next = "DRAIN"
                        with m.Case(_Ret.STEP_DONE):
                            with m.If(x.steps_left == 0):
                                m.next = "HDR"
                            with m.Else():
                                m.next = "STEP_START"

        with m.State("SKIP"):
            with m.If(x.skip == 0):
                m.next = "HDR"
            with m.Else():
                m.d.comb += x.take_word.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += x.skip.eq(x.skip - 1)
