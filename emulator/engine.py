"""The timestep of B chip copies, written once against an array namespace ``xp``.

:class:`Engine` holds what the timestep touches — the neuron state, the
counters and the configuration tables decoded from the core memories — as
``xp`` arrays with a leading batch axis (copy ``b`` of ``B``), and runs the
timestep of docs/architecture.md §6 on all copies at once: the LIF update
(:func:`.lif.lif_step`), fan-out, translation, packet counters, synaptic
delivery and the packing of the step's output words.  With ``xp = numpy`` it is
the CPU engine, with ``xp = cupy`` the GPU engine: the same code (§15).

Everything the step needs from the configuration is decoded once per write
(:meth:`Engine.load_tables`) into flat gather tables, so a step is a fixed
sequence of whole-array operations with no Python loop over cores, neurons,
copies or packets:

* ``ax_start`` / ``ax_len``, per (copy, core, axon): the axon's synapse range as
  an index into the flattened synapse arrays of all copies;
* ``syn_tgt`` / ``syn_w``, per synapse: the flat index of the target neuron
  among all copies' neurons and the scaled weight (float64: every partial sum
  is an integer below 2^53, so ``bincount`` adds exactly);
* ``fo_start`` / ``fo_len``, per neuron: its fan-out range in the flattened
  fan-out arrays.

From the tables and the translation, :class:`Routes` resolves every fan-out
entry once (destination core, packet counters, synapse count) and, per
neuron, the concatenated synapse lists of all its translated fan-out entries,
so a spike's synaptic input is one contiguous gather.  When that expansion
would be much larger than the synapse memory (many fan-out entries sharing
long axons) the step falls back to the per-axon path that INJECT uses; both
give identical results.

On a chip built with ``ChipConfig.learning = 1`` the step also runs the learning engine of
§24 (:meth:`Engine._learn`): the pre events of the step (``pre_pend``, double-buffered like
``acc``), the traces ``pre_x``/``post_y`` and epoch flags, and at an epoch boundary the learning
pass over every (axon, synapse entry) pair (:class:`Pairs`, built once per table load), which
rewrites ``syn_wraw`` and the scaled weights; the command parser copies learned weights back
into its SYN words before anything reads or rewrites them.  With learning off nothing of this
exists or runs.

The command parser (:class:`.chip.Chip`) stays numpy/Python on the host; it
calls :meth:`load_tables`, :meth:`load_translation`, :meth:`inject` and
:meth:`step`.  The counting of a step (:meth:`Engine.spike_counts`,
:meth:`Engine.axon_event_counts`, :meth:`Engine.update_counts`) bins by a key: the
copy when stepping, one row per neuron or axon when :mod:`.fork` tabulates what a
single spike or event adds -- one counting code for both.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from neurovm.config import HV_VM, ChipConfig
from neurovm.formats import (
    FANOUT_SOURCE,
    LEARN_REGIONS,
    SYN_LEARNING,
    NUM_COUNTERS,
    OUTPUT_FORMATS,
    REGIONS,
    Counter,
    FaultOrigin,
    LearnRegion,
    OutType,
    Region,
)

from .lif import lif_step, scaled_weight, stdp_dw, trace_step, wrap_state
from .mesh import xy_route
from .xp import bincount, ranges, repeat, to_host

__all__ = ["Engine", "Tables", "LearnTables", "VCORE_SPACE"]

VCORE_SPACE = 256  # the 8-bit vcore field of fan-out entries
_SPIKE = OUTPUT_FORMATS[OutType.SPIKE]
_FAULT = OUTPUT_FORMATS[OutType.FAULT]
_STEP_END = OUTPUT_FORMATS[OutType.STEP_END].pack(type=OutType.STEP_END)


def _put(fmt, name: str, values):
    """``values`` placed in field ``name`` of ``fmt`` (any array namespace, or an int)."""
    f = fmt[name]
    return (values & ((1 << f.width) - 1)) << f.lsb


@dataclass
class Tables:
    """Configuration decoded for the step, ``xp`` arrays with a leading batch axis.

    Flat indices (``ax_start``, ``syn_tgt``, ``fo_start``) already include the
    copy and the core, so one gather serves every copy at once.
    """

    ax_start: object  # (B, C, A) int64: flat index of the axon's first synapse
    ax_len: object    # (B, C, A) int64
    syn_tgt: object   # (B, C, S) int64: flat index of the target neuron
    syn_w: object     # (B, C, S) float64: floor(w * 2^weight_exp) * 2^6
    du: object        # (B, C, N) int64 neuron parameters ...
    dv: object
    refract: object
    bias_mant: object
    bias_exp: object
    vth_mant: object
    fo_start: object  # (B, C, N) int64: flat index of the neuron's first fan-out entry
    fo_len: object    # (B, C, N) int64
    report: object    # (B, C, N) bool
    fo_axon: object   # (B, C, F) int64
    fo_vcore: object  # (B, C, F) int64
    fo_word: object   # (B, C, F) int64: the raw FANOUT word (reported in fan-out faults)
    n_active: object  # (B, C) int64
    active: object    # (B, C, N) bool: neuron index < n_active of its core


@dataclass
class LearnTables:
    """The learning engine's configuration (§24) decoded per core, ``xp`` arrays ``(B, C)``,
    and the per-synapse ``plastic`` mask ``(B, C, S)`` (the SYN ``fixed`` bit inverted)."""

    enable: object      # bool: LEARN_RULE.enable
    epoch_mask: object  # 2^epoch_log2 - 1: a learning pass when T[d] & epoch_mask == 0
    a_plus: object
    a_minus: object
    s_plus: object
    s_minus: object
    x_decay: object     # LEARN_CFG word 0
    x_imp: object
    y_decay: object     # LEARN_CFG word 1
    y_imp: object
    wexp: object        # CORE_CFG.weight_exp, to rescale a learned weight
    plastic: object     # (B, C, S) bool


@dataclass
class Pairs:
    """Every (axon, synapse entry) pair of the axon tables, in the order of the learning pass:
    axon ascending, then the axon's list in order (§24.4).  Flat indices over all copies;
    ``rank`` counts earlier pairs of the same synapse entry (0 unless axon ranges overlap)."""

    axon: object
    syn: object
    tgt: object
    core: object
    rank: object
    n_ranks: int


@dataclass
class Routes:
    """Fan-out resolved through the translation, rebuilt after any table or translation change.

    Per fan-out entry (flat over copies, cores, entries): ``e_ok`` (translated),
    ``e_dest_core`` (flat (copy, core)), ``e_pair`` (``src_core * C + dest`` for the
    PACKETS_ROUTED matrix, ``B * C * C`` if it faults), ``e_synlen`` (synaptic operations it triggers, 0 if it
    faults), ``e_axon`` (flat destination axon).  Per neuron (flat): ``n_sent``,
    ``n_hops_x``, ``n_hops_y`` (packet counters of one spike), ``n_faults`` and,
    unless the expansion was too large (``syn_tgt is None``), the neuron's
    synapse list ``syn_start``/``syn_len`` into ``syn_tgt``/``syn_w``.
    """

    e_ok: object
    e_dest_core: object
    e_pair: object
    e_synlen: object
    e_axon: object
    n_sent: object
    n_hops_x: object
    n_hops_y: object
    n_faults: object
    syn_start: object = None
    syn_len: object = None
    syn_tgt: object = None
    syn_w: object = None
    syn_idx: object = None   # learning chips: the flat synapse entry of each syn_w, to refresh it


class Engine:
    """Neuron state, counters and decoded tables of ``batch`` chip copies, and their timestep.

    Parameters
    ----------
    config : ChipConfig
        The shape of every copy.
    batch : int
        Number of copies (``B``); every array has a leading axis of this length.
    xp : module
        The array namespace (numpy or CuPy) the state lives in and the step runs on.

    Attributes
    ----------
    u, v, ref, acc : (B, C, N) int64
        Neuron state of every copy.
    counters : (B, C, NUM_COUNTERS) int64
        Telemetry counters of every copy.
    """

    def __init__(self, config: ChipConfig, batch: int, xp):
        self.config, self.batch, self.xp = config, batch, xp
        c = config
        B, C, N = batch, c.num_cores, c.neurons_per_core
        self.u = xp.zeros((B, C, N), dtype=xp.int64)
        self.v = xp.zeros((B, C, N), dtype=xp.int64)
        self.ref = xp.zeros((B, C, N), dtype=xp.int64)
        self.acc = xp.zeros((B, C, N), dtype=xp.int64)
        self.counters = xp.zeros((B, C, NUM_COUNTERS), dtype=xp.int64)
        self.tables = self._empty_tables()
        self.lut = xp.full((B, C, VCORE_SPACE), -1, dtype=xp.int64)
        self.dom_vm = xp.full((B, C), HV_VM, dtype=xp.int64)
        self.dom_vc = xp.asarray(np.broadcast_to(np.arange(C, dtype=np.int64), (B, C)).copy())
        self._route = xp.asarray(self._route_matrix())
        self._xy = xp.asarray(np.array([c.core_xy(p) for p in range(C)], dtype=np.int64))
        self._injected: list[int] = []
        self._routes: Routes | None = None
        self.learning = bool(c.learning)
        if self.learning:
            self._init_learning()

    # ------------------------------------------------------------------
    # tables
    # ------------------------------------------------------------------
    def _empty_tables(self) -> Tables:
        c, xp = self.config, self.xp
        B, C, N = self.batch, c.num_cores, c.neurons_per_core
        shape = {"ax_start": c.axons_per_core, "ax_len": c.axons_per_core, "syn_tgt": c.synapses_per_core,
                 "fo_axon": c.fanout_per_core, "fo_vcore": c.fanout_per_core, "fo_word": c.fanout_per_core}
        arrays = {}
        for f in fields(Tables):
            dtype = {"syn_w": xp.float64, "report": bool, "active": bool}.get(f.name, xp.int64)
            size = shape.get(f.name, c.synapses_per_core if f.name == "syn_w" else N)
            arrays[f.name] = xp.zeros((B, C) if f.name == "n_active" else (B, C, size), dtype=dtype)
        return Tables(**arrays)

    def _init_learning(self) -> None:
        """Trace state (§24.2), the raw weights learning rewrites, and the learning tables."""
        xp, c = self.xp, self.config
        B, C, N, A, S = self.batch, c.num_cores, c.neurons_per_core, c.axons_per_core, c.synapses_per_core
        for name in ("pre_x", "pre_x0", "pre_pend"):
            setattr(self, name, xp.zeros((B, C, A), dtype=xp.int64))
        for name in ("post_y", "post_y0"):
            setattr(self, name, xp.zeros((B, C, N), dtype=xp.int64))
        self.syn_wraw = xp.zeros((B, C, S), dtype=xp.int64)
        arrays = {f.name: xp.zeros((B, C), dtype=xp.int64) for f in fields(LearnTables)}
        arrays["enable"] = xp.zeros((B, C), dtype=bool)
        arrays["plastic"] = xp.zeros((B, C, S), dtype=bool)
        self.learn = LearnTables(**arrays)
        self._pairs: Pairs | None = None
        #: per copy: a learning pass changed weights the host copy of SYN does not have yet
        self.weights_changed = np.zeros(B, dtype=bool)

    def load_tables(self, copies: np.ndarray, mem: dict) -> None:
        """Decode the core memories of ``copies`` (host indices) into the step's tables.

        ``mem[region]`` is the host array ``(B, C, size)`` of raw memory words.
        """
        c, xp, t = self.config, self.xp, self.tables
        C, N, S, F = c.num_cores, c.neurons_per_core, c.synapses_per_core, c.fanout_per_core
        copies = np.asarray(copies, dtype=np.int64)
        core_id = copies[:, None, None] * C + np.arange(C)[None, :, None]  # flat (copy, core)

        def get(region, name):
            return REGIONS[region].fmt[name].get(mem[region][copies])

        wexp = get(Region.CORE_CFG, "weight_exp")[:, :, :1]
        n_active = get(Region.CORE_CFG, "n_active")[:, :, 0]
        host = {
            "ax_start": core_id * S + get(Region.AXON, "syn_start"),
            "ax_len": get(Region.AXON, "syn_len"),
            "syn_tgt": core_id * N + get(Region.SYN, "target"),
            "syn_w": scaled_weight(get(Region.SYN, "weight"), wexp).astype(np.float64),
            "du": get(Region.NRN_DECAY, "du"),
            "dv": get(Region.NRN_DECAY, "dv"),
            "refract": get(Region.NRN_DECAY, "refract"),
            "bias_mant": get(Region.NRN_BIAS, "bias_mant"),
            "bias_exp": get(Region.NRN_BIAS, "bias_exp"),
            "vth_mant": get(Region.NRN_VTH, "vth_mant"),
            "fo_start": core_id * F + get(Region.FANOUT_PTR, "fo_start"),
            "fo_len": get(Region.FANOUT_PTR, "fo_len"),
            "report": get(Region.FANOUT_PTR, "report").astype(bool),
            "fo_axon": get(Region.FANOUT, "axon"),
            "fo_vcore": get(Region.FANOUT, "vcore"),
            "fo_word": mem[Region.FANOUT][copies].astype(np.int64),
            "n_active": n_active,
            "active": np.arange(N)[None, None, :] < n_active[:, :, None],
        }
        index = xp.asarray(copies)
        for name, values in host.items():
            getattr(t, name)[index] = xp.asarray(values)
        self._routes = None
        if self.learning:
            self._load_learning(copies, mem, wexp[:, :, 0])

    def _load_learning(self, copies: np.ndarray, mem: dict, wexp: np.ndarray) -> None:
        """Decode LEARN_RULE, LEARN_CFG and the SYN ``fixed`` bits of ``copies`` (§24.1)."""
        xp, L = self.xp, self.learn
        rule_fmt, cfg_fmt = LEARN_REGIONS[LearnRegion.LEARN_RULE].fmt, LEARN_REGIONS[LearnRegion.LEARN_CFG].fmt
        rule = mem[LearnRegion.LEARN_RULE][copies][:, :, 0]
        trace_cfg = mem[LearnRegion.LEARN_CFG][copies]
        syn = mem[Region.SYN][copies]
        host = {name: rule_fmt[name].get(rule) for name in ("a_plus", "a_minus", "s_plus", "s_minus")}
        host["enable"] = rule_fmt["enable"].get(rule).astype(bool)
        host["epoch_mask"] = (1 << rule_fmt["epoch_log2"].get(rule)) - 1
        for name, word in (("x", 0), ("y", 1)):
            host[f"{name}_decay"] = cfg_fmt["decay"].get(trace_cfg[:, :, word])
            host[f"{name}_imp"] = cfg_fmt["impulse"].get(trace_cfg[:, :, word])
        host["wexp"] = wexp
        host["plastic"] = SYN_LEARNING.fmt["fixed"].get(syn) == 0
        index = xp.asarray(copies)
        for name, values in host.items():
            getattr(L, name)[index] = xp.asarray(values)
        self.syn_wraw[index] = xp.asarray(SYN_LEARNING.fmt["weight"].get(syn))
        self.weights_changed[copies] = False
        self._pairs = None

    def pairs(self) -> Pairs:
        """The (axon, synapse entry) pairs of the learning pass, rebuilt after a table change."""
        if self._pairs is None:
            xp, t = self.xp, self.tables
            lens = t.ax_len.reshape(-1)
            syn = ranges(xp, t.ax_start.reshape(-1), lens)
            axon = repeat(xp, xp.arange(lens.size, dtype=xp.int64), lens)
            order = xp.argsort(syn, kind="stable")          # pass order kept within each entry
            sorted_syn = syn[order]
            first = xp.searchsorted(sorted_syn, sorted_syn, side="left")
            rank = xp.zeros(syn.size, dtype=xp.int64)
            rank[order] = xp.arange(syn.size, dtype=xp.int64) - first
            n_ranks = int(rank.max()) + 1 if rank.size else 0
            self._pairs = Pairs(axon=axon, syn=syn, tgt=t.syn_tgt.reshape(-1)[syn],
                                core=axon // self.config.axons_per_core, rank=rank, n_ranks=n_ranks)
        return self._pairs

    def load_translation(self, copies: np.ndarray, lut: np.ndarray, dom_vm: np.ndarray, dom_vc: np.ndarray):
        """Install the fan-out translation (``lut``: destination pcore or ``-cause``) of ``copies``."""
        index = self.xp.asarray(np.asarray(copies, dtype=np.int64))
        self.lut[index] = self.xp.asarray(lut)
        self.dom_vm[index] = self.xp.asarray(dom_vm)
        self.dom_vc[index] = self.xp.asarray(dom_vc)
        self._routes = None

    # expansions larger than this many times the synapse memory fall back to the per-axon path
    MAX_EXPANSION = 4

    def routes(self) -> Routes:
        """The fan-out of every entry and neuron resolved through the current tables and translation."""
        if self._routes is None:
            self._routes = self._build_routes()
        return self._routes

    def _build_routes(self) -> Routes:
        """Resolve every fan-out entry, then concatenate each neuron's synapse lists (unless too large)."""
        xp, c, t = self.xp, self.config, self.tables
        B, C, N, F, A = self.batch, c.num_cores, c.neurons_per_core, c.fanout_per_core, c.axons_per_core
        n_neurons = B * C * N
        entry_core = xp.arange(B * C * F, dtype=xp.int64) // F           # flat (copy, core) of each entry
        dest = self.lut.reshape(-1)[entry_core * VCORE_SPACE + t.fo_vcore.reshape(-1)]
        ok = dest >= 0
        dest_pcore = xp.where(ok, dest, 0)
        dest_core = (entry_core // C) * C + dest_pcore
        axon = dest_core * A + t.fo_axon.reshape(-1)
        synlen = xp.where(ok, t.ax_len.reshape(-1)[axon], 0)
        hops = xp.abs(self._xy[entry_core % C] - self._xy[dest_pcore]) * ok[:, None]

        # every neuron's fan-out entries (only active neurons ever spike)
        fo_len = t.fo_len.reshape(-1) * t.active.reshape(-1)
        ref = ranges(xp, t.fo_start.reshape(-1), fo_len)
        owner = repeat(xp, xp.arange(n_neurons, dtype=xp.int64), fo_len)

        def per_neuron(values):
            return bincount(xp, owner, weights=values, minlength=n_neurons).astype(xp.int64)

        pair = xp.where(ok, entry_core * C + dest_pcore, B * C * C)  # failed entries: a spare bin
        routes = Routes(e_ok=ok, e_dest_core=dest_core, e_pair=pair, e_synlen=synlen,
                        e_axon=axon, n_sent=per_neuron(ok[ref].astype(xp.int64)), n_hops_x=per_neuron(hops[ref, 0]),
                        n_hops_y=per_neuron(hops[ref, 1]), n_faults=per_neuron((~ok[ref]).astype(xp.int64)))
        ref_len = synlen[ref]
        total = int(ref_len.sum())
        if total > self.MAX_EXPANSION * B * C * c.synapses_per_core:
            return routes
        syn = ranges(xp, t.ax_start.reshape(-1)[axon[ref]], ref_len)
        routes.syn_len = per_neuron(ref_len)
        routes.syn_start = xp.cumsum(routes.syn_len) - routes.syn_len
        routes.syn_tgt = t.syn_tgt.reshape(-1)[syn]
        routes.syn_w = t.syn_w.reshape(-1)[syn]
        if self.learning:
            routes.syn_idx = syn
        return routes

    def _route_matrix(self) -> np.ndarray:
        """(C*C, C) 0/1 matrix: row ``src*C + dst`` marks the routers on the XY route."""
        C = self.config.num_cores
        r = np.zeros((C * C, C), dtype=np.int64)
        for s in range(C):
            for d in range(C):
                r[s * C + d, xy_route(self.config, s, d)] = 1
        return r

    # ------------------------------------------------------------------
    # resets
    # ------------------------------------------------------------------
    def reset(self, b: int, core: int | None = None) -> None:
        """Zero the state and counters of copy ``b`` (one core of it if ``core`` is given)."""
        self.flush()
        sel = (b,) if core is None else (b, core)
        learning = (self.pre_x, self.pre_x0, self.pre_pend, self.post_y, self.post_y0) if self.learning else ()
        for arr in (self.u, self.v, self.ref, self.acc, self.counters, *learning):
            arr[sel] = 0

    # ------------------------------------------------------------------
    # synaptic delivery
    # ------------------------------------------------------------------
    def inject(self, b: int, core: int, axon: int) -> None:
        """Queue a host-injected axon event of copy ``b``; delivered before anything reads or
        writes state or tables (``acc`` adds wrap modulo 2^24, so the grouping is exact, §6.2)."""
        c = self.config
        self._injected.append((b * c.num_cores + core) * c.axons_per_core + axon)

    def flush(self) -> None:
        """Deliver every queued injection."""
        if self._injected:
            flat = self.xp.asarray(np.array(self._injected, dtype=np.int64))
            self._injected.clear()
            self.deliver(flat)

    def deliver(self, flat_axon, count_syn_ops: bool = True) -> None:
        """Perform the synaptic operations of axon events (flat (copy, core, axon) indices) into ``acc``,
        counting them (SYN_OPS, BUSY_CYCLES of the destination core) unless ``count_syn_ops`` is False."""
        if flat_axon.size == 0:
            return
        xp, c, t = self.xp, self.config, self.tables
        if count_syn_ops:
            copy = flat_axon // (c.num_cores * c.axons_per_core)
            self.counters += self.axon_event_counts(flat_axon, copy, self.batch)
        lens = t.ax_len.reshape(-1)[flat_axon]
        syn = ranges(xp, t.ax_start.reshape(-1)[flat_axon], lens)
        self._accumulate(t.syn_tgt.reshape(-1)[syn], t.syn_w.reshape(-1)[syn])
        self._mark_pending(flat_axon)

    def _mark_pending(self, flat_axon) -> None:
        """Learning chips: the axons (flat (copy, core, axon)) got an event for the next step (PRE_TRACE.pend)."""
        if self.learning and flat_axon.size:
            pend = self.pre_pend.reshape(-1)
            pend[flat_axon] = 1
            self.pre_pend = pend.reshape(self.pre_pend.shape)

    def axon_event_counts(self, flat_axon, key, n_keys: int):
        """Counter increments ``(n_keys, C, NUM_COUNTERS)`` of axon events (flat (copy, core, axon)
        indices): SYN_OPS and BUSY_CYCLES of the axon's core, in row ``key`` of each event
        (its copy when stepping; its own position when :mod:`.fork` tabulates one event per row)."""
        xp, c = self.xp, self.config
        C = c.num_cores
        lens = self.tables.ax_len.reshape(-1)[flat_axon]
        core_bin = key * C + (flat_axon // c.axons_per_core) % C
        syn_ops = bincount(xp, core_bin, weights=lens, minlength=n_keys * C).astype(xp.int64).reshape(n_keys, C)
        inc = xp.zeros((n_keys, C, NUM_COUNTERS), dtype=xp.int64)
        inc[:, :, Counter.SYN_OPS] = syn_ops
        inc[:, :, Counter.BUSY_CYCLES] = syn_ops
        return inc

    def _accumulate(self, target, weight) -> None:
        """``acc[target] += weight`` for every (flat target neuron, scaled weight) pair, wrapping."""
        if target.size == 0:
            return
        xp = self.xp
        # Exact: |w| < 2^21 and far fewer than 2^32 terms, so float64 sums stay integral.
        add = bincount(xp, target, weights=weight, minlength=self.acc.size)
        self.acc = wrap_state(self.acc + add.astype(xp.int64).reshape(self.acc.shape))

    # ------------------------------------------------------------------
    # the timestep
    # ------------------------------------------------------------------
    def step(self, running: np.ndarray | None, timestep: np.ndarray, cores: np.ndarray | None = None,
             spike_t: np.ndarray | None = None):
        """One timestep of the copies marked in ``running`` (all if None).

        Parameters
        ----------
        running : (B,) bool host array or None
            Copies that step; the others keep their state, counters and outputs.
        timestep : (B,) int64 host array
            Each copy's step counter ``T`` after its increment (what its STEP_END carries).
        cores : (B, C) bool host array, optional
            The stepping cores of each copy (a gated RUN, §6.1: the cores whose domain the RUN
            names); the others are frozen. None: every core of a running copy.
        spike_t : (B, C) int64 host array, optional
            The timestep a SPIKE of each core carries: ``T[d]`` of the core's domain. None: ``timestep``.

        Returns
        -------
        words, copy : numpy arrays
            The output words of the step of every running copy, in canonical order
            within each copy (§6.3), ``STEP_END(t)`` last, and the copy each word belongs to.
        """
        xp, t = self.xp, self.tables
        self.flush()
        stepping = xp.ones(t.n_active.shape, dtype=bool) if cores is None else xp.asarray(cores)
        if running is not None:
            stepping = stepping & xp.asarray(running)[:, None]
        update = t.active & stepping[:, :, None]
        pre = self._take_pending(stepping)
        spiked = self._update_neurons(update)
        n_active = t.n_active * stepping
        self.counters += self.update_counts(n_active)

        src = xp.flatnonzero(spiked)  # flat (copy, core, neuron), ascending: the order of §6.3
        routes = self.routes()
        lens = t.fo_len.reshape(-1)[src]
        entry = ranges(xp, t.fo_start.reshape(-1)[src], lens)  # the fan-out entries of this step's spikes
        if spike_t is None:
            spike_t = np.broadcast_to(np.asarray(timestep)[:, None], tuple(t.n_active.shape))
        words, copy = self._messages(src, *self._failed_entries(src, lens, entry, routes), spike_t)
        c = self.config
        self.counters += self.spike_counts(src, src // (c.num_cores * c.neurons_per_core), entry,
                                           entry // (c.num_cores * c.fanout_per_core), self.batch)
        if routes.syn_tgt is not None:
            syn = ranges(xp, routes.syn_start[src], routes.syn_len[src])
            self._accumulate(routes.syn_tgt[syn], routes.syn_w[syn])
            self._mark_pending(routes.e_axon[entry[routes.e_ok[entry]]])
        else:
            self.deliver(routes.e_axon[entry[routes.e_ok[entry]]], count_syn_ops=False)  # counted above
        if self.learning:   # after delivery: this step's events used the weights from before the pass (§24.4)
            self._learn(pre, spiked, stepping, spike_t)
        return self._append_step_end(words, copy, running, timestep)

    # ------------------------------------------------------------------
    # on-chip learning (§24)
    # ------------------------------------------------------------------
    def _take_pending(self, stepping):
        """The pre events this step integrates (PRE_TRACE.pend of the stepping cores, 0/1), cleared:
        the events delivered during the step set them again for the next step (the ACC's double buffer)."""
        if not self.learning:
            return None
        xp = self.xp
        mask = stepping[:, :, None]
        pre = self.pre_pend * mask
        self.pre_pend = xp.where(mask, 0, self.pre_pend)
        return pre

    def _learn(self, pre, spiked, stepping, spike_t) -> None:
        """Traces, epoch flags and, at an epoch boundary, the learning pass of the stepping cores whose
        LEARN_RULE.enable is set, in the order of §24.4: x and the flags, the pass, then y."""
        xp, L = self.xp, self.learn
        on = stepping & L.enable
        if not bool(on.any()):
            return
        on3 = on[:, :, None]
        post = spiked.astype(xp.int64)
        self.pre_x = xp.where(on3, trace_step(self.pre_x, L.x_decay[:, :, None], L.x_imp[:, :, None], pre),
                              self.pre_x)
        self.pre_x0 = xp.where(on3, self.pre_x0 | pre, self.pre_x0)
        self.post_y0 = xp.where(on3, self.post_y0 | post, self.post_y0)
        t = xp.asarray(np.ascontiguousarray(spike_t), dtype=xp.int64)
        passing = on & ((t & L.epoch_mask) == 0)
        if bool(passing.any()):
            self._learning_pass(passing)
            self.pre_x0 = xp.where(passing[:, :, None], 0, self.pre_x0)
            self.post_y0 = xp.where(passing[:, :, None], 0, self.post_y0)
        self.post_y = xp.where(on3, trace_step(self.post_y, L.y_decay[:, :, None], L.y_imp[:, :, None], post),
                               self.post_y)

    def _learning_pass(self, passing) -> None:
        """Add ``dw`` (:func:`.lif.stdp_dw`) to every plastic synapse of the ``passing`` cores, pair by
        pair in pass order, saturating at the weight range; refresh the scaled weights it changed."""
        xp, c, L, p = self.xp, self.config, self.learn, self.pairs()
        sel = passing.reshape(-1)[p.core] & L.plastic.reshape(-1)[p.syn]
        axon, syn, tgt, core, rank = p.axon[sel], p.syn[sel], p.tgt[sel], p.core[sel], p.rank[sel]
        dw = stdp_dw(self.pre_x.reshape(-1)[axon], self.pre_x0.reshape(-1)[axon],
                     self.post_y.reshape(-1)[tgt], self.post_y0.reshape(-1)[tgt],
                     L.a_plus.reshape(-1)[core], L.s_plus.reshape(-1)[core],
                     L.a_minus.reshape(-1)[core], L.s_minus.reshape(-1)[core])
        moved = dw != 0
        if not bool(moved.any()):
            return
        syn, rank, dw = syn[moved], rank[moved], dw[moved]
        weights = self.syn_wraw.reshape(-1)
        for r in range(p.n_ranks):        # entries reached by several axons: one update per axon, in order
            at = rank == r
            entries = syn[at]
            weights[entries] = xp.clip(weights[entries] + dw[at], c.weight_min, c.weight_max)
        self.syn_wraw = weights.reshape(self.syn_wraw.shape)
        self._rescale(syn)

    def _rescale(self, entries) -> None:
        """Scaled weights (``syn_w`` and the routes' copies) of the learned synapse entries."""
        xp, c, t = self.xp, self.config, self.tables
        S = c.synapses_per_core
        scaled = t.syn_w.reshape(-1)
        scaled[entries] = scaled_weight(self.syn_wraw.reshape(-1)[entries],
                                        self.learn.wexp.reshape(-1)[entries // S]).astype(xp.float64)
        t.syn_w = scaled.reshape(t.syn_w.shape)
        r = self._routes
        if r is not None and r.syn_idx is not None:
            r.syn_w = t.syn_w.reshape(-1)[r.syn_idx]
        self.weights_changed[np.unique(to_host(entries) // (c.num_cores * S))] = True

    def learned_weights(self, b: int) -> np.ndarray:
        """The raw weights ``(C, S)`` of copy ``b`` as learning left them (host int64)."""
        return to_host(self.syn_wraw[b]).astype(np.int64)

    def _failed_entries(self, src, lens, entry, routes: Routes):
        """Spiking neuron, fan-out entry and fault cause of every entry that failed translation (§7.3)."""
        xp, t = self.xp, self.tables
        if not int(routes.n_faults[src].sum()):
            empty = xp.zeros(0, dtype=xp.int64)
            return empty, empty, empty
        failed = ~routes.e_ok[entry]
        fault_src, fault_entry = repeat(xp, src, lens)[failed], entry[failed]
        fault_core = fault_src // self.config.neurons_per_core
        cause = -self.lut.reshape(-1)[fault_core * VCORE_SPACE + t.fo_vcore.reshape(-1)[fault_entry]]
        return fault_src, fault_entry, cause

    def _update_neurons(self, update):
        """LIF update of the neurons marked in ``update`` (``acc`` consumed); their spikes."""
        xp, t = self.xp, self.tables
        u, v, ref, spiked = lif_step(self.u, self.v, self.ref, self.acc, t.du, t.dv, t.bias_mant, t.bias_exp,
                                     t.vth_mant, t.refract)
        self.u = xp.where(update, u, self.u)
        self.v = xp.where(update, v, self.v)
        self.ref = xp.where(update, ref, self.ref)
        self.acc = xp.where(update, 0, self.acc)
        return spiked & update

    def _messages(self, src, fault_src, fault_entry, cause, spike_t):
        """SPIKE messages of reporting neurons and FAULT messages of failed fan-out entries,
        ordered per copy, per core, per neuron: its SPIKE, then its faults in entry order (§6.3)."""
        xp, c, t = self.xp, self.config, self.tables
        C, N, F = c.num_cores, c.neurons_per_core, c.fanout_per_core
        rep = src[t.report.reshape(-1)[src]]
        n_msgs = int(rep.size) + int(fault_src.size)
        if n_msgs == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        core = xp.concatenate([rep, fault_src]) // N
        neuron = xp.concatenate([rep, fault_src]) % N
        dom_vm, dom_vc = self.dom_vm.reshape(-1)[core], self.dom_vc.reshape(-1)[core]
        n_rep = int(rep.size)
        words = xp.zeros((n_msgs, 3), dtype=xp.int64)
        words[:n_rep, 0] = (_put(_SPIKE, "type", int(OutType.SPIKE)) | _put(_SPIKE, "vm", dom_vm[:n_rep])
                            | _put(_SPIKE, "vcore", dom_vc[:n_rep]) | _put(_SPIKE, "neuron", neuron[:n_rep]))
        words[:n_rep, 1] = xp.asarray(np.ascontiguousarray(spike_t)).reshape(-1)[core[:n_rep]]   # T of its domain
        words[n_rep:, 0] = (_put(_FAULT, "type", int(OutType.FAULT)) | _put(_FAULT, "vm", dom_vm[n_rep:])
                            | _put(_FAULT, "cause", cause) | _put(_FAULT, "origin", int(FaultOrigin.FANOUT)))
        words[n_rep:, 1] = t.fo_word.reshape(-1)[fault_entry]
        words[n_rep:, 2] = (_put(FANOUT_SOURCE, "vcore", dom_vc[n_rep:])
                            | _put(FANOUT_SOURCE, "neuron", neuron[n_rep:]))
        # one sort key per message: its neuron, then 0 for the SPIKE, 1 + entry for a fault
        key = xp.concatenate([rep * (F + 1), fault_src * (F + 1) + 1 + fault_entry % F])
        order = xp.argsort(key)
        n_words = xp.concatenate([xp.full(n_rep, 2, dtype=xp.int64), xp.full(n_msgs - n_rep, 3, dtype=xp.int64)])
        keep = xp.arange(3)[None, :] < n_words[order][:, None]
        copy = xp.broadcast_to((core // C)[order][:, None], (n_msgs, 3))
        return to_host(words[order][keep]), to_host(copy[keep])

    def update_counts(self, n_active):
        """Counter increments ``(..., C, NUM_COUNTERS)`` of one step's neuron updates: NEURON_UPDATES
        and BUSY_CYCLES of each core grow by its ``n_active`` (``(..., C)``)."""
        xp = self.xp
        inc = xp.zeros(tuple(n_active.shape) + (NUM_COUNTERS,), dtype=xp.int64)
        inc[..., Counter.NEURON_UPDATES] = n_active
        inc[..., Counter.BUSY_CYCLES] = n_active
        return inc

    def spike_counts(self, src, src_key, entry, entry_key, n_keys: int):
        """Counter increments ``(n_keys, C, NUM_COUNTERS)`` of the spikes ``src`` (flat neurons) and
        their fan-out entries ``entry`` (§9).

        Source side (core of the neuron): SPIKES_OUT, BUSY_CYCLES (fan-out work), PACKETS_SENT,
        HOPS_X, HOPS_Y.  Per entry: PACKETS_ROUTED of the routers on its XY route, SYN_OPS and
        BUSY_CYCLES of the destination core; failed entries count in neither (their ``e_synlen``
        is 0 and they are left out of the route matrix).  Each spike counts in row ``src_key``,
        each entry in row ``entry_key``: the copy when stepping, or one row per spiking neuron
        when :mod:`.fork` tabulates what a single spike of each neuron adds.
        """
        xp, c, routes = self.xp, self.config, self.routes()
        C, N = c.num_cores, c.neurons_per_core
        inc = xp.zeros((n_keys, C, NUM_COUNTERS), dtype=xp.int64)
        src_bin = src_key * C + (src // N) % C
        inc[:, :, Counter.SPIKES_OUT] = bincount(xp, src_bin, minlength=n_keys * C).reshape(n_keys, C)
        for counter, per_neuron in ((Counter.BUSY_CYCLES, self.tables.fo_len.reshape(-1)),
                                    (Counter.PACKETS_SENT, routes.n_sent), (Counter.HOPS_X, routes.n_hops_x),
                                    (Counter.HOPS_Y, routes.n_hops_y)):
            per_core = bincount(xp, src_bin, weights=per_neuron[src], minlength=n_keys * C)
            inc[:, :, counter] += per_core.astype(xp.int64).reshape(n_keys, C)
        if entry.size == 0:
            return inc
        ok = routes.e_ok[entry]
        pair = xp.where(ok, entry_key * (C * C) + routes.e_pair[entry] % (C * C), n_keys * C * C)
        pairs = bincount(xp, pair, minlength=n_keys * C * C + 1)[:-1].reshape(n_keys, C * C)
        inc[:, :, Counter.PACKETS_ROUTED] += pairs @ self._route
        dest_bin = entry_key * C + routes.e_dest_core[entry] % C
        syn_ops = bincount(xp, dest_bin, weights=routes.e_synlen[entry], minlength=n_keys * C)
        syn_ops = syn_ops.astype(xp.int64).reshape(n_keys, C)
        inc[:, :, Counter.SYN_OPS] += syn_ops
        inc[:, :, Counter.BUSY_CYCLES] += syn_ops
        return inc

    def _append_step_end(self, words, copy, running, timestep):
        """``STEP_END(t)`` of every running copy, after its messages."""
        stepped = np.arange(self.batch) if running is None else np.flatnonzero(running)
        end = np.empty((stepped.size, 2), dtype=np.int64)
        end[:, 0] = _STEP_END
        end[:, 1] = timestep[stepped]
        if words.size == 0:
            return end.reshape(-1), np.repeat(stepped, 2)
        # stable: each copy's messages keep their order and precede its STEP_END
        all_words = np.concatenate([words, end.reshape(-1)])
        all_copy = np.concatenate([copy, np.repeat(stepped, 2)])
        order = np.argsort(all_copy, kind="stable")
        return all_words[order], all_copy[order]

    # ------------------------------------------------------------------
    # footprint
    # ------------------------------------------------------------------
    def footprint(self) -> dict[str, int]:
        """Bytes of the arrays this engine holds on its device, by what they scale with.

        Keys: ``neuron`` (state, parameters, per-neuron fan-out and routes), ``synapse``
        (synapse tables and the per-neuron synapse lists of :class:`Routes`), ``axon``,
        ``fanout`` (fan-out tables and resolved entries) and ``fixed`` (counters,
        translation, the route matrix: per core or per chip).  Per-step temporaries
        (proportional to the step's spikes and synaptic events) are not included.
        """
        t = self.tables
        groups = {"neuron": [self.u, self.v, self.ref, self.acc, t.du, t.dv, t.refract, t.bias_mant, t.bias_exp,
                             t.vth_mant, t.fo_start, t.fo_len, t.report, t.active],
                  "synapse": [t.syn_tgt, t.syn_w], "axon": [t.ax_start, t.ax_len],
                  "fanout": [t.fo_axon, t.fo_vcore, t.fo_word],
                  "fixed": [self.counters, self.lut, self.dom_vm, self.dom_vc, self._route, self._xy, t.n_active]}
        if self.learning:
            groups["neuron"] += [self.post_y, self.post_y0]
            groups["axon"] += [self.pre_x, self.pre_x0, self.pre_pend]
            groups["synapse"] += [self.syn_wraw, self.learn.plastic]
        r = self._routes
        if r is not None:
            groups["neuron"] += [r.n_sent, r.n_hops_x, r.n_hops_y, r.n_faults]
            groups["fanout"] += [r.e_ok, r.e_dest_core, r.e_pair, r.e_synlen, r.e_axon]
            if r.syn_tgt is not None:
                groups["neuron"] += [r.syn_start, r.syn_len]
                groups["synapse"] += [r.syn_tgt, r.syn_w] + ([r.syn_idx] if r.syn_idx is not None else [])
        return {name: int(sum(a.nbytes for a in arrays)) for name, arrays in groups.items()}
