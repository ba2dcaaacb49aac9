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

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from neurovm.config import HV_VM, ChipConfig
from neurovm.formats import (
    AER_PACKET,
    CFG_REQUEST,
    COMMAND_FORMATS,
    FANOUT_SOURCE,
    MMU_ENTRY,
    NUM_COUNTERS,
    OUTPUT_FORMATS,
    REGIONS,
    CfgOp,
    ErrorCode,
    FaultCause,
    FaultOrigin,
    Opcode,
    OutType,
    Perm,
    Region,
    WordFormat,
)

from .core import CorePhase
from .layouts import LINK_LAYOUTS, MMU_ENTRY_LAYOUT

__all__ = ["HostInterface", "pack_word", "region_word_bad"]

_PRIVILEGED = (Opcode.RUN, Opcode.MMU_MAP, Opcode.RESET)


def pack_word(fmt: WordFormat, **fields) -> Value:
    """An Amaranth expression for ``fmt.pack(**fields)`` (values are truncated to their fields)."""
    word = Const(0, fmt.bits)
    for name, v in fields.items():
        f = fmt[name]
        word = word | (Value.cast(v).as_unsigned()[:f.width] << f.lsb)
    return word[:fmt.bits]


def region_word_bad(config: ChipConfig, region: Region, word: Value) -> Value:
    """True if ``word`` is not a legal memory word of ``region`` (§5; §8.3 check 10)."""
    spec = REGIONS[region]
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


