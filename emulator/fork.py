"""Many copies of one chip, forked from its current configuration and state, stepped as dense arrays.

``Chip.run_batch`` (:mod:`.chip`) is the fast path of a batched ``predict``: the
copies share one configuration (the model), only their inputs differ.  The
command path (``Chip(config, batch=B).feed_each``) parses every INJECT word in
Python, once per copy; here the injections of a step are a ``(copies, K)``
count matrix over ``K`` axons, and the step is a few whole-array operations on
``(copies, M)`` arrays of the ``M`` neurons that can change.

What the step computes is the engine's own (spec §6.4):

* the LIF update is :func:`.lif.lif_step`, on the active neurons;
* synaptic delivery is the sum, per target neuron, of the scaled weights of
  the synapse lists of the axons injected and of the spiking neurons' translated
  fan-out entries (the lists :class:`.engine.Engine` resolves).  Those lists are
  tabulated once as dense matrices (axon -> neuron, neuron -> neuron), so a
  step's delivery is a matrix product of the 0/1 spike (or injection count)
  matrix with them: the same integer sums as the engine's ``bincount``, exact
  in float64 (every partial sum is an integer below 2^53, §15), wrapped to 24
  bits the same way;
* the counters are linear in the spikes: :meth:`.engine.Engine.spike_counts`
  and :meth:`.engine.Engine.axon_event_counts` tabulate, with the engine's own
  counting code, what one spike of each neuron and one event of each axon add,
  and a step adds ``spikes @ table``.

Restriction: no active neuron may have a fan-out entry that fails translation
(FAULT messages are not produced here); :class:`ForkError` says which neuron.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from neurovm.formats import NUM_COUNTERS

from .lif import lif_step, wrap_state
from .xp import bincount, ranges, repeat, to_host

__all__ = ["BatchRun", "Fork", "ForkError"]

_STATE = ("u", "v", "ref", "acc")


def _single_blas_thread(xp):
    """On the CPU, run BLAS on one thread for the duration (threadpoolctl).

    The step's matrix products are small (copies x a few hundred neurons): a multi-threaded
    BLAS spends more time waking and spinning its threads than multiplying, up to 15x
    slower on a busy two-core machine (measured for BENCHMARKS.md).
    """
    if xp is not np:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class ForkError(ValueError):
    """A ``run_batch`` request the forked path cannot serve exactly; the message names why."""


@dataclass
class BatchRun:
    """What ``copies`` forked copies of a chip did in ``Chip.run_batch``.

    Attributes
    ----------
    spikes : (steps, copies, R) bool numpy array
        ``spikes[t, b, r]``: copy ``b`` sent a SPIKE message for reporting neuron ``r`` at
        step ``t`` of the run (0-based), i.e. the SPIKE words of the command path.
    spike_pcore, spike_neuron : (R,) int64
        Physical core and neuron index of each reporting neuron (active, report bit set).
    counters : (copies, C, NUM_COUNTERS) int64
        Each copy's telemetry counters after the run (the chip's before it, plus the run's).
    """

    spikes: np.ndarray
    spike_pcore: np.ndarray
    spike_neuron: np.ndarray
    counters: np.ndarray
    _final: dict
    _base: dict
    _pos: np.ndarray
    _neurons_per_core: int

    def counts(self) -> np.ndarray:
        """Spikes per copy and reporting neuron, ``(copies, R)``."""
        return self.spikes.sum(axis=0, dtype=np.int64)

    def energy_pj(self, model=None) -> np.ndarray:
        """Energy estimate of each copy's counters (all cores), ``(copies,)``, by ``model``
        (default :data:`~neurovm.emulator.energy.DEFAULT_ENERGY`): the per-copy telemetry."""
        from .energy import DEFAULT_ENERGY

        model = model or DEFAULT_ENERGY
        return np.array([model.energy_pj(c) for c in self.counters])

    def spike_columns(self, pcore, neuron) -> np.ndarray:
        """Column of ``spikes`` of each (pcore, neuron); :class:`ForkError` if one does not report."""
        key = np.asarray(pcore, dtype=np.int64) * self._neurons_per_core + np.asarray(neuron, dtype=np.int64)
        have = self.spike_pcore * self._neurons_per_core + self.spike_neuron
        order = np.argsort(have)
        at = np.searchsorted(have[order], key)
        at = np.minimum(at, max(have.size - 1, 0))
        if have.size == 0 or not np.array_equal(have[order][at], key):
            missing = key[~np.isin(key, have)][0]
            raise ForkError(f"core {missing // self._neurons_per_core} neuron {missing % self._neurons_per_core}"
                            " is not an active reporting neuron: it sends no SPIKE messages")
        return order[at]

    def state(self, name: str, pcore, neuron) -> np.ndarray:
        """Signed values of state ``name`` (``u``, ``v``, ``ref`` or ``acc``) of the given neurons,
        ``(copies, n)``: what READ of that state region returns, before the 32-bit mask."""
        if name not in _STATE:
            raise ForkError(f"state {name!r}: allowed are {', '.join(_STATE)}")
        pcore, neuron = np.broadcast_arrays(np.asarray(pcore, dtype=np.int64), np.asarray(neuron, dtype=np.int64))
        cores = self._pos.size // self._neurons_per_core
        for what, arr, limit in (("pcore", pcore, cores), ("neuron", neuron, self._neurons_per_core)):
            bad = (arr < 0) | (arr >= limit)
            if bad.any():
                raise ForkError(f"state {name!r}: {what} {int(arr[bad][0])} is outside 0..{limit - 1}")
        flat = (pcore * self._neurons_per_core + neuron).ravel()
        base = self._base[name][flat]
        pos = self._pos[flat]
        final = self._final[name]
        changed = (pos >= 0) & (pos < final.shape[1])
        out = np.broadcast_to(base, (self.spikes.shape[1], flat.size)).copy()
        out[:, changed] = final[:, pos[changed]]
        return out


class Fork:
    """``copies`` copies of copy ``source`` of an :class:`.engine.Engine`, as dense arrays.

    Parameters
    ----------
    engine : Engine
        With its tables and translation up to date and no queued injection.
    source : int
        The engine's copy to fork (0 for a single chip).
    copies : int
        How many copies.
    axons : (K, 2) int array
        The (physical core, axon) pairs that may be injected; injections are counts over them.
    """

    def __init__(self, engine, source: int, copies: int, axons: np.ndarray):
        self.engine, self.xp, self.copies = engine, engine.xp, int(copies)
        c = engine.config
        self.C, self.N = c.num_cores, c.neurons_per_core
        self._base = source * self.C * self.N              # flat index of the source copy's first neuron
        self._axon_flat = (source * self.C + axons[:, 0]) * c.axons_per_core + axons[:, 1]
        self._select_neurons(source)
        self._tabulate()

    # ---- set-up ------------------------------------------------------------------------------
    def _select_neurons(self, source: int) -> None:
        """The neurons that update and the state columns; refuse if an active neuron has a fan-out
        entry that fails translation.

        Updated: the active neurons, less the *quiescent* ones -- no synapse reaches them and
        their bias and state are zero, so their update keeps them at zero and they never spike
        (``v = 0`` is not above a threshold ``>= 0``): leaving them out changes nothing but the
        work (their NEURON_UPDATES are still counted).  State columns: the updated neurons,
        then the other synapse targets (only their ``acc`` changes).
        """
        xp, t, routes = self.xp, self.engine.tables, self.engine.routes()
        active = np.flatnonzero(to_host(t.active[source]).reshape(-1))            # within the copy
        g = xp.asarray(active + self._base)
        faults = to_host(routes.n_faults[g])
        if faults.any():
            k = int(active[np.argmax(faults > 0)])
            raise ForkError(f"core {k // self.N} neuron {k % self.N} has fan-out entries that fail translation "
                            "(they would send FAULT messages); run_batch does not produce FAULT messages: "
                            "use Chip(config, batch=B).feed_each")
        spike_syn = self._spike_synapses(g)
        self._inject_syn = self._synapses(xp.asarray(self._axon_flat),
                                          xp.arange(self._axon_flat.size, dtype=xp.int64))
        targets = np.unique(np.concatenate([to_host(spike_syn[1]), to_host(self._inject_syn[1])])) - self._base
        quiet = ~np.isin(active, targets) & (to_host(t.bias_mant.reshape(-1)[g]) == 0)
        for name in ("u", "v", "ref", "acc"):
            quiet &= to_host(getattr(self.engine, name).reshape(-1)[g]) == 0
        self.active = active[~quiet]
        self.src_g = xp.asarray(self.active + self._base)
        self._spike_syn = self._spike_synapses(self.src_g)
        self.neurons = np.concatenate([self.active, np.setdiff1d(targets, self.active)])   # state columns
        self.pos = np.full(self.C * self.N, -1, dtype=np.int64)
        self.pos[self.neurons] = np.arange(self.neurons.size)

    def _spike_synapses(self, g):
        """(row, flat target, scaled weight) of the synapses one spike of each neuron ``g`` reaches
        through its fan-out entries (row = position in ``g``); keeps the entries for the counters."""
        xp, t, routes = self.xp, self.engine.tables, self.engine.routes()
        self.fo_lens = t.fo_len.reshape(-1)[g]
        self.entries = ranges(xp, t.fo_start.reshape(-1)[g], self.fo_lens)
        ok = routes.e_ok[self.entries]
        owner = repeat(xp, xp.arange(g.size, dtype=xp.int64), self.fo_lens)[ok]
        return self._synapses(routes.e_axon[self.entries[ok]], owner)

    def _synapses(self, flat_axon, row):
        """(row, flat target, scaled weight) of every synapse of the axons ``flat_axon``."""
        xp, t = self.xp, self.engine.tables
        lens = t.ax_len.reshape(-1)[flat_axon]
        syn = ranges(xp, t.ax_start.reshape(-1)[flat_axon], lens)
        return repeat(xp, row, lens), t.syn_tgt.reshape(-1)[syn], t.syn_w.reshape(-1)[syn]

    def _dense(self, synapses, n_rows: int):
        """``(n_rows, M)``: summed scaled weights from each row to each state column."""
        xp = self.xp
        row, target, weight = synapses
        col = xp.asarray(self.pos)[target - self._base]
        m = self.neurons.size
        return bincount(xp, row * m + col, weights=weight, minlength=n_rows * m).reshape(n_rows, m)

    def _exact_dtype(self, table):
        """``table`` in float32 where a 0/1 row selection sums exactly in it (every column's absolute
        sum below 2^24: each partial sum is then an integer float32 holds), else float64."""
        xp = self.xp
        if table.size == 0 or float(xp.abs(table).sum(axis=0).max()) < (1 << 24):
            return table.astype(xp.float32)
        return table

    def _tabulate(self) -> None:
        """Delivery matrices, per-spike and per-event counter tables, parameters and initial state."""
        xp, e, t = self.xp, self.engine, self.engine.tables
        n_src, k = self.active.size, self._axon_flat.size
        self.w_spike = self._exact_dtype(self._dense(self._spike_syn, n_src))
        self.w_inject = self._dense(self._inject_syn, k)
        self.w_inject01 = self._exact_dtype(self.w_inject)     # for 0/1 (boolean) injections
        colsum = float(xp.abs(self.w_inject).sum(axis=0).max()) if self.w_inject.size else 0.0
        self.max_count = int((1 << 53) // max(colsum, 1.0))      # counts up to this sum exactly in float64
        rows = xp.arange(n_src, dtype=xp.int64)
        per_spike = e.spike_counts(self.src_g, rows, self.entries, repeat(xp, rows, self.fo_lens), n_src)
        self.c_spike = per_spike.reshape(n_src, self.C * NUM_COUNTERS).astype(xp.float64)
        axon_flat = xp.asarray(self._axon_flat)
        per_event = e.axon_event_counts(axon_flat, xp.arange(k, dtype=xp.int64), k)
        self.c_inject = per_event.reshape(k, self.C * NUM_COUNTERS).astype(xp.float64)
        source = self._base // (self.C * self.N)
        self.c_step = e.update_counts(t.n_active[source]).reshape(-1)
        g = self.src_g
        self.params = {name: getattr(t, name).reshape(-1)[g]
                       for name in ("du", "dv", "bias_mant", "bias_exp", "vth_mant", "refract")}
        self.report_cols = np.flatnonzero(to_host(t.report.reshape(-1)[g]))
        cols = xp.asarray(self.neurons + self._base)
        self.initial = {name: getattr(e, name).reshape(-1)[cols] for name in _STATE}
        self.counters0 = e.counters[source]

    # ---- running -------------------------------------------------------------------------------
    #: Copies are stepped in blocks of about this many state values per array, so that a block's
    #: arrays stay in the CPU's cache across the ~30 array operations of a step.
    BLOCK_VALUES = 1 << 16

    def run(self, steps: int, inject: Callable[[int], np.ndarray | None]) -> BatchRun:
        """Step every copy ``steps`` times; ``inject(t)`` gives the ``(copies, K)`` counts before step ``t``.

        The copies are independent, so they are stepped block by block (all steps of one block,
        then the next); on the GPU in one block.
        """
        xp, B, n_act = self.xp, self.copies, self.active.size
        u, v, ref = (xp.broadcast_to(self.initial[n][:n_act], (B, n_act)).copy() for n in ("u", "v", "ref"))
        acc = xp.broadcast_to(self.initial["acc"], (B, self.neurons.size)).copy()
        fired = xp.zeros((B, n_act), dtype=xp.int64)                 # spikes per copy and neuron
        injected = xp.zeros((B, self._axon_flat.size), dtype=xp.int64)  # events per copy and axon
        raster = np.zeros((steps, B, self.report_cols.size), dtype=bool)
        events = [inject(t) for t in range(steps)]
        size = B if xp is not np else max(1, self.BLOCK_VALUES // max(self.neurons.size, 1))
        with _single_blas_thread(xp):
            for lo in range(0, B, size):
                blk = slice(lo, min(lo + size, B))
                block_events = [None if e is None else e[blk] for e in events]
                u[blk], v[blk], ref[blk], acc[blk] = self._steps(
                    block_events, raster[:, blk], u[blk], v[blk], ref[blk], acc[blk], fired[blk], injected[blk])
        # the counters are linear in the spikes and events: one product with the per-spike and
        # per-event tables for the whole run (integer sums below 2^53: exact in float64)
        counts = fired.astype(xp.float64) @ self.c_spike + injected.astype(xp.float64) @ self.c_inject
        return self._result(steps, raster, counts, {"u": u, "v": v, "ref": ref, "acc": acc})

    def _steps(self, events: list, raster, u, v, ref, acc, fired, injected):
        """The step loop of :meth:`run` for one block of copies (``events[t]``: its injections
        before step ``t``, or None); fills ``raster`` and adds up ``fired`` and ``injected``;
        returns the final state."""
        xp, n_act, p = self.xp, self.active.size, self.params
        report = xp.asarray(self.report_cols)
        for step, ev in enumerate(events):
            if ev is not None:
                w = self.w_inject01 if ev.dtype == bool else self.w_inject
                ev = xp.asarray(ev)
                if ev.dtype != bool and ev.size and int(ev.max()) > self.max_count:
                    raise ForkError(f"run_batch: inject at step {step}: a count of {int(ev.max())} injections "
                                    f"of one axon; at most {self.max_count} sum exactly")
                acc += (ev.astype(w.dtype) @ w).astype(xp.int64)
                injected += ev
            u, v, ref, spiked = lif_step(u, v, ref, wrap_state(acc[:, :n_act]), p["du"], p["dv"], p["bias_mant"],
                                         p["bias_exp"], p["vth_mant"], p["refract"])
            delivered = (spiked.astype(self.w_spike.dtype) @ self.w_spike).astype(xp.int64)
            acc[:, :n_act] = delivered[:, :n_act]      # the updated neurons' acc was consumed
            acc[:, n_act:] += delivered[:, n_act:]
            fired += spiked
            raster[step] = to_host(spiked[:, report])
        # acc is wrapped where it is consumed and at the end: the same value modulo 2^24 as
        # wrapping after every addition (§6.2); unwrapped it stays far inside int64
        return u, v, ref, wrap_state(acc)

    def _result(self, steps, raster, counts, final) -> BatchRun:
        xp = self.xp
        inc = counts.astype(xp.int64) + steps * self.c_step
        counters = self.counters0.reshape(1, -1) + inc
        rep = self.active[self.report_cols]
        base = {name: to_host(getattr(self.engine, name).reshape(-1)[self._base:self._base + self.C * self.N])
                for name in _STATE}
        return BatchRun(spikes=raster, spike_pcore=rep // self.N, spike_neuron=rep % self.N,
                        counters=to_host(counters).reshape(self.copies, self.C, NUM_COUNTERS),
                        _final={k: to_host(a) for k, a in final.items()}, _base=base, _pos=self.pos,
                        _neurons_per_core=self.N)


def counts_of(inject: Sequence, copies: int, axons: np.ndarray, axons_per_core: int) -> Callable:
    """``inject[t] = (copy, pcore, axon)`` arrays as a function of ``t`` giving ``(copies, K)`` counts
    over ``axons`` (which must hold every pair named)."""
    key = axons[:, 0] * axons_per_core + axons[:, 1]
    order = np.argsort(key)

    def at(step: int):
        copy, pcore, axon = inject[step]
        if np.size(copy) == 0:
            return None
        k = order[np.searchsorted(key[order], pcore * axons_per_core + axon)]
        return np.bincount(copy * key.size + k, minlength=copies * key.size).reshape(copies, key.size)

    return at
