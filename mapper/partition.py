"""Assign neurons to virtual cores under every hard limit of :class:`ChipConfig` at once.

Per core: neurons <= N, synapse entries (in-edges of its neurons) <= S,
axons (distinct source neurons with a target in the core) <= A, fan-out
entries (for each of its neurons, the distinct cores it reaches) <= F.

Objective: AER packet volume, ``sum_u rate_u * |foreign cores reached by u|``.
:func:`partition` fills cores in two neuron orders (the given one -- layers
of a feed-forward net stay contiguous -- and balanced recursive bisection into
the fewest blocks the neuron limit allows, compact on locally connected nets), each time opening a new core
when the next neuron would break a limit and splitting cores whose fan-out
table overflows, then runs a local search on the volume and keeps the better.
"""

from __future__ import annotations

import warnings

import numpy as np

from neurovm.config import ChipConfig

from .network import NetArrays

__all__ = ["MapError", "resource_use", "packet_volume", "contiguous_partition", "refine", "partition",
           "bisection_order", "default_work_budget", "LIMITS"]

#: (name used in reports, ChipConfig attribute)
LIMITS = (("neurons", "neurons_per_core"), ("synapses", "synapses_per_core"),
          ("axons", "axons_per_core"), ("fanout", "fanout_per_core"))


class MapError(ValueError):
    """The network cannot be mapped; the message names the limit, the neuron or population, and by how much."""