class HostInterface(wiring.Component):
    """Command parser and executor of one NeuroVM chip.

    Parameters
    ----------
    config : ChipConfig

    The core-side ports are arrays indexed by physical core; ``mmu`` is the
    flipped port set of :class:`~neurovm.hdl.mmu.VirtMMU`.
    """

    def __init__(self, config: ChipConfig, mmu_signature):
        self.config = config
        C = config.num_cores
        cb = max(1, (C - 1).bit_length())
        self.core_bits = cb
        super().__init__({
            "cmd": In(stream.Signature(32)),
            "out": Out(stream.Signature(32)),
            "mmu": In(mmu_signature),
            "cfg": Out(stream.Signature(LINK_LAYOUTS["CFG_REQUEST"])).array(C),
            "cfg_rdata": In(stream.Signature(32)).array(C),
            "inject": Out(stream.Signature(LINK_LAYOUTS["AXON_EVENT"])).array(C),
            "spikes": In(stream.Signature(LINK_LAYOUTS["CORE_SPIKE"])).array(C),
            "start": Out(1), "commit": Out(1),
            "phase": In(CorePhase).array(C), "done": In(1).array(C), "syn_idle": In(1).array(C),
            "core_counters": In(data.ArrayLayout(32, 4)).array(C),   # syn_ops, neuron_updates, spikes_out, busy
            "mesh_in": Out(stream.Signature(LINK_LAYOUTS["AER_PACKET"])).array(C),
            "mesh_delivered": In(C),      # local_out transfers this clock, one bit per core
            "packets_routed": In(32).array(C),
            "mesh_clear": Out(C),
            "timestep": Out(32),
            "idle": Out(1),
            "at_boundary": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        C, cb = c.num_cores, self.core_bits
        mmu = self.mmu

        # ---------------------------------------------------------------- output words
        # Up to three words of one message are staged here, then sent one per clock.
        msg = Array(Signal(32, name=f"msg{i}") for i in range(3))
        msg_n = Signal(range(4))
        msg_i = Signal(range(4))
        ret = Signal(4)   # where EMIT returns to (see RET_* below)
        RET_HDR, RET_SKIP, RET_WDATA, RET_DRAIN, RET_STEP_DONE = range(5)

        # ---------------------------------------------------------------- command state
        sidx = Signal(32)        # stream index of the next input word
        hdr = Signal(32)
        hdr_idx = Signal(32)
        skip = Signal(13)        # words of the current command still to be dropped
        op = hdr[28:32]
        f_vm = hdr[24:27]
        f_vcore = hdr[16:24]
        f_region = hdr[12:16]
        f_count = hdr[0:12]
        f_axon = hdr[0:16]
        f_steps = hdr[0:12]
        f_first = hdr[4:8]
        f_ccount = hdr[0:4]
        f_scope = hdr[16]
        f_pcore = hdr[0:8]
        f_tag = hdr[0:24]
        addr = Signal(16)
        word2 = Signal(32)       # the second word (READ/WRITE address, MMU_MAP entry)
        k = Signal(13)           # data word / request counter
        k2 = Signal(13)          # response counter
        pcore = Signal(cb)
        steps_left = Signal(12)
        timestep = Signal(32)
        m.d.comb += self.timestep.eq(timestep)
        pending = Signal(C)      # cores that have not yet accepted a broadcast CLEAR

        word_in = self.cmd.payload
        take_word = Signal()
        m.d.comb += self.cmd.ready.eq(take_word)
        with m.If(self.cmd.valid & take_word):
            m.d.sync += sidx.eq(sidx + 1)

        def emit(m, words, to):
            for i, w in enumerate(words):
                m.d.sync += msg[i].eq(w)
            m.d.sync += [msg_n.eq(len(words)), msg_i.eq(0), ret.eq(to)]
            m.next = "EMIT"

        def error(m, code, word, index, to, detail=0):
            emit(m, [pack_word(OUTPUT_FORMATS[OutType.ERROR], type=OutType.ERROR, code=code, detail=detail),
                     word, index], to)

        def fault(m, cause, vm, word, index, to):
            emit(m, [pack_word(OUTPUT_FORMATS[OutType.FAULT], type=OutType.FAULT, vm=vm, cause=cause,
                               origin=FaultOrigin.HOST), word, index], to)

        # payload length after the header, taken from the header even when malformed
        payload = Signal(13)
        with m.Switch(op):
            with m.Case(Opcode.WRITE):
                m.d.comb += payload.eq(1 + f_count)
            with m.Case(Opcode.READ, Opcode.MMU_MAP):
                m.d.comb += payload.eq(1)

        reserved = Signal()
        with m.Switch(op):
            for o, fmt in COMMAND_FORMATS.items():
                with m.Case(o):
                    cond = (hdr & fmt.reserved_mask) != 0
                    if o == Opcode.RESET:
                        cond = cond | (~f_scope & (f_pcore != 0))
                    m.d.comb += reserved.eq(cond)
        known = Signal()
        m.d.comb += known.eq(Cat(op == o for o in Opcode).any())
        has_vm = Signal()
        m.d.comb += has_vm.eq(~((op == Opcode.NOP) | (op == Opcode.SYNC)))
        bad_vm = has_vm & (f_vm != HV_VM) & (f_vm >= c.max_vms)
        privileged = Cat(op == o for o in _PRIVILEGED).any()
        is_hv = f_vm == HV_VM

        # region sizes for the address check
        sizes = Array(Const(REGIONS[Region(r)].size(c), 17) if r in REGIONS.keys() else Const(0, 17)
                      for r in range(16))
        region_ok = f_region <= max(REGIONS.keys())

        # translation of (vm, vcore) for host commands (§7.2); the MMU answers combinationally
        m.d.comb += [mmu.h_vm.eq(f_vm), mmu.h_vcore.eq(f_vcore)]
        need = Signal(3)
        with m.Switch(op):
            with m.Case(Opcode.WRITE):
                m.d.comb += need.eq(Perm.W)
            with m.Case(Opcode.READ, Opcode.READ_COUNTERS):
                m.d.comb += need.eq(Perm.R)
            with m.Case(Opcode.INJECT):
                m.d.comb += need.eq(Perm.S)
        hv_bad_core = is_hv & (f_vcore >= C)
        guest_unmapped = ~is_hv & ~mmu.h_mapped
        guest_denied = ~is_hv & mmu.h_mapped & ~(mmu.h_perms & need).any()
        resolved = Mux(is_hv, f_vcore[:cb], mmu.h_pcore)

        def resolve(m, then):
            """Checks 7 (hypervisor core) and 9 (translation, permission); else latch pcore and go on."""
            with m.If(hv_bad_core):
                error(m, ErrorCode.BAD_ADDRESS, hdr, hdr_idx, RET_SKIP)
            with m.Elif(guest_unmapped):
                fault(m, FaultCause.UNMAPPED, f_vm, hdr, hdr_idx, RET_SKIP)
            with m.Elif(guest_denied):
                fault(m, FaultCause.PERMISSION, f_vm, hdr, hdr_idx, RET_SKIP)
            with m.Else():
                m.d.sync += pcore.eq(resolved)
                m.next = then

        all_idle = Cat(self.phase[p] == CorePhase.IDLE for p in range(C)).all()
        all_run = Cat(self.phase[p] == CorePhase.RUN for p in range(C)).all()
        all_syn_idle = Cat(self.syn_idle[p] for p in range(C)).all()

        # chip-level counters per core: PACKETS_SENT, HOPS_X, HOPS_Y
        sent = Array(Signal(32, name=f"packets_sent_{p}") for p in range(C))
        hopx = Array(Signal(32, name=f"hops_x_{p}") for p in range(C))
        hopy = Array(Signal(32, name=f"hops_y_{p}") for p in range(C))
        xs = Array(Const(c.core_xy(p)[0], 4) for p in range(C))
        ys = Array(Const(c.core_xy(p)[1], 4) for p in range(C))

        # mesh accounting for the step barrier
        in_flight = Signal(32)
        pushed = Signal()
        delivered = Signal(range(C + 1))
        m.d.comb += delivered.eq(sum(self.mesh_delivered[p] for p in range(C)))
        m.d.sync += in_flight.eq(in_flight + pushed - delivered)

        # the item being handled in a RUN
        item = Signal(LINK_LAYOUTS["CORE_SPIKE"])
        m.d.comb += [mmu.f_src.eq(pcore), mmu.f_vcore.eq(item.vcore)]
        dest = Signal(cb)

        # MMU_MAP entry
        entry = data.View(MMU_ENTRY_LAYOUT, word2)
        m.d.comb += mmu.map_entry.eq(word2)

        # WRITE data word check (§8.3 check 10)
        bad_field = Signal()
        with m.Switch(f_region):
            for r in REGIONS:
                with m.Case(r):
                    m.d.comb += bad_field.eq(region_word_bad(c, r, word_in))

        cfg_req = Signal(LINK_LAYOUTS["CFG_REQUEST"])
        cfg_valid = Signal(C)
        for p in range(C):
            m.d.comb += [self.cfg[p].payload.eq(cfg_req), self.cfg[p].valid.eq(cfg_valid[p])]
        cfg_ready = Array(self.cfg[p].ready for p in range(C))
        rdata_valid = Array(self.cfg_rdata[p].valid for p in range(C))
        rdata = Array(self.cfg_rdata[p].payload for p in range(C))
        spk_valid = Array(self.spikes[p].valid for p in range(C))
        spk_payload = Array(self.spikes[p].payload.as_value() for p in range(C))
        done = Array(self.done[p] for p in range(C))
        counters = Array(self.core_counters[p].as_value() for p in range(C))
        routed = Array(self.packets_routed[p] for p in range(C))

        out_valid = Signal()
        out_word = Signal(32)
        m.d.comb += [self.out.valid.eq(out_valid), self.out.payload.eq(out_word)]
        out_ok = self.out.ready

        with m.FSM() as fsm:
            # nothing to do until more command words arrive (between commands, or inside one)
            m.d.comb += self.at_boundary.eq(fsm.ongoing("HDR"))
            m.d.comb += self.idle.eq(fsm.ongoing("HDR") | fsm.ongoing("WORD2")
                                     | ((fsm.ongoing("WDATA") | fsm.ongoing("SKIP")) & (skip != 0)))
            with m.State("HDR"):
                m.d.comb += take_word.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [hdr.eq(word_in), hdr_idx.eq(sidx)]
                    m.next = "DECODE"

            with m.State("DECODE"):
                m.d.sync += skip.eq(payload)
                with m.If(~known):
                    error(m, ErrorCode.UNKNOWN_OPCODE, hdr, hdr_idx, RET_HDR)
                    m.d.sync += skip.eq(0)
                with m.Elif(reserved):
                    error(m, ErrorCode.RESERVED_BITS, hdr, hdr_idx, RET_SKIP)
                with m.Elif(bad_vm):
                    error(m, ErrorCode.BAD_VM, hdr, hdr_idx, RET_SKIP)
                with m.Elif(privileged & ~is_hv):
                    fault(m, FaultCause.PRIVILEGE, f_vm, hdr, hdr_idx, RET_SKIP)
                with m.Else():
                    with m.Switch(op):
                        with m.Case(Opcode.NOP):
                            m.next = "HDR"
                        with m.Case(Opcode.SYNC):
                            emit(m, [pack_word(OUTPUT_FORMATS[OutType.SYNC_ACK], type=OutType.SYNC_ACK,
                                               tag=f_tag)], RET_HDR)
                        with m.Case(Opcode.RUN):
                            with m.If(f_steps == 0):
                                error(m, ErrorCode.BAD_LENGTH, hdr, hdr_idx, RET_HDR)
                            with m.Else():
                                m.d.sync += steps_left.eq(f_steps)
                                m.next = "STEP_START"
                        with m.Case(Opcode.READ_COUNTERS):
                            with m.If((f_ccount == 0) | (f_first + f_ccount > NUM_COUNTERS)):
                                error(m, ErrorCode.BAD_LENGTH, hdr, hdr_idx, RET_HDR)
                            with m.Else():
                                resolve(m, "COUNTERS_HDR")
                        with m.Case(Opcode.INJECT):
                            with m.If(f_axon >= c.axons_per_core):
                                error(m, ErrorCode.BAD_ADDRESS, hdr, hdr_idx, RET_HDR)
                            with m.Else():
                                resolve(m, "INJECT")
                        with m.Case(Opcode.RESET):
                            with m.If(~f_scope):
                                m.d.sync += [pending.eq((1 << C) - 1), timestep.eq(0)]
                                m.d.sync += [sent[p].eq(0) for p in range(C)]
                                m.d.sync += [hopx[p].eq(0) for p in range(C)]
                                m.d.sync += [hopy[p].eq(0) for p in range(C)]
                                m.d.comb += [mmu.reset.eq(1), self.mesh_clear.eq((1 << C) - 1)]
                                m.next = "CLEAR"
                            with m.Elif(f_pcore >= C):
                                error(m, ErrorCode.BAD_ADDRESS, hdr, hdr_idx, RET_HDR)
                            with m.Else():
                                m.d.sync += [pending.eq(1 << f_pcore[:cb]), sent[f_pcore[:cb]].eq(0),
                                             hopx[f_pcore[:cb]].eq(0), hopy[f_pcore[:cb]].eq(0)]
                                m.d.comb += self.mesh_clear.eq(1 << f_pcore[:cb])
                                m.next = "CLEAR"
                        with m.Case(Opcode.WRITE, Opcode.READ):
                            with m.If(f_count == 0):
                                error(m, ErrorCode.BAD_LENGTH, hdr, hdr_idx, RET_SKIP)
                            with m.Elif(~region_ok):
                                error(m, ErrorCode.BAD_REGION, hdr, hdr_idx, RET_SKIP)
                            with m.Else():
                                m.next = "WORD2"
                        with m.Case(Opcode.MMU_MAP):
                            m.next = "WORD2"

            with m.State("WORD2"):   # the address word of READ/WRITE, the entry of MMU_MAP
                m.d.comb += take_word.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [word2.eq(word_in), addr.eq(word_in[:16]), skip.eq(skip - 1), k.eq(0), k2.eq(0)]
                    m.next = "CHECK2"

            with m.State("CHECK2"):
                w2_idx = hdr_idx + 1
                with m.If(op == Opcode.MMU_MAP):
                    with m.If((word2 & MMU_ENTRY.reserved_mask) != 0):
                        error(m, ErrorCode.RESERVED_BITS, word2, w2_idx, RET_HDR)
                    with m.Elif(entry.tvm >= c.max_vms):
                        error(m, ErrorCode.BAD_VM, word2, w2_idx, RET_HDR)
                    with m.Elif((entry.vcore >= c.vcores_per_vm) | (entry.valid & (entry.pcore >= C))):
                        error(m, ErrorCode.BAD_ADDRESS, word2, w2_idx, RET_HDR)
                    with m.Elif(mmu.map_owned):
                        fault(m, FaultCause.CORE_OWNED, entry.tvm, word2, w2_idx, RET_HDR)
                    with m.Else():
                        m.d.comb += mmu.map_apply.eq(1)
                        m.next = "HDR"
                with m.Else():
                    size = sizes[f_region]
                    with m.If((word2 >= size) | (word2 + f_count > size)):
                        error(m, ErrorCode.BAD_ADDRESS, word2, w2_idx, RET_SKIP)
                    with m.Else():
                        resolve(m, "ACCESS")

            with m.State("ACCESS"):
                with m.If(op == Opcode.WRITE):
                    m.next = "WDATA"
                with m.Else():   # READ_DATA header, then the words as they come
                    m.d.comb += [out_valid.eq(1), out_word.eq(pack_word(
                        OUTPUT_FORMATS[OutType.READ_DATA], type=OutType.READ_DATA, count=f_count))]
                    with m.If(out_ok):
                        m.next = "RDATA"

            with m.State("RDATA"):
                m.d.comb += cfg_req.eq(pack_word(CFG_REQUEST, op=CfgOp.READ, region=f_region, addr=addr + k))
                with m.If(k < f_count):
                    m.d.comb += cfg_valid.eq(1 << pcore)
                    with m.If(cfg_ready[pcore]):
                        m.d.sync += k.eq(k + 1)
                m.d.comb += [out_valid.eq(rdata_valid[pcore]), out_word.eq(rdata[pcore])]
                for p in range(C):
                    m.d.comb += self.cfg_rdata[p].ready.eq((pcore == p) & out_ok)
                with m.If(rdata_valid[pcore] & out_ok):
                    m.d.sync += k2.eq(k2 + 1)
                    with m.If(k2 + 1 == f_count):
                        m.next = "HDR"

            with m.State("WDATA"):
                with m.If(skip == 0):
                    m.next = "HDR"
                with m.Else():
                    with m.If(self.cmd.valid):
                        with m.If(bad_field):
                            m.d.comb += take_word.eq(1)
                            m.d.sync += [skip.eq(skip - 1), k.eq(k + 1)]
                            error(m, ErrorCode.BAD_FIELD, word_in, sidx, RET_WDATA, detail=addr + k)
                        with m.Else():
                            m.d.comb += [cfg_req.eq(pack_word(CFG_REQUEST, op=CfgOp.WRITE, region=f_region,
                                                              addr=addr + k, data=word_in)),
                                         cfg_valid.eq(1 << pcore)]
                            with m.If(cfg_ready[pcore]):
                                m.d.comb += take_word.eq(1)
                                m.d.sync += [skip.eq(skip - 1), k.eq(k + 1)]

            with m.State("INJECT"):
                for p in range(C):
                    m.d.comb += [self.inject[p].payload.axon.eq(f_axon), self.inject[p].valid.eq(pcore == p)]
                with m.If(Array(self.inject[p].ready for p in range(C))[pcore]):
                    m.next = "HDR"

            with m.State("CLEAR"):   # RESET: CLEAR to every pending core; then wait for IDLE
                m.d.comb += [cfg_req.eq(pack_word(CFG_REQUEST, op=CfgOp.CLEAR)), cfg_valid.eq(pending)]
                acc = Cat(self.cfg[p].valid & self.cfg[p].ready for p in range(C))
                m.d.sync += pending.eq(pending & ~acc)
                with m.If((pending & ~acc) == 0):
                    m.next = "CLEAR_WAIT"

            with m.State("CLEAR_WAIT"):
                with m.If(all_idle):
                    m.next = "HDR"

            with m.State("COUNTERS_HDR"):
                m.d.comb += [out_valid.eq(1), out_word.eq(pack_word(OUTPUT_FORMATS[OutType.COUNTERS],
                                                                    type=OutType.COUNTERS, count=f_ccount))]
                with m.If(out_ok):
                    m.d.sync += k.eq(f_first)
                    m.next = "COUNTERS"

            with m.State("COUNTERS"):
                cnt = counters[pcore]
                core_cnt = [cnt[32 * i:32 * (i + 1)] for i in range(4)]
                vals = Array([core_cnt[0], core_cnt[1], core_cnt[2], sent[pcore], hopx[pcore], hopy[pcore],
                              routed[pcore], core_cnt[3]])
                m.d.comb += [out_valid.eq(1), out_word.eq(vals[k[:3]])]
                with m.If(out_ok):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k + 1 == f_first + f_ccount):
                        m.next = "HDR"

            # ------------------------------------------------------------ RUN
            with m.State("STEP_START"):
                with m.If(all_idle):
                    m.d.comb += self.start.eq(1)
                    m.d.sync += timestep.eq(timestep + 1)
                    m.next = "STEP_WAIT_RUN"

            with m.State("STEP_WAIT_RUN"):
                with m.If(all_run):
                    m.d.sync += pcore.eq(0)
                    m.next = "DRAIN"

            with m.State("DRAIN"):    # the items of core `pcore`, in order
                for p in range(C):
                    m.d.comb += self.spikes[p].ready.eq(pcore == p)
                with m.If(spk_valid[pcore]):
                    m.d.sync += item.eq(spk_payload[pcore])
                    m.next = "ITEM"
                with m.Elif(done[pcore]):
                    with m.If(pcore == C - 1):
                        m.next = "BARRIER"
                    with m.Else():
                        m.d.sync += pcore.eq(pcore + 1)

            with m.State("ITEM"):
                src = pack_word(FANOUT_SOURCE, vcore=mmu.dom_vcore, neuron=item.neuron)
                with m.If(item.report):
                    emit(m, [pack_word(OUTPUT_FORMATS[OutType.SPIKE], type=OutType.SPIKE, vm=mmu.dom_vm,
                                       vcore=mmu.dom_vcore, neuron=item.neuron), timestep], RET_DRAIN)
                with m.Elif(mmu.f_ok):
                    m.d.sync += dest.eq(mmu.f_pcore)
                    m.next = "PUSH"
                with m.Else():
                    emit(m, [pack_word(OUTPUT_FORMATS[OutType.FAULT], type=OutType.FAULT, vm=mmu.dom_vm,
                                       cause=mmu.f_cause, origin=FaultOrigin.FANOUT),
                             item.as_value()[:24], src], RET_DRAIN)

            with m.State("PUSH"):     # one AER packet into the mesh at this core's node
                pkt = pack_word(AER_PACKET, axon=item.axon, dst_x=xs[dest], dst_y=ys[dest])
                for p in range(C):
                    m.d.comb += [self.mesh_in[p].payload.eq(pkt), self.mesh_in[p].valid.eq(pcore == p)]
                with m.If(Array(self.mesh_in[p].ready for p in range(C))[pcore]):
                    m.d.comb += pushed.eq(1)
                    dx = Mux(xs[dest] > xs[pcore], xs[dest] - xs[pcore], xs[pcore] - xs[dest])
                    dy = Mux(ys[dest] > ys[pcore], ys[dest] - ys[pcore], ys[pcore] - ys[dest])
                    m.d.sync += [sent[pcore].eq(sent[pcore] + 1), hopx[pcore].eq(hopx[pcore] + dx),
                                 hopy[pcore].eq(hopy[pcore] + dy)]
                    m.next = "DRAIN"

            with m.State("BARRIER"):
                with m.If((in_flight == 0) & all_syn_idle & ~pushed):
                    m.d.comb += self.commit.eq(1)
                    m.next = "STEP_COMMIT"

            with m.State("STEP_COMMIT"):
                with m.If(all_idle):
                    m.d.sync += steps_left.eq(steps_left - 1)
                    emit(m, [pack_word(OUTPUT_FORMATS[OutType.STEP_END], type=OutType.STEP_END), timestep],
                         RET_STEP_DONE)

            # ------------------------------------------------------------ message output and skipping
            with m.State("EMIT"):
                m.d.comb += [out_valid.eq(1), out_word.eq(msg[msg_i])]
                with m.If(out_ok):
                    m.d.sync += msg_i.eq(msg_i + 1)
                    with m.If(msg_i + 1 == msg_n):
                        with m.Switch(ret):
                            with m.Case(RET_HDR):
                                m.next = "HDR"
                            with m.Case(RET_SKIP):
                                m.next = "SKIP"
                            with m.Case(RET_WDATA):
                                m.next = "WDATA"
                            with m.Case(RET_DRAIN):
                                m.next = "DRAIN"
                            with m.Case(RET_STEP_DONE):
                                with m.If(steps_left == 0):
                                    m.next = "HDR"
                                with m.Else():
                                    m.next = "STEP_START"

            with m.State("SKIP"):
                with m.If(skip == 0):
                    m.next = "HDR"
                with m.Else():
                    m.d.comb += take_word.eq(1)
                    with m.If(self.cmd.valid):
                        m.d.sync += skip.eq(skip - 1)
        return m

