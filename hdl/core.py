"""The neuromorphic core: integer CUBA-LIF neurons, synapse memory, event-driven.

:class:`LifCore` holds one core's memories (docs/architecture.md §5) and runs
two pipelines that share nothing but the input accumulator (ACC):

* the **synapse pipeline** turns each arriving axon event into the synaptic
  operations of its axon-table list, one per clock, adding into ACC;
* the **neuron pipeline** updates neurons ``0 .. n_active-1``, one per clock,
  and queues the spiking ones; the **emitter** reads their fan-out lists and
  sends one output item per report and per fan-out entry.

ACC is double-buffered (banks ``cur`` and ``cur ^ 1``) so that events arriving
while a step is being computed -- they belong to the next step (§6.2) -- never
wait for the neuron pipeline, which is what keeps the mesh deadlock-free.
The pipeline, the ports and the bank protocol are described in
docs/architecture.md §12.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from neurovm.config import (
    ACT_SHIFT,
    BIAS_EXP_BITS,
    BIAS_MANT_BITS,
    DECAY_BITS,
    DECAY_UNITY,
    DU_OFFSET,
    DV_OFFSET,
    REFRACT_BITS,
    STATE_BITS,
    V_MAX,
    V_MIN,
    VTH_BITS,
    VTH_SHIFT,
    WEIGHT_EXP_MIN,
    ChipConfig,
)
from neurovm.formats import CFG_REQUEST, COUNTER_BITS, WORD_BITS, CfgOp, Region, region_specs

from .layouts import CORE_COUNTERS, LINK_LAYOUTS, REGION_LAYOUTS, counter_port, region_layout, storage_layout
from .learning import EPOCH_T_BITS, learn_axon_sweep, learn_memories, learn_phase, learn_ports, learn_read_cases

__all__ = ["LifCore", "CorePhase", "OUT_FIFO_DEPTH", "RSP_FIFO_DEPTH"]

#: Depth of the output-item FIFO behind the emitter (decouples the FANOUT read from backpressure).
OUT_FIFO_DEPTH = 4
#: Depth of the configuration read-response FIFO.
RSP_FIFO_DEPTH = 4
#: Left padding of the weight before the exponent's arithmetic right shift (covers weight_exp = WEIGHT_EXP_MIN).
EXP_PAD = -WEIGHT_EXP_MIN

# The neuron regions the neuron pipeline reads at one address per clock.
_PARAM_REGIONS = (Region.NRN_DECAY, Region.NRN_BIAS, Region.NRN_VTH)
_STATE_REGIONS = (Region.STATE_U, Region.STATE_V, Region.STATE_REF)
# Regions stored in a memory of their own (ACC has two banks, CORE_CFG is registers).
_MEM_REGIONS = (Region.AXON, Region.SYN, *_PARAM_REGIONS, Region.FANOUT_PTR, Region.FANOUT, *_STATE_REGIONS)


class CorePhase(enum.Enum, shape=3):
    """Control phase of a core (the ``phase`` output)."""

    IDLE = 0     # between steps: configuration and injected events (into bank cur)
    CLEAR = 1    # RESET core: zeroing every memory, one address per clock
    FOLD = 2     # after a CORE_CFG write: folding ACC bank cur^1 into bank cur
    START = 3    # step requested: draining in-flight events into bank cur
    RUN = 4      # step running: neuron pipeline + emitter; events go to bank cur^1
    COMMIT = 5   # step committed: draining in-flight events, then cur ^= 1
    LEARN = 6    # learning chips, LEARN_RULE.enable = 1: the learning pass and the post traces (§24.5)


def _word_of(m: Module, region: Region, config: ChipConfig, stored) -> Signal:
    """The 32-bit memory word (§5 format) of a stored entry (sign/zero-extends each field)."""
    word = Signal(region_layout(region, config), name=f"word_{region.name.lower()}")
    m.d.comb += word.eq(0)   # reserved bits read as 0
    for name in region_specs(config)[region].fmt.fields:
        m.d.comb += getattr(word, name).eq(getattr(stored, name))
    return word


def _stored_of(m: Module, region: Region, config: ChipConfig, word_bits) -> Signal:
    """The stored form of a (validated) 32-bit memory word."""
    word = data.View(region_layout(region, config), word_bits)
    stored = Signal(storage_layout(region, config), name=f"stored_{region.name.lower()}")
    for name in region_specs(config)[region].fmt.fields:
        m.d.comb += getattr(stored, name).eq(getattr(word, name))
    return stored


class LifCore(wiring.Component):
    """One NeuroVM neuromorphic core.

    Parameters
    ----------
    config : ChipConfig
        Sizes (N, S, A, F, weight bits) of the core's memories.

    Attributes
    ----------
    events : In(stream.Signature(AXON_EVENT))
        Axon events: host injections and mesh packets.  Accepted in IDLE (they
        count for the next step) and in RUN (they count for the step after).
    spikes : Out(stream.Signature(CORE_SPIKE))
        Per spiking neuron, in ascending neuron order: a ``report`` item if
        the neuron's report bit is set, then one item per fan-out entry
        (virtual destination, untranslated), in entry order.
    cfg : In(stream.Signature(CFG_REQUEST))
        Configuration requests (READ, WRITE, CLEAR); accepted in IDLE once the
        synapse pipeline is empty.  Words must already be legal (§8.3 check 10).
    cfg_rdata : Out(stream.Signature(32))
        One 32-bit word per READ, in request order.
    start : In(1)
        Begin a timestep; honoured in IDLE (assert it while ``phase`` is IDLE).
    commit : In(1)
        End the timestep (the chip-wide barrier); honoured in RUN once ``done``.
    phase : Out(CorePhase)
        Control phase.
    done : Out(1)
        RUN and the step's neuron updates and output items are all finished.
    syn_idle : Out(1)
        No event in the synapse pipeline.
    syn_ops, neuron_updates, spikes_out, busy_cycles : Out(32)
        Telemetry counters 0, 1, 2 and 7 of §9.1 (32-bit, wrapping).
    t_dom : In(7)
        Learning chips only (``config.learning = 1``, §24.5): the low bits of the core's domain
        timestep ``T[d]`` of the current step, for the learning engine's epoch test.
    """

    def __init__(self, config: ChipConfig):
        self.config = config
        super().__init__({
            "events": In(stream.Signature(LINK_LAYOUTS["AXON_EVENT"])),
            "spikes": Out(stream.Signature(LINK_LAYOUTS["CORE_SPIKE"])),
            "cfg": In(stream.Signature(LINK_LAYOUTS["CFG_REQUEST"])),
            "cfg_rdata": Out(stream.Signature(unsigned(WORD_BITS))),
            "start": In(1),
            "commit": In(1),
            "phase": Out(CorePhase),
            "done": Out(1),
            "syn_idle": Out(1),
            **{counter_port(cn): Out(COUNTER_BITS) for cn in CORE_COUNTERS},
            # learning chips: the low bits of the core's domain timestep T[d] (this step's, §24.4 step 5)
            **({"t_dom": In(EPOCH_T_BITS)} if config.learning else {}),
        })

    def elaborate(self, platform):
        """Staged: memories, registers, the three pipelines, port multiplexing, responses, phases."""
        m = Module()
        x = SimpleNamespace()   # the signals the stages share
        c = self.config
        x.c = c
        x.N, x.S, x.A, x.F = c.neurons_per_core, c.synapses_per_core, c.axons_per_core, c.fanout_per_core
        x.nrange = range(max(2, x.N))   # neuron index registers: at least 1 bit (Verilog has no 0-bit vectors)
        x.learn = SimpleNamespace() if c.learning else None   # the learning engine's signals (hdl/learning.py)
        x.events = self.events
        x.Phase = CorePhase   # for hdl/learning.py (which core.py imports)
        x.t_dom = getattr(self, "t_dom", None)
        self._memories(m, x)
        self._registers(m, x)
        self._config_port(m, x)
        self._synapse_pipeline(m, x)
        self._neuron_pipeline(m, x)
        if c.learning:
            learn_memories(m, x)
            learn_axon_sweep(m, x)
        self._emitter(m, x)
        self._sweeps(m, x)
        self._config_port_mux(m, x)
        self._synapse_ports(m, x)
        self._neuron_ports(m, x)
        self._sweep_ports(m, x)
        self._read_responses(m, x)
        self._control_phases(m, x)
        if c.learning:   # after the core's stages: the LEARN phase's assignments override theirs
            learn_phase(m, x)
            learn_ports(m, x)
        return m

    def _memories(self, m, x):
        """One memory per region at its storage width; ACC as two banks with transparent read ports."""
        A, F, N, S, c = x.A, x.F, x.N, x.S, x.c
        # memories (one per region; ACC has two banks)
        depth = {Region.AXON: A, Region.SYN: S, Region.FANOUT: F}
        mems, rd, wr = {}, {}, {}
        for r in _MEM_REGIONS:
            # at least 2 rows: a 1-row memory has a 0-bit address, which Verilog cannot declare
            mem = memory.Memory(shape=storage_layout(r, c), depth=max(2, depth.get(r, N)), init=[])
            m.submodules[f"mem_{r.name.lower()}"] = mems[r] = mem
            wr[r] = mem.write_port()
            # learning chips: the pass writes a SYN entry in the clock the next list may read it (§24.5)
            learn_syn = c.learning and r is Region.SYN
            rd[r] = mem.read_port(transparent_for=(wr[r],) if learn_syn else ())
        acc_shape = signed(STATE_BITS)
        acc_mem, acc_rd, acc_wr = [], [], []
        for b in range(2):
            mem = memory.Memory(shape=acc_shape, depth=max(2, N), init=[])
            m.submodules[f"mem_acc{b}"] = mem
            w = mem.write_port()
            acc_mem.append(mem)
            acc_wr.append(w)
            # transparent: a synaptic op reads the sum its predecessor writes in the same clock
            acc_rd.append(mem.read_port(transparent_for=(w,)))
        x.acc_rd, x.acc_shape, x.acc_wr, x.mems, x.rd = acc_rd, acc_shape, acc_wr, mems, rd
        x.wr = wr

    def _registers(self, m, x):
        """CORE_CFG registers, the weight shift, the control phase, the ACC bank pointer, the counters."""
        N = x.N
        # CORE_CFG registers
        weight_exp = Signal(signed(4))
        n_active = Signal(range(N + 1))
        # Loihi's two-part weight shift (spec §4): floor(w * 2^e) * 2^6, with
        # floor(w * 2^e) == (w << EXP_PAD) >> (EXP_PAD - e), an arithmetic right shift by 1..16
        w_shift = Signal(range(2 * EXP_PAD + 1), init=EXP_PAD)

        phase = Signal(CorePhase)
        cur = Signal()  # ACC bank holding the input of the next step to run
        m.d.comb += self.phase.eq(phase)

        # counters
        cnt = {counter_port(cn): getattr(self, counter_port(cn)) for cn in CORE_COUNTERS}
        cnt_regs = {k: Signal(COUNTER_BITS, name=f"cnt_{k}") for k in cnt}
        for k in cnt:
            m.d.comb += cnt[k].eq(cnt_regs[k])
        x.cnt_regs, x.cur, x.n_active, x.phase, x.w_shift = cnt_regs, cur, n_active, phase, w_shift
        x.weight_exp = weight_exp

    def _config_port(self, m, x):
        """Configuration requests in, read responses out through a small FIFO."""
        # configuration port: requests and read responses
        req = self.cfg.payload
        m.submodules.rsp_fifo = rsp_fifo = fifo.SyncFIFOBuffered(width=WORD_BITS, depth=RSP_FIFO_DEPTH)
        wiring.connect(m, rsp_fifo.r_stream, wiring.flipped(self.cfg_rdata))
        rd_pending = Signal()  # a READ issued last clock: its data is on the read ports now
        rd_region = Signal(CFG_REQUEST["region"].width)
        rd_room = rsp_fifo.level + rd_pending < RSP_FIFO_DEPTH
        x.rd_pending, x.rd_region, x.rd_room, x.req, x.rsp_fifo = rd_pending, rd_region, rd_room, req, rsp_fifo

    def _synapse_pipeline(self, m, x):
        """E (axon table) -> W (walk the synapse list) -> S2 (ACC read, weight scaling) -> S3 (ACC write)."""
        S, acc_rd, acc_shape, c, cnt_regs = x.S, x.acc_rd, x.acc_shape, x.c, x.cnt_regs
        cur, nrange, phase, rd, w_shift = x.cur, x.nrange, x.phase, x.rd, x.w_shift
        # synapse pipeline:  E (axon table) -> W (walk synapse list) -> S2 (ACC read) -> S3 (ACC write)
        ax_valid = Signal()            # AXON read data holds a pending event
        w_active = Signal()
        w_ptr = Signal(range(S + 1))
        w_rem = Signal(range(S + 1))
        s2_valid = Signal()
        s3_valid = Signal()
        s3_target = Signal(nrange)
        s3_sw = Signal(acc_shape)
        syn_empty = ~(ax_valid | w_active | s2_valid | s3_valid)
        m.d.comb += self.syn_idle.eq(syn_empty)
        # bank the synapse pipeline adds into: cur between steps, cur^1 while a step runs
        syn_bank = Signal()
        m.d.comb += syn_bank.eq(cur ^ ((phase == CorePhase.RUN) | (phase == CorePhase.COMMIT)))

        # events flow in IDLE unless configuration wants the pipeline; always in RUN
        ev_open = ((phase == CorePhase.IDLE) & ~self.cfg.valid) | (phase == CorePhase.RUN)
        ax_data = rd[Region.AXON].data
        w_last = w_active & (w_rem == 1)
        ax_take = Signal()   # the walker loads the list on the AXON port (LEARN: hdl/learning.py overrides)
        m.d.comb += ax_take.eq(ax_valid & (~w_active | w_last))
        ax_en = ~ax_valid | ax_take     # the AXON port holds its data while the walker is busy
        ax_fill = Signal()   # an axon enters E: an accepted event (or, in LEARN, the pass's next axon)
        m.d.comb += ax_fill.eq(self.events.valid & self.events.ready)
        m.d.comb += [
            self.events.ready.eq(ev_open & ax_en),
            rd[Region.AXON].en.eq(ax_en),
        ]
        with m.If(ax_en):
            m.d.sync += ax_valid.eq(ax_fill)
        with m.If(w_active):
            m.d.sync += [w_ptr.eq(w_ptr + 1), w_rem.eq(w_rem - 1)]
            with m.If(w_rem == 1):
                m.d.sync += w_active.eq(0)
        with m.If(ax_take & (ax_data.syn_len != 0)):
            m.d.sync += [w_active.eq(1), w_ptr.eq(ax_data.syn_start), w_rem.eq(ax_data.syn_len)]
        m.d.sync += s2_valid.eq(w_active)

        syn = rd[Region.SYN].data
        sw_wide = Signal(signed(c.weight_bits + EXP_PAD))
        m.d.comb += sw_wide.eq(syn.weight.as_signed() << EXP_PAD)
        m.d.sync += [
            s3_valid.eq(s2_valid),
            s3_target.eq(syn.target),
            s3_sw.eq((sw_wide >> w_shift) << ACT_SHIFT),   # |w * 2^e| <= 2^14: fits 24 bits
        ]
        acc_sum = Signal(acc_shape)
        acc_rd_syn = Mux(syn_bank, acc_rd[1].data, acc_rd[0].data)
        m.d.comb += acc_sum.eq(acc_rd_syn + s3_sw)
        counted = s3_valid & (phase != CorePhase.LEARN) if c.learning else s3_valid   # the pass is no synaptic op
        with m.If(counted):
            m.d.sync += cnt_regs["syn_ops"].eq(cnt_regs["syn_ops"] + 1)
        x.ax_en, x.ax_fill, x.ax_take, x.ax_valid = ax_en, ax_fill, ax_take, ax_valid
        x.acc_sum, x.s2_valid, x.s3_target, x.s3_valid, x.syn = acc_sum, s2_valid, s3_target, s3_valid, syn
        x.syn_bank, x.syn_empty, x.w_active, x.w_ptr = syn_bank, syn_empty, w_active, w_ptr

    def _neuron_pipeline(self, m, x):
        """U0 (read) -> U1 (exact decay products) -> U2 (sum, saturate, threshold, write back)."""
        N, acc_rd, acc_shape, cnt_regs, cur = x.N, x.acc_rd, x.acc_shape, x.cnt_regs, x.cur
        n_active, nrange, phase, rd = x.n_active, x.nrange, x.phase, x.rd
        # neuron pipeline: U0 (read) -> U1 (decay products) -> U2 (sum, threshold, write back)
        upd_ptr = Signal(range(N + 1))
        u0 = (phase == CorePhase.RUN) & (upd_ptr < n_active)
        u1_valid, u1_n = Signal(), Signal(nrange)
        u2_valid, u2_n = Signal(), Signal(nrange)
        with m.If(u0):
            m.d.sync += upd_ptr.eq(upd_ptr + 1)
        m.d.sync += [u1_valid.eq(u0), u1_n.eq(upd_ptr), u2_valid.eq(u1_valid), u2_n.eq(u1_n)]

        dec = rd[Region.NRN_DECAY].data
        bias = rd[Region.NRN_BIAS].data
        vth = rd[Region.NRN_VTH].data
        u_old = rd[Region.STATE_U].data.u
        v_old = rd[Region.STATE_V].data.v
        ref_old = rd[Region.STATE_REF].data.ref
        acc_cur = Mux(cur, acc_rd[1].data, acc_rd[0].data)

        # U1: |x| * (4096 - d) >> 12, the product exact in 36/37 bits; sign kept aside
        u_abs, v_abs = Signal(STATE_BITS), Signal(STATE_BITS)
        m.d.comb += [u_abs.eq(Mux(u_old < 0, -u_old, u_old)), v_abs.eq(Mux(v_old < 0, -v_old, v_old))]
        u_fac = Signal(range(DECAY_UNITY + 1))
        v_fac = Signal(range(DECAY_UNITY + 1))
        m.d.comb += [u_fac.eq(DECAY_UNITY - DU_OFFSET - dec.du), v_fac.eq(DECAY_UNITY - DV_OFFSET - dec.dv)]
        u2_umag, u2_vmag = Signal(STATE_BITS), Signal(STATE_BITS)
        u2_uneg, u2_vneg = Signal(), Signal()
        u2_acc = Signal(acc_shape)
        u2_ref, u2_refract = Signal(REFRACT_BITS), Signal(REFRACT_BITS)
        u2_bias = Signal(signed(BIAS_MANT_BITS + (1 << BIAS_EXP_BITS) - 1))   # bias_mant << bias_exp, exact
        u2_vth = Signal(VTH_BITS + VTH_SHIFT)
        m.d.sync += [
            u2_umag.eq((u_abs * u_fac) >> DECAY_BITS),
            u2_vmag.eq((v_abs * v_fac) >> DECAY_BITS),
            u2_uneg.eq(u_old < 0),
            u2_vneg.eq(v_old < 0),
            u2_acc.eq(acc_cur),
            u2_ref.eq(ref_old),
            u2_refract.eq(dec.refract),
            u2_bias.eq(bias.bias_mant << bias.bias_exp),
            u2_vth.eq(vth.vth_mant << VTH_SHIFT),
        ]
        # U2
        u_new = Signal(signed(STATE_BITS))   # wraps: the assignment keeps the low 24 bits
        m.d.comb += u_new.eq(Mux(u2_uneg, -u2_umag, u2_umag) + u2_acc)
        v_int = Signal(signed(STATE_BITS + 3))
        m.d.comb += v_int.eq(Mux(u2_vneg, -u2_vmag, u2_vmag) + u_new + u2_bias)
        v_sat = Signal(signed(STATE_BITS))
        with m.If(v_int > V_MAX):
            m.d.comb += v_sat.eq(V_MAX)
        with m.Elif(v_int < V_MIN):
            m.d.comb += v_sat.eq(V_MIN)
        with m.Else():
            m.d.comb += v_sat.eq(v_int)
        refractory = u2_ref != 0
        fire = Signal()
        m.d.comb += fire.eq(~refractory & (v_sat > u2_vth))
        v_new = Mux(refractory | fire, 0, v_sat)
        ref_new = Mux(refractory, u2_ref - 1, Mux(fire, u2_refract, 0))
        with m.If(u2_valid):
            m.d.sync += cnt_regs["neuron_updates"].eq(cnt_regs["neuron_updates"] + 1)
            with m.If(fire):
                m.d.sync += cnt_regs["spikes_out"].eq(cnt_regs["spikes_out"] + 1)

        # spiking neurons wait here for the emitter (at most N per step: never full)
        m.submodules.spike_fifo = spike_fifo = fifo.SyncFIFOBuffered(width=max(1, ceil_log2(N)), depth=max(3, N))
        m.d.comb += [spike_fifo.w_data.eq(u2_n), spike_fifo.w_en.eq(u2_valid & fire)]
        x.ref_new, x.spike_fifo, x.u0, x.u1_valid, x.u2_n = ref_new, spike_fifo, u0, u1_valid, u2_n
        x.u2_valid, x.u_new, x.upd_ptr, x.v_new, x.fire = u2_valid, u_new, upd_ptr, v_new, fire

    def _emitter(self, m, x):
        """Per spiking neuron: FANOUT_PTR, the report item, one item per FANOUT entry; and ``done``."""
        F, nrange, phase, rd, spike_fifo = x.F, x.nrange, x.phase, x.rd, x.spike_fifo
        u0, u1_valid, u2_valid = x.u0, x.u1_valid, x.u2_valid
        # emitter: per spiking neuron, FANOUT_PTR then report item then FANOUT entries
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(
            width=LINK_LAYOUTS["CORE_SPIKE"].size, depth=OUT_FIFO_DEPTH)
        m.d.comb += [
            self.spikes.valid.eq(out_fifo.r_rdy),
            self.spikes.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.spikes.ready),
        ]
        e_state = Signal(range(3))   # 0 wait for a spike, 1 FANOUT_PTR data arriving, 2 emitting
        e_neuron = Signal(nrange)
        e_report = Signal()
        e_ptr = Signal(range(F + 1))
        e_rem = Signal(range(F + 1))
        it_valid = Signal()          # an item is being formed this clock (FANOUT data if not report)
        it_report = Signal()
        it_neuron = Signal(nrange)
        room = out_fifo.level + it_valid < OUT_FIFO_DEPTH
        issue_item = Signal()
        issue_report = Signal()
        e_finished = (e_state == 2) & ~e_report & (e_rem == 0)   # last item of this neuron issued
        e_pop = ((e_state == 0) | e_finished) & (phase == CorePhase.RUN) & spike_fifo.r_rdy
        m.d.comb += spike_fifo.r_en.eq(e_pop)
        with m.If(e_pop):   # FANOUT_PTR is read at the popped neuron in this same clock
            m.d.sync += [e_neuron.eq(spike_fifo.r_data), e_state.eq(1)]
        with m.Switch(e_state):
            with m.Case(0):
                pass
            with m.Case(1):
                fp = rd[Region.FANOUT_PTR].data
                m.d.sync += [e_report.eq(fp.report), e_ptr.eq(fp.fo_start), e_rem.eq(fp.fo_len), e_state.eq(2)]
            with m.Case(2):
                with m.If(e_report):
                    with m.If(room):
                        m.d.comb += [issue_item.eq(1), issue_report.eq(1)]
                        m.d.sync += e_report.eq(0)
                with m.Elif(e_rem != 0):
                    with m.If(room):
                        m.d.comb += issue_item.eq(1)
                        m.d.sync += [e_ptr.eq(e_ptr + 1), e_rem.eq(e_rem - 1)]
                with m.Elif(~e_pop):
                    m.d.sync += e_state.eq(0)
        m.d.sync += [it_valid.eq(issue_item), it_report.eq(issue_report), it_neuron.eq(e_neuron)]
        item = Signal(LINK_LAYOUTS["CORE_SPIKE"])
        fo = rd[Region.FANOUT].data
        m.d.comb += [
            item.neuron.eq(it_neuron),
            item.report.eq(it_report),
            out_fifo.w_data.eq(item),
            out_fifo.w_en.eq(it_valid),
        ]
        with m.If(~it_report):
            m.d.comb += [item.axon.eq(fo.axon), item.vcore.eq(fo.vcore)]

        done = Signal()
        finished = ((phase == CorePhase.RUN) & ~u0 & ~u1_valid & ~u2_valid & (spike_fifo.level == 0)
                    & (e_state == 0) & ~it_valid & (out_fifo.level == 0))
        if x.c.learning:   # learning chips: the axon sweep of RUN too (hdl/learning.py)
            finished = finished & ~x.sweep_busy
        m.d.comb += done.eq(finished)
        m.d.comb += self.done.eq(done)
        x.done, x.e_ptr = done, e_ptr

    def _sweeps(self, m, x):
        """Counters of the CLEAR and FOLD sweeps."""
        A, F, N, S, nrange = x.A, x.F, x.N, x.S, x.nrange
        phase = x.phase
        # sweeps: CLEAR (every memory) and FOLD (ACC bank cur^1 into bank cur)
        sweep = Signal(range(max(A, S, N, F) + 1))
        fold_valid, fold_n = Signal(), Signal(nrange)
        fold_issue = (phase == CorePhase.FOLD) & (sweep < N)
        x.fold_issue, x.fold_n, x.fold_valid, x.sweep = fold_issue, fold_n, fold_valid, sweep

    def _config_port_mux(self, m, x):
        """Memory ports default to the configuration port (the datapath overrides below: later wins)."""
        acc_rd, acc_wr, c, cur, phase = x.acc_rd, x.acc_wr, x.c, x.cur, x.phase
        rd, rd_pending, rd_region, rd_room, req = x.rd, x.rd_pending, x.rd_region, x.rd_room, x.req
        syn_empty, wr = x.syn_empty, x.wr
        # port multiplexing.  Defaults serve the configuration port; the
        # datapath, when active, overrides (later assignments win).
        cfg_take = Signal()
        is_read = req.op == CfgOp.READ
        is_write = req.op == CfgOp.WRITE
        m.d.comb += cfg_take.eq(self.cfg.valid & (phase == CorePhase.IDLE) & syn_empty
                                & (~is_read | rd_room))
        m.d.comb += self.cfg.ready.eq(cfg_take)
        take_write = cfg_take & is_write
        take_read = cfg_take & is_read
        m.d.sync += [rd_pending.eq(take_read), rd_region.eq(req.region)]

        for r in _MEM_REGIONS:
            m.d.comb += rd[r].addr.eq(req.addr)
            if r is not Region.AXON:
                m.d.comb += rd[r].en.eq(1)
            stored = _stored_of(m, r, c, req.data)
            m.d.comb += [
                wr[r].addr.eq(req.addr),
                wr[r].data.eq(stored),
                wr[r].en.eq(take_write & (req.region == r)),
            ]
        for b in range(2):
            m.d.comb += [acc_rd[b].addr.eq(req.addr), acc_rd[b].en.eq(1), acc_wr[b].addr.eq(req.addr)]
        acc_in = _stored_of(m, Region.ACC, c, req.data).acc
        with m.If(take_write & (req.region == Region.ACC)):
            for b in range(2):   # the logical ACC is the sum of the banks: the value goes to cur, 0 to cur^1
                m.d.comb += [acc_wr[b].en.eq(1), acc_wr[b].data.eq(Mux(cur == b, acc_in, 0))]
        x.cfg_take, x.take_read, x.take_write = cfg_take, take_read, take_write

    def _synapse_ports(self, m, x):
        """The synapse pipeline's memory ports."""
        acc_rd, acc_sum, acc_wr, rd, s2_valid = x.acc_rd, x.acc_sum, x.acc_wr, x.rd, x.s2_valid
        s3_target, s3_valid, syn, syn_bank, take_read = x.s3_target, x.s3_valid, x.syn, x.syn_bank, x.take_read
        w_active, w_ptr = x.w_active, x.w_ptr
        # synapse pipeline ports
        with m.If(~take_read):
            m.d.comb += rd[Region.AXON].addr.eq(self.events.payload.axon)
        with m.If(w_active):
            m.d.comb += rd[Region.SYN].addr.eq(w_ptr)
        for b in range(2):
            with m.If(s2_valid & (syn_bank == b)):
                m.d.comb += acc_rd[b].addr.eq(syn.target)
            with m.If(s3_valid & (syn_bank == b)):
                m.d.comb += [acc_wr[b].en.eq(1), acc_wr[b].addr.eq(s3_target), acc_wr[b].data.eq(acc_sum)]

    def _neuron_ports(self, m, x):
        """The neuron pipeline's and the emitter's memory ports (RUN only; ACC bank cur is theirs)."""
        acc_rd, acc_wr, cur, e_ptr, phase = x.acc_rd, x.acc_wr, x.cur, x.e_ptr, x.phase
        rd, ref_new, spike_fifo, u2_n, u2_valid = x.rd, x.ref_new, x.spike_fifo, x.u2_n, x.u2_valid
        u_new, upd_ptr, v_new, wr = x.u_new, x.upd_ptr, x.v_new, x.wr
        # neuron pipeline ports (RUN only; bank cur belongs to it)
        with m.If(phase == CorePhase.RUN):
            for r in (*_PARAM_REGIONS, *_STATE_REGIONS):
                m.d.comb += rd[r].addr.eq(upd_ptr)
            for b in range(2):
                with m.If(cur == b):
                    m.d.comb += acc_rd[b].addr.eq(upd_ptr)
                    m.d.comb += [acc_wr[b].en.eq(u2_valid), acc_wr[b].addr.eq(u2_n), acc_wr[b].data.eq(0)]
            with m.If(u2_valid):
                m.d.comb += [
                    wr[Region.STATE_U].en.eq(1), wr[Region.STATE_U].addr.eq(u2_n),
                    wr[Region.STATE_U].data.u.eq(u_new),
                    wr[Region.STATE_V].en.eq(1), wr[Region.STATE_V].addr.eq(u2_n),
                    wr[Region.STATE_V].data.v.eq(v_new),
                    wr[Region.STATE_REF].en.eq(1), wr[Region.STATE_REF].addr.eq(u2_n),
                    wr[Region.STATE_REF].data.ref.eq(ref_new),
                ]
            m.d.comb += rd[Region.FANOUT_PTR].addr.eq(spike_fifo.r_data)
            m.d.comb += rd[Region.FANOUT].addr.eq(e_ptr)

    def _sweep_ports(self, m, x):
        """FOLD (bank[cur] = bank0 + bank1, bank[cur^1] = 0) and CLEAR (zero every row) ports."""
        N, acc_rd, acc_wr, cur, fold_issue = x.N, x.acc_rd, x.acc_wr, x.cur, x.fold_issue
        fold_n, fold_valid, mems, phase, sweep = x.fold_n, x.fold_valid, x.mems, x.phase, x.sweep
        wr = x.wr
        # FOLD: bank[cur] = bank[0] + bank[1]; bank[cur^1] = 0
        with m.If(phase == CorePhase.FOLD):
            for b in range(2):
                m.d.comb += acc_rd[b].addr.eq(sweep)
                m.d.comb += [
                    acc_wr[b].en.eq(fold_valid), acc_wr[b].addr.eq(fold_n),
                    acc_wr[b].data.eq(Mux(cur == b, acc_rd[0].data + acc_rd[1].data, 0)),
                ]
        m.d.sync += [fold_valid.eq(fold_issue), fold_n.eq(sweep)]

        # CLEAR: zero every memory, one address per clock
        with m.If(phase == CorePhase.CLEAR):
            for r in _MEM_REGIONS:
                m.d.comb += [wr[r].addr.eq(sweep), wr[r].data.eq(0), wr[r].en.eq(sweep < mems[r].depth)]
            for b in range(2):
                m.d.comb += [acc_wr[b].addr.eq(sweep), acc_wr[b].data.eq(0), acc_wr[b].en.eq(sweep < N)]

    def _read_responses(self, m, x):
        """A READ's word, rebuilt from the stored fields, into the response FIFO one clock later."""
        acc_rd, acc_shape, n_active, rd, rd_pending = x.acc_rd, x.acc_shape, x.n_active, x.rd, x.rd_pending
        rd_region, rsp_fifo, weight_exp = x.rd_region, x.rsp_fifo, x.weight_exp
        # configuration read data -> response FIFO (one clock after the request)
        rsp = Signal(WORD_BITS)
        with m.Switch(rd_region):
            for r in _MEM_REGIONS:
                with m.Case(r):
                    m.d.comb += rsp.eq(_word_of(m, r, x.c, rd[r].data))
            with m.Case(Region.ACC):
                acc_word = Signal(REGION_LAYOUTS[Region.ACC])
                acc_logical = Signal(acc_shape)     # the two banks' sum, wrapped to 24 bits
                m.d.comb += [acc_word.eq(0), acc_logical.eq(acc_rd[0].data + acc_rd[1].data),
                             acc_word.acc.eq(acc_logical),
                             rsp.eq(acc_word)]
            with m.Case(Region.CORE_CFG):
                cfg_word = Signal(REGION_LAYOUTS[Region.CORE_CFG])
                m.d.comb += [cfg_word.eq(0), cfg_word.weight_exp.eq(weight_exp), cfg_word.n_active.eq(n_active), rsp.eq(cfg_word)]
            if x.c.learning:
                learn_read_cases(m, x, rsp)
        m.d.comb += [rsp_fifo.w_data.eq(rsp), rsp_fifo.w_en.eq(rd_pending)]

    def _control_phases(self, m, x):
        """The phase machine (§12.3) and the busy-cycle counter."""
        A, F, N, S, cfg_take = x.A, x.F, x.N, x.S, x.cfg_take
        cnt_regs, cur, done, fold_issue, fold_valid = x.cnt_regs, x.cur, x.done, x.fold_issue, x.fold_valid
        n_active, phase, req, sweep, syn_empty = x.n_active, x.phase, x.req, x.sweep, x.syn_empty
        take_write, upd_ptr, w_shift, weight_exp = x.take_write, x.upd_ptr, x.w_shift, x.weight_exp
        # control phases
        busy = (phase != CorePhase.IDLE) & ~done | ~syn_empty
        with m.If(busy):
            m.d.sync += cnt_regs["busy_cycles"].eq(cnt_regs["busy_cycles"] + 1)

        cfg_word_in = data.View(REGION_LAYOUTS[Region.CORE_CFG], req.data)
        with m.Switch(phase):
            with m.Case(CorePhase.IDLE):
                with m.If(take_write & (req.region == Region.CORE_CFG)):
                    m.d.sync += [
                        weight_exp.eq(cfg_word_in.weight_exp),
                        w_shift.eq(EXP_PAD - cfg_word_in.weight_exp),
                        n_active.eq(cfg_word_in.n_active),
                        sweep.eq(0),
                        phase.eq(CorePhase.FOLD),
                    ]
                with m.Elif(cfg_take & (req.op == CfgOp.CLEAR)):
                    m.d.sync += [sweep.eq(0), phase.eq(CorePhase.CLEAR)]
                with m.Elif(self.start & ~self.cfg.valid):
                    m.d.sync += phase.eq(CorePhase.START)
            with m.Case(CorePhase.CLEAR):
                m.d.sync += sweep.eq(sweep + 1)
                with m.If(sweep == max(A, S, N, F) - 1):
                    m.d.sync += [phase.eq(CorePhase.IDLE), cur.eq(0), weight_exp.eq(0),
                                 w_shift.eq(EXP_PAD), n_active.eq(0)]
                    m.d.sync += [r.eq(0) for r in cnt_regs.values()]
            with m.Case(CorePhase.FOLD):
                with m.If(fold_issue):
                    m.d.sync += sweep.eq(sweep + 1)
                with m.Elif(~fold_valid):
                    m.d.sync += phase.eq(CorePhase.IDLE)
            with m.Case(CorePhase.START):
                with m.If(syn_empty):
                    m.d.sync += [upd_ptr.eq(0), phase.eq(CorePhase.RUN)]
            with m.Case(CorePhase.RUN):
                with m.If(self.commit & done):
                    m.d.sync += phase.eq(CorePhase.COMMIT)
            with m.Case(CorePhase.COMMIT):
                with m.If(syn_empty):
                    m.d.sync += [cur.eq(~cur), phase.eq(CorePhase.IDLE)]