def _pairs(net: NetArrays, core_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (source neuron, destination core) pairs: one axon and one fan-out entry each."""
    if net.src.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    from scipy.sparse import coo_matrix

    k = int(core_of.max()) + 1
    m = coo_matrix((np.ones(net.src.size, dtype=np.int32), (net.src, core_of[net.dst])), shape=(net.n, k)).tocsr()
    m.sum_duplicates()   # also sorts the column indices: pairs come out ordered by (source, core)
    return np.repeat(np.arange(net.n, dtype=np.int64), np.diff(m.indptr)), m.indices.astype(np.int64)


def resource_use(net: NetArrays, core_of: np.ndarray, ncores: int | None = None) -> dict[str, np.ndarray]:
    """Per-core use of each limited resource."""
    core_of = np.asarray(core_of, dtype=np.int64)
    k = int(core_of.max()) + 1 if ncores is None else ncores
    ps, pc = _pairs(net, core_of)
    return {
        "neurons": np.bincount(core_of, minlength=k),
        "synapses": np.bincount(core_of[net.dst], minlength=k) if net.dst.size else np.zeros(k, np.int64),
        "axons": np.bincount(pc, minlength=k),
        "fanout": np.bincount(core_of[ps], minlength=k),
    }


def packet_volume(net: NetArrays, core_of: np.ndarray) -> float:
    """Expected AER packets per step: each spike travels once to each distinct foreign core holding a target."""
    ps, pc = _pairs(net, np.asarray(core_of, dtype=np.int64))
    foreign = pc != core_of[ps]
    return float(net.rate[ps[foreign]].sum())


def _check_single_neurons(net: NetArrays, cfg: ChipConfig):
    indeg = np.bincount(net.dst, minlength=net.n) if net.dst.size else np.zeros(net.n, np.int64)
    worst = int(np.argmax(indeg)) if net.n else 0
    if net.n and indeg[worst] > cfg.synapses_per_core:
        raise MapError(f"synapses_per_core: {net.name(worst)} has {indeg[worst]} incoming synapses, "
                       f"over the limit of {cfg.synapses_per_core} by {indeg[worst] - cfg.synapses_per_core}")
    if net.n and indeg[worst] > cfg.axons_per_core:   # distinct sources <= in-degree (a DiGraph has no multi-edges)
        srcs = np.bincount(net.dst, minlength=net.n)
        w = int(np.argmax(srcs))
        if srcs[w] > cfg.axons_per_core:
            raise MapError(f"axons_per_core: {net.name(w)} receives from {srcs[w]} distinct neurons, "
                           f"over the limit of {cfg.axons_per_core} by {srcs[w] - cfg.axons_per_core}")
    bad = np.flatnonzero((net.weight < cfg.weight_min) | (net.weight > cfg.weight_max))
    if bad.size:
        e = int(bad[0])
        raise MapError(f"weight_bits: synapse {net.name(int(net.src[e]))} -> {net.name(int(net.dst[e]))} has weight "
                       f"{net.weight[e]}, outside {cfg.weight_min}..{cfg.weight_max} ({bad.size} such synapses); "
                       "quantise the weights first")


def contiguous_partition(net: NetArrays, cfg: ChipConfig, max_cores: int,
                         breaks: np.ndarray | None = None) -> np.ndarray:
    """Fill cores in neuron order under the neuron, synapse and axon limits (and open a
    new core at every neuron where ``breaks`` is True); then split cores whose fan-out
    table overflows.  Returns ``core_of`` (virtual core per neuron)."""
    _check_single_neurons(net, cfg)
    N, S, A = cfg.neurons_per_core, cfg.synapses_per_core, cfg.axons_per_core
    order = np.argsort(net.dst, kind="stable")
    starts = np.searchsorted(net.dst[order], np.arange(net.n + 1))
    in_src = net.src[order]
    core_of = np.zeros(net.n, dtype=np.int64)
    core, n_in, syn = 0, 0, 0
    axons: set[int] = set()
    for v in range(net.n):
        srcs = in_src[starts[v]:starts[v + 1]]
        new_axons = [u for u in srcs.tolist() if u not in axons]
        if n_in and (n_in + 1 > N or syn + srcs.size > S or len(axons) + len(new_axons) > A
                     or (breaks is not None and breaks[v])):
            core, n_in, syn, axons = core + 1, 0, 0, set()
            new_axons = srcs.tolist()
        core_of[v] = core
        n_in += 1
        syn += srcs.size
        axons.update(new_axons)
    # fan-out: split an overflowing core in two (its second half to a new core) until all fit
    for _ in range(4 * net.n + 4):
        use = resource_use(net, core_of)
        over = np.flatnonzero(use["fanout"] > cfg.fanout_per_core)
        if not over.size:
            break
        c = int(over[0])
        members = np.flatnonzero(core_of == c)
        if members.size == 1:
            v = int(members[0])
            raise MapError(f"fanout_per_core: {net.name(v)} alone reaches {use['fanout'][c]} cores, over the "
                           f"limit of {cfg.fanout_per_core} by {use['fanout'][c] - cfg.fanout_per_core}")
        core_of[members[members.size // 2:]] = core_of.max() + 1
    ncores = int(core_of.max()) + 1 if net.n else 0
    if ncores > max_cores:
        use = resource_use(net, core_of)
        tight = max(LIMITS, key=lambda lim: use[lim[0]].sum() / getattr(cfg, lim[1]))
        raise MapError(f"cores: the network needs {ncores} cores, {max_cores} are available "
                       f"(short by {ncores - max_cores}); the tightest limit is {tight[1]} "
                       f"({use[tight[0]].sum()} {tight[0]} in total, {getattr(cfg, tight[1])} per core)")
    return core_of


def _csr(keys: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    return np.searchsorted(keys[order], np.arange(n + 1)), vals[order]


def refine(net: NetArrays, cfg: ChipConfig, core_of: np.ndarray, ncores: int, passes: int = 8,
           seed: int = 0, work_budget: int | None = None) -> np.ndarray:
    """Local search on the packet volume: move single neurons to the core that lowers
    ``sum_u rate_u * |foreign cores reached by u|`` most, keeping every limit.

    Candidate cores for a neuron are the cores of its sources and targets;
    gains and limit checks are evaluated on arrays for all candidates at once.

    Parameters
    ----------
    passes : int
        Most passes over the neurons (each in a random order drawn from ``seed``);
        the search also stops after a pass that moves nothing.
    seed : int
        Seed of the visiting order.
    work_budget : int, optional
        Most neuron visits to make (the work unit: one neuron considered for a move,
        all its candidate cores evaluated; a pass costs ``n``); ``None``: no bound
        besides ``passes``.  The search stops when it is spent, so the result depends
        on the inputs only, never on the machine or its load.
    """
    return _refine(net, cfg, core_of, ncores, passes, seed, _check_work_budget(work_budget, "refine"))[0]


def _check_work_budget(work_budget, where: str) -> int | None:
    """``work_budget`` as an int (or None); a float, bool or negative value is a :class:`MapError` naming it."""
    if work_budget is None:
        return None
    if isinstance(work_budget, (bool, np.bool_)) or not isinstance(work_budget, (int, np.integer)) \
            or work_budget < 0:
        raise MapError(f"{where}: work_budget must be a whole number of work units >= 0, or None for the default; "
                       f"got {work_budget!r}")
    return int(work_budget)


def _refine(net: NetArrays, cfg: ChipConfig, core_of: np.ndarray, ncores: int, passes: int, seed: int,
            work_budget: int | None) -> tuple[np.ndarray, int]:
    """:func:`refine`; also returns the work units spent."""
    core_of = np.asarray(core_of, dtype=np.int64).copy()
    k, n = ncores, net.n
    if k <= 1 or net.src.size == 0:
        return core_of, 0
    N, S, A, F = cfg.neurons_per_core, cfg.synapses_per_core, cfg.axons_per_core, cfg.fanout_per_core
    r = net.rate.astype(np.float64)
    pstart, preds = _csr(net.dst, net.src, n)
    sstart, succs = _csr(net.src, net.dst, n)
    cnt = np.zeros((n, k), dtype=np.int32)
    np.add.at(cnt, (net.src, core_of[net.dst]), 1)
    indeg = np.diff(pstart)
    selfloop = np.zeros(n, dtype=bool)
    selfloop[net.src[net.src == net.dst]] = True
    use = resource_use(net, core_of, k)
    neurons, syn, axons, fanout = (use[x].astype(np.int64) for x in ("neurons", "synapses", "axons", "fanout"))
    own_fo = (cnt > 0).sum(axis=1)
    budget = np.iinfo(np.int64).max if work_budget is None else work_budget
    spent = 0
    rng = np.random.default_rng(seed)
    for _ in range(passes):
        moved = 0
        for v in rng.permutation(n):
            if spent >= budget:
                return core_of, spent
            spent += 1
            if selfloop[v]:
                continue
            a = core_of[v]
            P = preds[pstart[v]:pstart[v + 1]]
            cand = np.unique(np.concatenate([core_of[P], core_of[succs[sstart[v]:sstart[v + 1]]]]))
            cand = cand[cand != a]
            if cand.size == 0:
                continue
            cP = core_of[P]
            cntPb = cnt[P][:, cand]                       # |P| x |cand|
            newb = cntPb == 0
            gain = (r[P, None] * (newb & (cP[:, None] != cand[None, :]))).sum(axis=0)
            lose_a = cnt[P, a] == 1
            loss = float((r[P] * (lose_a & (cP != a))).sum())
            delta = r[v] * (float(cnt[v, a] > 0) - (cnt[v, cand] > 0)) + gain - loss
            # tie-break on the edge cut: a move that keeps the volume but has more of v's
            # neighbours on the other side smooths the boundary and unblocks later moves
            nb = np.concatenate([cP, core_of[succs[sstart[v]:sstart[v + 1]]]])
            cut = (nb == a).sum() - (nb[:, None] == cand[None, :]).sum(axis=0)
            better = (delta < -1e-12) | ((np.abs(delta) <= 1e-12) & (cut < 0))
            ok = ((neurons[cand] + 1 <= N) & (syn[cand] + indeg[v] <= S) & (axons[cand] + newb.sum(axis=0) <= A)
                  & (fanout[cand] + own_fo[v] <= F) & better)
            if not ok.any():
                continue
            # fan-out tables of the sources' cores: +1 per source newly reaching b, -1 per source leaving a
            for j in np.flatnonzero(ok)[np.lexsort((cut[ok], delta[ok]))]:
                b = cand[j]
                inc = np.bincount(cP[newb[:, j]], minlength=k) - np.bincount(cP[lose_a], minlength=k)
                if b == a or np.any(fanout + inc + np.where(np.arange(k) == b, own_fo[v], 0)
                                    - np.where(np.arange(k) == a, own_fo[v], 0) > F):
                    continue
                # commit the move
                fanout += inc
                fanout[a] -= own_fo[v]
                fanout[b] += own_fo[v]
                own_fo[P[newb[:, j]]] += 1
                own_fo[P[lose_a]] -= 1
                axons[a] -= int(lose_a.sum())
                axons[b] += int(newb[:, j].sum())
                cnt[P, a] -= 1
                cnt[P, b] += 1
                neurons[a] -= 1
                neurons[b] += 1
                syn[a] -= indeg[v]
                syn[b] += indeg[v]
                core_of[v] = b
                moved += 1
                break
        if moved == 0:
            break
    return core_of, spent


#: the spectral key is rounded to this many decimals (of its largest magnitude): the last bits
#: of an eigensolver differ between BLAS kernels (CPU types), the rounded key does not
KEY_DECIMALS = 9
#: eigenvalues within this (relative) distance of the Fiedler value count as one eigenspace
DEGENERATE_RTOL = 1e-8


def _bisection_key(sub, spectral: bool, seed: int = 0) -> np.ndarray:
    """A key along which sorting the nodes of the connected graph ``sub`` and cutting
    at a quantile gives a good bisection: the Fiedler vector (spectral bisection,
    straight cuts on sheets) or, for big parts, the breadth-first distance from a
    pseudo-peripheral node (cheaper, rounder cuts).

    The spectral key is made machine-independent: a degenerate Fiedler eigenspace
    (square sheets) is replaced by the projection of the seeded start vector onto it
    (the same whatever basis the solver returned), the sign is fixed by that vector,
    and the key is rounded (:data:`KEY_DECIMALS`) so that BLAS rounding differences
    do not reorder nodes; the caller breaks the remaining ties by neuron id.
    """
    from scipy.sparse.csgraph import breadth_first_order, laplacian, shortest_path

    m = sub.shape[0]
    if spectral and m > 2:
        x0 = np.random.default_rng(seed).standard_normal(m)
        return _canonical_key(_fiedler_vector(laplacian(sub), x0), x0)
    start = int(breadth_first_order(sub, 0, directed=False, return_predecessors=False)[-1])
    return shortest_path(sub, method="D", unweighted=True, directed=False, indices=start)


def _fiedler_vector(lap, x0: np.ndarray) -> np.ndarray:
    """The Fiedler vector of the Laplacian ``lap`` (dense ``eigh`` up to 256 nodes, ``lobpcg``
    from ``x0`` above); for a degenerate Fiedler value, ``x0`` projected onto its eigenspace."""
    m = lap.shape[0]
    if m <= 256:
        vals, vecs = np.linalg.eigh(lap.toarray())
        same = np.abs(vals - vals[1]) <= DEGENERATE_RTOL * max(abs(vals[-1]), 1.0)
        same[0] = False   # the constant vector
        space = vecs[:, same]
        return space @ (space.T @ x0) if space.shape[1] > 1 else space[:, 0]
    from scipy.sparse.linalg import lobpcg

    with warnings.catch_warnings():   # an unconverged Fiedler vector still orders the nodes well
        warnings.simplefilter("ignore", UserWarning)
        _, vec = lobpcg(lap, x0[:, None], Y=np.ones((m, 1)), largest=False, tol=1e-3, maxiter=100)
    return vec[:, 0]


def _canonical_key(vec: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """``vec`` scaled to largest magnitude 1, oriented to agree with ``x0``, rounded to KEY_DECIMALS."""
    scale = float(np.abs(vec).max())
    if scale == 0.0:
        return np.zeros_like(vec)
    sign = -1.0 if float((vec * x0).sum()) < 0 else 1.0
    return np.round(vec * (sign / scale), KEY_DECIMALS) + 0.0   # + 0.0: no negative zeros


#: networks of up to this many neurons are bisected spectrally (about 0.25 ms per neuron
#: with scipy's lobpcg); bigger ones by breadth-first distance, to keep 10^6 synapses < 10 s
SPECTRAL_MAX = 20000


def bisection_order(net: NetArrays, parts: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the neurons into ``parts`` compact blocks of (nearly) equal size.

    Recursive graph bisection without coordinates: a part meant for ``p`` blocks
    is cut in proportion ``floor(p/2) : ceil(p/2)`` along :func:`_bisection_key`;
    disconnected parts are packed whole-component first.  Returns ``(order,
    breaks)``: the neurons in block order, and a mask (over positions in
    ``order``) that is True where a block starts.  On sheets this yields
    near-square blocks where a plain row-major fill yields strips.  ``seed`` sets
    the eigensolver's start vectors: the cuts differ a little from seed to seed.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = net.n
    adj = coo_matrix((np.ones(net.src.size), (net.src, net.dst)), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64).tocsr()
    block = -(-n // parts)
    out: list[np.ndarray] = []
    stack = [(np.arange(n), parts)]
    while stack:
        part, p = stack.pop()
        if p <= 1 or part.size <= 1:
            out.append(part)
            continue
        sub = adj[part][:, part]
        ncomp, labels = connected_components(sub, directed=False)
        if ncomp > 1:
            # whole components into blocks, first fit decreasing; a component bigger than a
            # block becomes a part of its own and is bisected further
            sizes = np.bincount(labels)
            bins: list[list[int]] = []
            room: list[int] = []
            for comp in np.argsort(-sizes, kind="stable"):
                members = part[labels == comp]
                if members.size > block:
                    stack.append((members, -(-members.size // block)))
                    continue
                j = next((b for b in range(len(bins)) if room[b] >= members.size), None)
                if j is None:
                    bins.append([])
                    room.append(block)
                    j = len(bins) - 1
                bins[j].extend(members.tolist())
                room[j] -= members.size
            out.extend(np.array(b, dtype=np.int64) for b in bins)
            continue
        order = part[np.lexsort((part, _bisection_key(sub, n <= SPECTRAL_MAX, seed)))]   # ties: by neuron id
        p1 = p // 2
        n1 = int(round(part.size * p1 / p))
        stack.append((order[n1:], p - p1))
        stack.append((order[:n1], p1))   # popped first: the near half keeps the front of the order
    breaks = np.zeros(n, dtype=bool)
    breaks[np.cumsum([0] + [b.size for b in out[:-1]])] = n > 0
    return (np.concatenate(out) if out else np.zeros(0, dtype=np.int64)), breaks


def reject_removed_arguments(where: str, removed: dict) -> None:
    """Raise ``TypeError`` for keyword arguments ``where`` does not take, naming ``time_budget``'s replacement."""
    if "time_budget" in removed:
        raise TypeError(f"{where}: time_budget was removed (the search is bounded by work, not by the clock, so a "
                        "mapping no longer depends on machine load); pass work_budget= (neuron visits of the local "
                        "search; place: swap candidates) or leave it out for the default")
    if removed:
        raise TypeError(f"{where}() got an unexpected keyword argument {next(iter(removed))!r}")


#: the default local-search budget is capped at this many neuron visits, so that big networks map
#: in bounded time (a visit takes about 0.1-0.2 ms on a 2-core x86 machine)
DEFAULT_WORK_CAP = 60_000


def default_work_budget(net: NetArrays, passes: int = 8) -> int:
    """The local search's default budget in neuron visits: enough for the two one-pass first
    looks and ``passes`` passes of the best start, ``(passes + 2) * n``, at most
    :data:`DEFAULT_WORK_CAP`."""
    return int(min((passes + 2) * net.n, DEFAULT_WORK_CAP))


def partition(net: NetArrays, cfg: ChipConfig, max_cores: int, passes: int = 8, *,
              work_budget: int | None = None, starts: int = 1, **removed) -> np.ndarray:
    """Best of: contiguous fill in the given order and in a balanced recursive-bisection
    order, each given one pass of local search on the packet volume (at most a quarter
    of the work left each); the better one then gets the rest of ``work_budget``.

    ``work_budget`` counts neuron visits of the local search (one neuron considered
    for a move, every candidate core evaluated; a pass costs ``n``); ``None`` means
    :func:`default_work_budget`.  The same network, configuration,
    ``passes``, ``starts`` and budget always give the same partition, on any load.
    With ``starts`` > 1 (and a network bisected spectrally), that many bisections
    with different eigensolver seeds are filled and the one with the lowest volume
    before local search is kept (each start costs about 0.25 ms per neuron).
    Raises :class:`MapError` if nothing fits.
    """
    reject_removed_arguments("partition", removed)
    work_budget = _check_work_budget(work_budget, "partition")
    budget = default_work_budget(net, passes) if work_budget is None else work_budget
    _check_single_neurons(net, cfg)
    need, what, attr, total = max((-(-total // getattr(cfg, attr)), what, attr, total) for what, attr, total in
                                  (("neurons", "neurons_per_core", net.n), ("synapses", "synapses_per_core", net.src.size)))
    if need > max_cores:   # no partition can fit: say so before any partitioning work
        raise MapError(f"cores: the network needs at least {need} cores by {attr} ({total:,} {what}, "
                       f"{getattr(cfg, attr):,} per core), {max_cores} are available (short by {need - max_cores})")
    orders = [(np.arange(net.n), None)]
    if net.src.size and net.n > cfg.neurons_per_core:
        seeds = range(max(1, starts) if net.n <= SPECTRAL_MAX else 1)
        bis = [bisection_order(net, -(-net.n // cfg.neurons_per_core), seed) for seed in seeds]
        if len(bis) > 1:   # keep the bisection whose blocks cut the fewest packets
            inv = [np.empty(net.n, dtype=np.int64) for _ in bis]
            for (order, _), iv in zip(bis, inv):
                iv[order] = np.arange(net.n)
            vols = [packet_volume(net, (np.cumsum(breaks) - 1)[iv]) for (_, breaks), iv in zip(bis, inv)]
            bis = [bis[int(np.argmin(vols))]]
        orders += bis
    cands, first_err = [], None
    for order, breaks in orders:
        inv = np.empty(net.n, dtype=np.int64)
        inv[order] = np.arange(net.n)
        sub = NetArrays(net.n, inv[net.src], inv[net.dst], net.weight, {f: v[order] for f, v in net.params.items()},
                        net.rate[order], net.report[order], net.population[order])
        try:
            c = contiguous_partition(sub, cfg, max_cores, breaks)[inv]
        except MapError as e:
            first_err = first_err or e
            continue
        # a first look at each start (a quarter of what is left), then the rest of the budget to the best
        c, spent = _refine(net, cfg, c, int(c.max()) + 1, 1, 0, budget // 4)
        budget -= spent
        cands.append((packet_volume(net, c), len(cands), c))
    best = None
    if cands:
        c = min(cands)[2]
        best = _refine(net, cfg, c, int(c.max()) + 1, passes, 1, budget)[0]
    if best is None:
        raise first_err
    # renumber cores densely (refinement may empty one)
    _, dense = np.unique(best, return_inverse=True)
    return dense.astype(np.int64)
