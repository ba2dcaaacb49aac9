"""The learning engine of a core (docs/architecture.md §24): traces, epoch flags, the STDP pass.

Only a chip built with ``ChipConfig.learning = 1`` elaborates any of this; with ``learning = 0``
:class:`~neurovm.hdl.core.LifCore` calls none of the stages below and is the core of §12.

Two combinational arithmetic units, each an Elaboratable of its own and each checked bit for bit
against :func:`neurovm.emulator.lif.trace_step` / :func:`~neurovm.emulator.lif.stdp_dw`
(``tests/test_learning_hdl.py``):

* :class:`TraceStep`: ``min(127, floor(z * (4096 - decay) / 4096) + impulse * s)`` (§24.2);
* :class:`StdpUpdate`: ``clamp(w + y0 * ((a_plus * x) >> s_plus) - x0 * ((a_minus * y) >> s_minus))``
  at the weight range (§24.3), two 8x7 products, two arithmetic shifts, a saturating add.

And the stages :class:`~neurovm.hdl.core.LifCore` wires in (``learn_*`` functions, called with the
core's module and its namespace of shared signals ``x``), in the order of §24.4 (how: §24.5):

* memories: PRE_TRACE (``x``, ``x0``), two one-bit ``pend`` banks (like ACC's), POST_TRACE
  (``y``, ``y0``), the step's spike bits ``spk`` (transient), LEARN_CFG and LEARN_RULE registers;
* the synapse pipeline's ``E`` stage sets ``pend`` in bank ``syn_bank`` of the event's axon and
  lists the axon in that bank's pend list the first time;
* during RUN an axon sweep (parallel to the neuron pipeline) takes ``p = pend[cur]``, clears it
  and, with ``enable``, updates ``x`` and ``x0`` of every axon (steps 1 and 4); with
  ``enable = 0`` it visits only the listed axons; ``U2`` writes ``spk[n]``;
* the LEARN phase (after COMMIT, ``enable = 1`` only): at an epoch boundary the pass feeds the
  axons ``0..A-1`` to the synapse walker (one synapse per clock, one bubble between lists) and
  writes each plastic SYN entry back (step 5); then the neuron walk writes ``y`` and ``y0``
  (steps 4 and 6).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from neurovm.config import (DECAY_BITS, DECAY_UNITY, LEARN_EPOCH_BITS, LEARN_RATE_BITS, LEARN_SHIFT_BITS, TRACE_BITS,
                            TRACE_IMPULSE_BITS, TRACE_MAX, ChipConfig)
from neurovm.formats import LearnRegion, Region

from .layouts import region_layout

__all__ = ["EPOCH_T_BITS", "TraceStep", "StdpUpdate", "PRE_STORAGE", "POST_STORAGE", "TRACE_CFG", "RULE",
           "learn_memories", "learn_axon_sweep", "learn_phase", "learn_ports", "learn_read_cases"]

#: Low bits of ``T[d]`` a core needs for its epoch test: ``T mod 2^epoch_log2`` with epoch_log2 <= 7.
EPOCH_T_BITS = (1 << LEARN_EPOCH_BITS) - 1
#: What PRE_TRACE's memory stores (``pend`` lives in the two one-bit banks).
PRE_STORAGE = data.StructLayout({"x": unsigned(TRACE_BITS), "x0": unsigned(1)})
#: What POST_TRACE's memory stores.
POST_STORAGE = data.StructLayout({"y": unsigned(TRACE_BITS), "y0": unsigned(1)})
#: The learning registers: LEARN_CFG (one per trace) and LEARN_RULE, as the core keeps them.
TRACE_CFG = data.StructLayout({"decay": unsigned(DECAY_BITS), "impulse": unsigned(TRACE_IMPULSE_BITS)})
RULE = data.StructLayout({"a_plus": signed(LEARN_RATE_BITS), "a_minus": signed(LEARN_RATE_BITS),
                          "s_plus": unsigned(LEARN_SHIFT_BITS), "s_minus": unsigned(LEARN_SHIFT_BITS),
                          "epoch_log2": unsigned(LEARN_EPOCH_BITS), "enable": unsigned(1)})


class TraceStep(wiring.Component):
    """One step of a 7-bit trace (§24.2), combinational.

    Attributes
    ----------
    z, decay, impulse, s : In
        The trace, the 12-bit decay, the 7-bit impulse, the event bit.
    z_next : Out(TRACE_BITS)
        ``min(127, ((z * (4096 - decay)) >> 12) + impulse * s)``.
    """

    def __init__(self):
        super().__init__({"z": In(TRACE_BITS), "decay": In(DECAY_BITS), "impulse": In(TRACE_IMPULSE_BITS),
                          "s": In(1), "z_next": Out(TRACE_BITS)})

    def elaborate(self, platform):
        m = Module()
        decayed = Signal(TRACE_BITS)   # exact 20-bit product, truncated: never above z
        m.d.comb += decayed.eq((self.z * (DECAY_UNITY - self.decay)) >> DECAY_BITS)
        raised = Signal(TRACE_BITS + 1)
        m.d.comb += raised.eq(decayed + Mux(self.s, self.impulse, 0))
        m.d.comb += self.z_next.eq(Mux(raised > TRACE_MAX, TRACE_MAX, raised))
        return m


class StdpUpdate(wiring.Component):
    """The new weight of one (axon, synapse) pair at a learning pass (§24.3), combinational.

    Parameters
    ----------
    config : ChipConfig
        ``weight_bits`` (the saturation range).

    Attributes
    ----------
    w : In(signed(weight_bits))
    x, y : In(TRACE_BITS)
        Pre trace of the axon, post trace of the target neuron.
    x0, y0 : In(1)
        The epoch flags (``y0`` already ORed with the step's spike).
    rule : In(RULE)
    w_next : Out(signed(weight_bits))
        ``clamp(w + y0 * ((a_plus * x) >> s_plus) - x0 * ((a_minus * y) >> s_minus))``.
    """

    def __init__(self, config: ChipConfig):
        self.config = config
        wb = config.weight_bits
        super().__init__({"w": In(signed(wb)), "x": In(TRACE_BITS), "x0": In(1), "y": In(TRACE_BITS), "y0": In(1),
                          "rule": In(RULE), "w_next": Out(signed(wb))})

    def elaborate(self, platform):
        m = Module()
        c, r = self.config, self.rule
        prod = signed(LEARN_RATE_BITS + TRACE_BITS + 1)   # 8-bit signed x 7-bit unsigned, exact
        ltp, ltd = Signal(prod), Signal(prod)
        m.d.comb += [ltp.eq((r.a_plus * self.x) >> r.s_plus),     # arithmetic: floor toward -inf
                     ltd.eq((r.a_minus * self.y) >> r.s_minus)]
        total = Signal(signed(max(c.weight_bits, prod.width) + 2))
        m.d.comb += total.eq(self.w + Mux(self.y0, ltp, 0) - Mux(self.x0, ltd, 0))
        with m.If(total > c.weight_max):
            m.d.comb += self.w_next.eq(c.weight_max)
        with m.Elif(total < c.weight_min):
            m.d.comb += self.w_next.eq(c.weight_min)
        with m.Else():
            m.d.comb += self.w_next.eq(total)
        return m


# ---------------------------------------------------------------------------------------------
# stages wired into LifCore (x: the core's namespace of shared signals)
# ---------------------------------------------------------------------------------------------
def _memory(m, name, shape, depth):
    """A memory of at least two rows (Verilog has no 0-bit address) with one read and one write port."""
    mem = memory.Memory(shape=shape, depth=max(2, depth), init=[])
    m.submodules[f"mem_{name}"] = mem
    wr = mem.write_port()
    return mem, mem.read_port(), wr


def learn_memories(m, x):
    """PRE_TRACE, the two ``pend`` banks, POST_TRACE, the spike bits; the LEARN_CFG/LEARN_RULE registers."""
    L = x.learn
    L.pre_mem, L.pre_rd, L.pre_wr = _memory(m, "pre_trace", PRE_STORAGE, x.A)
    L.pend = [_memory(m, f"pend{b}", 1, x.A) for b in range(2)]
    # per bank: a second pend read port (the E stage's test-and-set) and the list of the axons set
    L.pend_rd2 = [mem.read_port(transparent_for=(wr,)) for mem, _, wr in L.pend]
    L.plist = [_memory(m, f"pend_list{b}", range(max(2, x.A)), x.A) for b in range(2)]
    L.pcount = [Signal(range(x.A + 1), name=f"pend_count{b}") for b in range(2)]
    L.pfull = [Signal(name=f"pend_unlisted{b}") for b in range(2)]   # a bit set that the list may lack
    L.post_mem, L.post_rd, L.post_wr = _memory(m, "post_trace", POST_STORAGE, x.N)
    L.spk_mem, L.spk_rd, L.spk_wr = _memory(m, "spk", 1, x.N)
    L.trace_cfg = [Signal(TRACE_CFG, name=f"learn_cfg{k}") for k in range(2)]   # 0: x (pre), 1: y (post)
    L.rule = Signal(RULE, name="learn_rule")
    L.rd_addr0 = Signal()   # the word of LEARN_CFG a READ asked for, one clock later
    L.units = LearnUnits(m, x.c)


class LearnUnits:
    """The arithmetic units of one core's learning engine (two trace steps, one STDP update)."""

    def __init__(self, m, config):
        m.submodules.x_trace = self.x_trace = TraceStep()
        m.submodules.y_trace = self.y_trace = TraceStep()
        m.submodules.stdp = self.stdp = StdpUpdate(config)


def learn_axon_sweep(m, x):
    """RUN: take ``p = pend[cur][a]`` and clear it; with ``enable`` step ``x``/``x0`` of every axon.

    With ``enable = 1`` (or when bank ``cur`` has a bit its list may lack) the sweep visits every
    axon ``0..A-1``; with ``enable = 0`` only the axons listed in ``plist[cur]`` (the axons the
    ``E`` stage set), so a learning chip that does not learn keeps the step of §12.4.
    """
    L, phase, cur = x.learn, x.phase, x.cur
    sw_a = Signal(range(x.A + 1))
    sw_valid, sw_n = Signal(), Signal(range(max(2, x.A)))
    sw_len, sw_all = Signal(range(x.A + 1)), Signal()   # latched as RUN begins
    issue = (phase == x.Phase.RUN) & (sw_a < sw_len)
    with m.If(phase == x.Phase.START):
        m.d.sync += sw_a.eq(0)
        with m.If(x.syn_empty):   # -> RUN: every event of bank cur is in (pend set, listed)
            every = L.rule.enable | Mux(cur, L.pfull[1], L.pfull[0])
            m.d.sync += [sw_all.eq(every), sw_len.eq(Mux(every, x.A, Mux(cur, L.pcount[1], L.pcount[0])))]
            for b in range(2):
                with m.If(cur == b):
                    m.d.sync += [L.pcount[b].eq(0), L.pfull[b].eq(0)]
    with m.If(issue):
        m.d.sync += sw_a.eq(sw_a + 1)
    m.d.sync += [sw_valid.eq(issue), sw_n.eq(sw_a)]
    p = Signal()
    m.d.comb += p.eq(Mux(cur, L.pend[1][1].data, L.pend[0][1].data))
    tx = L.units.x_trace
    m.d.comb += [tx.z.eq(L.pre_rd.data.x), tx.decay.eq(L.trace_cfg[0].decay),
                 tx.impulse.eq(L.trace_cfg[0].impulse), tx.s.eq(p)]
    L.sw_a, L.sw_valid, L.sw_n, L.sw_p, L.sw_all = sw_a, sw_valid, sw_n, p, sw_all
    x.sweep_busy = issue | sw_valid


def _epoch_boundary(x):
    """``T[d] mod 2^epoch_log2 == 0`` for the core's domain timestep of this step (§24.4 step 5)."""
    mask = Signal(EPOCH_T_BITS)
    return mask, (x.t_dom & mask) == 0


def learn_phase(m, x):
    """LEARN: the pass (at an epoch boundary) through the synapse walker, then the neuron walk."""
    L, phase = x.learn, x.phase
    in_learn = phase == x.Phase.LEARN
    L.in_learn = in_learn
    mask, boundary_now = _epoch_boundary(x)
    m.d.comb += mask.eq((1 << L.rule.epoch_log2) - 1)
    L.boundary, L.in_pass = Signal(), Signal()
    L.lp_a = Signal(range(x.A + 1))
    L.ax_a = Signal(range(max(2, x.A)))      # the axon whose AXON/PRE_TRACE words are on the read ports
    L.w_x, L.w_x0 = Signal(TRACE_BITS), Signal()
    L.yi = Signal(range(x.N + 1))
    L.y_valid, L.y_n = Signal(), Signal(x.nrange)
    L.lp_issue = in_learn & L.in_pass & (L.lp_a < x.A) & x.ax_en
    with m.If((phase == x.Phase.COMMIT) & x.syn_empty & L.rule.enable):
        m.d.sync += [phase.eq(x.Phase.LEARN), L.boundary.eq(boundary_now), L.in_pass.eq(boundary_now),
                     L.lp_a.eq(0), L.yi.eq(0)]
    _learn_pass_control(m, x)
    _learn_neuron_walk_control(m, x)


def _learn_pass_control(m, x):
    """The pass: axons into the ``E`` stage one after another; ``x0`` cleared as each is taken."""
    L = x.learn
    with m.If(L.lp_issue):
        m.d.comb += x.ax_fill.eq(1)
        m.d.sync += [L.lp_a.eq(L.lp_a + 1), L.ax_a.eq(L.lp_a)]
    with m.If(L.in_learn):
        # one bubble between two lists: an entry shared by consecutive axons is read after its write
        m.d.comb += x.ax_take.eq(x.ax_valid & ~x.w_active)
        with m.If(x.ax_take):
            m.d.sync += [L.w_x.eq(L.pre_rd.data.x), L.w_x0.eq(L.pre_rd.data.x0)]
        with m.If(L.in_pass & (L.lp_a == x.A) & x.syn_empty):
            m.d.sync += L.in_pass.eq(0)
    # the pair's operands, alongside the walker's SYN read (S2) and the weight write (S3)
    L.s2_k, L.s3_k = Signal(range(max(2, x.S))), Signal(range(max(2, x.S)))
    L.s3_w, L.s3_fixed = Signal(signed(x.c.weight_bits)), Signal()
    L.s3_x, L.s3_x0 = Signal(TRACE_BITS), Signal()
    m.d.sync += [L.s2_k.eq(x.w_ptr), L.s3_k.eq(L.s2_k), L.s3_w.eq(x.syn.weight), L.s3_fixed.eq(x.syn.fixed),
                 L.s3_x.eq(L.w_x), L.s3_x0.eq(L.w_x0)]


def _learn_neuron_walk_control(m, x):
    """After the pass: every neuron's ``y`` and ``y0``; then IDLE."""
    L = x.learn
    L.y_issue = L.in_learn & ~L.in_pass & (L.yi < x.N)
    with m.If(L.y_issue):
        m.d.sync += L.yi.eq(L.yi + 1)
    m.d.sync += [L.y_valid.eq(L.y_issue), L.y_n.eq(L.yi)]
    with m.If(L.in_learn & ~L.in_pass & (L.yi == x.N) & ~L.y_valid):
        m.d.sync += x.phase.eq(x.Phase.IDLE)


def _spike_bit(x, spk, n):
    """The step's spike of neuron ``n`` (a neuron >= n_active was not updated: its stale bit is not a spike)."""
    return spk & (n < x.n_active)


def learn_ports(m, x):
    """Every port of the learning memories: configuration defaults, then the datapath overrides."""
    _learn_config_ports(m, x)
    _learn_pend_events(m, x)
    _learn_run_ports(m, x)
    _learn_pass_ports(m, x)
    _learn_walk_ports(m, x)
    _learn_clear_ports(m, x)


def _learn_config_ports(m, x):
    """READ/WRITE of PRE_TRACE (pend: the value to bank cur, 0 to cur^1), POST_TRACE and the registers."""
    L, req, cur = x.learn, x.req, x.cur
    pre_w = _stored(x, LearnRegion.PRE_TRACE, req.data)
    post_w = _stored(x, LearnRegion.POST_TRACE, req.data)
    wr_pre = x.take_write & (req.region == LearnRegion.PRE_TRACE)
    m.d.comb += [L.pre_rd.addr.eq(req.addr), L.pre_rd.en.eq(1), L.pre_wr.addr.eq(req.addr),
                 L.pre_wr.data.x.eq(pre_w.x), L.pre_wr.data.x0.eq(pre_w.x0), L.pre_wr.en.eq(wr_pre),
                 L.post_rd.addr.eq(req.addr), L.post_rd.en.eq(1), L.post_wr.addr.eq(req.addr),
                 L.post_wr.data.y.eq(post_w.y), L.post_wr.data.y0.eq(post_w.y0),
                 L.post_wr.en.eq(x.take_write & (req.region == LearnRegion.POST_TRACE)),
                 L.spk_rd.addr.eq(req.addr), L.spk_rd.en.eq(1)]
    for b, (_, rd, wr) in enumerate(L.pend):
        m.d.comb += [rd.addr.eq(req.addr), rd.en.eq(1), wr.addr.eq(req.addr),
                     wr.data.eq(Mux(cur == b, pre_w.pend, 0)), wr.en.eq(wr_pre)]
        with m.If(wr_pre & pre_w.pend & (cur == b)):   # a bit the list lacks: the next sweep visits all
            m.d.sync += L.pfull[b].eq(1)
    cfg_w = _stored(x, LearnRegion.LEARN_CFG, req.data)
    rule_w = _stored(x, LearnRegion.LEARN_RULE, req.data)
    for k in range(2):
        with m.If(x.take_write & (req.region == LearnRegion.LEARN_CFG) & (req.addr == k)):
            m.d.sync += [L.trace_cfg[k].decay.eq(cfg_w.decay), L.trace_cfg[k].impulse.eq(cfg_w.impulse)]
    with m.If(x.take_write & (req.region == LearnRegion.LEARN_RULE)):
        m.d.sync += [getattr(L.rule, f).eq(getattr(rule_w, f)) for f in RULE.members.keys()]
    m.d.sync += L.rd_addr0.eq(req.addr[0])


def _stored(x, region, word_bits):
    """The field view of a (validated) 32-bit word of a learning region."""
    return data.View(region_layout(region, x.c), word_bits)


def _learn_pend_events(m, x):
    """``E``: an accepted event sets ``pend`` of its axon in bank ``syn_bank`` (the ACC bank it adds
    into): the bit is read as the event is accepted and, one clock later, set; an axon whose bit
    was 0 is appended to the bank's list (a full list marks the bank for a whole sweep instead)."""
    L = x.learn
    pe_valid, pe_bank, pe_axon = Signal(), Signal(), Signal(range(max(2, x.A)))
    accepted = x.events.valid & x.events.ready
    m.d.sync += [pe_valid.eq(accepted), pe_bank.eq(x.syn_bank), pe_axon.eq(x.events.payload.axon)]
    for b, (_, _, wr) in enumerate(L.pend):
        m.d.comb += L.pend_rd2[b].addr.eq(x.events.payload.axon)   # transparent: sees the set of the clock
        _, _, lwr = L.plist[b]
        with m.If(pe_valid & (pe_bank == b)):
            m.d.comb += [wr.addr.eq(pe_axon), wr.data.eq(1), wr.en.eq(1)]
            with m.If(~L.pend_rd2[b].data):
                with m.If(L.pcount[b] == x.A):
                    m.d.sync += L.pfull[b].eq(1)
                with m.Else():
                    m.d.comb += [lwr.addr.eq(L.pcount[b]), lwr.data.eq(pe_axon), lwr.en.eq(1)]
                    m.d.sync += L.pcount[b].eq(L.pcount[b] + 1)


def _learn_run_ports(m, x):
    """RUN: the axon sweep on PRE_TRACE and bank cur of ``pend``; ``U2`` writes the spike bits."""
    L = x.learn
    with m.If(x.phase == x.Phase.RUN):
        m.d.comb += L.pre_rd.addr.eq(L.sw_a)
        for b, (_, rd, wr) in enumerate(L.pend):
            lrd = L.plist[b][1]
            with m.If(x.cur == b):
                m.d.comb += [rd.addr.eq(L.sw_a), lrd.addr.eq(L.sw_a), wr.data.eq(0), wr.en.eq(L.sw_valid),
                             wr.addr.eq(Mux(L.sw_all, L.sw_n, lrd.data))]
        with m.If(L.sw_valid & L.rule.enable):
            m.d.comb += [L.pre_wr.addr.eq(L.sw_n), L.pre_wr.en.eq(1),
                         L.pre_wr.data.x.eq(L.units.x_trace.z_next),
                         L.pre_wr.data.x0.eq(L.pre_rd.data.x0 | L.sw_p)]
        m.d.comb += [L.spk_wr.addr.eq(x.u2_n), L.spk_wr.data.eq(x.fire), L.spk_wr.en.eq(x.u2_valid)]


def _learn_pass_ports(m, x):
    """LEARN pass: AXON/PRE_TRACE at the next axon, POST_TRACE at the S2 target, the SYN write at S3."""
    L = x.learn
    rd, wr, acc_wr = x.rd, x.wr, x.acc_wr
    with m.If(L.in_learn):
        m.d.comb += [rd[Region.AXON].addr.eq(L.lp_a), L.pre_rd.addr.eq(L.lp_a), L.pre_rd.en.eq(x.ax_en),
                     L.post_rd.addr.eq(x.syn.target), L.spk_rd.addr.eq(x.syn.target)]
        for b in range(2):
            m.d.comb += acc_wr[b].en.eq(0)          # the pass adds nothing into ACC
        with m.If(x.ax_take):                       # x0 = 0 as the axon's list is taken (§24.4 step 5)
            m.d.comb += [L.pre_wr.addr.eq(L.ax_a), L.pre_wr.en.eq(1), L.pre_wr.data.x.eq(L.pre_rd.data.x),
                         L.pre_wr.data.x0.eq(0)]
        stdp, post = L.units.stdp, L.post_rd.data
        m.d.comb += [stdp.w.eq(L.s3_w), stdp.x.eq(L.s3_x), stdp.x0.eq(L.s3_x0), stdp.y.eq(post.y),
                     stdp.y0.eq(post.y0 | _spike_bit(x, L.spk_rd.data, x.s3_target)), stdp.rule.eq(L.rule)]
        with m.If(x.s3_valid & ~L.s3_fixed):
            m.d.comb += [wr[Region.SYN].addr.eq(L.s3_k), wr[Region.SYN].en.eq(1),
                         wr[Region.SYN].data.target.eq(x.s3_target), wr[Region.SYN].data.weight.eq(stdp.w_next),
                         wr[Region.SYN].data.fixed.eq(0)]


def _learn_walk_ports(m, x):
    """LEARN neuron walk: ``y = trace_step(y, LEARN_CFG[1], s)``, ``y0 = boundary ? 0 : y0 | s``."""
    L = x.learn
    ty, post = L.units.y_trace, L.post_rd.data
    s = _spike_bit(x, L.spk_rd.data, L.y_n)
    m.d.comb += [ty.z.eq(post.y), ty.decay.eq(L.trace_cfg[1].decay), ty.impulse.eq(L.trace_cfg[1].impulse),
                 ty.s.eq(s)]
    with m.If(L.y_issue):
        m.d.comb += [L.post_rd.addr.eq(L.yi), L.spk_rd.addr.eq(L.yi)]
    with m.If(L.in_learn & L.y_valid):
        m.d.comb += [L.post_wr.addr.eq(L.y_n), L.post_wr.en.eq(1), L.post_wr.data.y.eq(ty.z_next),
                     L.post_wr.data.y0.eq(~L.boundary & (post.y0 | s))]


def _learn_clear_ports(m, x):
    """CLEAR (RESET core): zero every learning memory row and, at the end, the registers."""
    L = x.learn
    with m.If(x.phase == x.Phase.CLEAR):
        for mem, wr in ((L.pre_mem, L.pre_wr), (L.post_mem, L.post_wr), (L.spk_mem, L.spk_wr),
                        *((mem, wr) for mem, _, wr in L.pend)):
            m.d.comb += [wr.addr.eq(x.sweep), wr.data.eq(0), wr.en.eq(x.sweep < mem.depth)]
        with m.If(x.sweep == max(x.A, x.S, x.N, x.F) - 1):
            m.d.sync += [L.trace_cfg[0].eq(0), L.trace_cfg[1].eq(0), L.rule.eq(0),
                         *(c.eq(0) for c in (*L.pcount, *L.pfull))]


def learn_read_cases(m, x, rsp):
    """The READ responses of regions 12-15 (inside the core's ``Switch(rd_region)``)."""
    L, c = x.learn, x.c
    with m.Case(LearnRegion.PRE_TRACE):
        w = Signal(region_layout(LearnRegion.PRE_TRACE, c))
        m.d.comb += [w.eq(0), w.x.eq(L.pre_rd.data.x), w.x0.eq(L.pre_rd.data.x0),
                     w.pend.eq(Mux(x.cur, L.pend[1][1].data, L.pend[0][1].data)), rsp.eq(w)]
    with m.Case(LearnRegion.POST_TRACE):
        w = Signal(region_layout(LearnRegion.POST_TRACE, c))
        m.d.comb += [w.eq(0), w.y.eq(L.post_rd.data.y), w.y0.eq(L.post_rd.data.y0), rsp.eq(w)]
    with m.Case(LearnRegion.LEARN_CFG):
        w = Signal(region_layout(LearnRegion.LEARN_CFG, c))
        k = Mux(L.rd_addr0, L.trace_cfg[1], L.trace_cfg[0])
        kv = data.View(TRACE_CFG, k)
        m.d.comb += [w.eq(0), w.decay.eq(kv.decay), w.impulse.eq(kv.impulse), rsp.eq(w)]
    with m.Case(LearnRegion.LEARN_RULE):
        w = Signal(region_layout(LearnRegion.LEARN_RULE, c))
        m.d.comb += w.eq(0)
        m.d.comb += [getattr(w, f).eq(getattr(L.rule, f)) for f in RULE.members.keys()]
        m.d.comb += rsp.eq(w)
