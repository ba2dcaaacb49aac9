"""SNN descriptions the mapper accepts: a networkx ``DiGraph``, or populations and
projections that expand to one.

Graph convention: nodes are neurons with LIF parameter attributes
(``du dv refract bias_mant bias_exp vth_mant``, missing ones default to
:data:`DEFAULT_LIF`), optional ``rate`` (expected spikes per step, weights
the packet-volume objective), ``report`` and ``population``; edges carry an
integer ``weight`` (the synapse's weight mantissa).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

__all__ = ["DEFAULT_LIF", "LIF_FIELDS", "Population", "Network", "NetArrays", "graph_arrays"]

LIF_FIELDS = ("du", "dv", "refract", "bias_mant", "bias_exp", "vth_mant")
DEFAULT_LIF = dict(du=0, dv=0, refract=0, bias_mant=0, bias_exp=0, vth_mant=0)


@dataclass
class Population:
    """``size`` neurons sharing LIF parameters (scalars or per-neuron arrays)."""

    name: str
    size: int
    params: dict = field(default_factory=dict)
    rate: float = 1.0
    report: bool = True


class Network:
    """Populations and projections; :meth:`to_graph` expands them to a ``DiGraph``.

    Examples
    --------
    >>> net = Network()
    >>> a = net.population("in", 4, vth_mant=10)
    >>> b = net.population("out", 2)
    >>> net.all_to_all(a, b, weight=5)
    >>> net.to_graph().number_of_edges()
    8
    """

    def __init__(self):
        self.populations: list[Population] = []
        self._first: dict[str, int] = {}
        self._edges: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.size = 0

    def population(self, name: str, size: int, rate: float = 1.0, report: bool = True, **params) -> Population:
        if name in self._first:
            raise ValueError(f"population {name!r} already exists")
        if size < 1:
            raise ValueError(f"population {name!r}: size must be at least 1, not {size}")
        unknown = set(params) - set(LIF_FIELDS)
        if unknown:
            raise ValueError(f"population {name!r}: unknown LIF parameters {sorted(unknown)}; known: {LIF_FIELDS}")
        pop = Population(name, size, params, rate, report)
        self._first[name] = self.size
        self.size += size
        self.populations.append(pop)
        return pop

    def ids(self, pop: Population) -> np.ndarray:
        """Global neuron ids of a population."""
        return self._first[pop.name] + np.arange(pop.size)

    def _add(self, pre, post, i, j, weight):
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        w = np.broadcast_to(np.asarray(weight, dtype=np.int64), i.shape).copy()
        self._edges.append((self.ids(pre)[i], self.ids(post)[j], w))

    def all_to_all(self, pre: Population, post: Population, weight=1, allow_self: bool = True):
        i, j = np.meshgrid(np.arange(pre.size), np.arange(post.size), indexing="ij")
        keep = np.ones(i.shape, bool) if allow_self or pre is not post else i != j
        self._add(pre, post, i[keep], j[keep], weight if np.isscalar(weight) else np.asarray(weight)[keep])

    def one_to_one(self, pre: Population, post: Population, weight=1):
        if pre.size != post.size:
            raise ValueError(f"one_to_one {pre.name}->{post.name}: sizes {pre.size} and {post.size} differ")
        self._add(pre, post, np.arange(pre.size), np.arange(pre.size), weight)

    def fixed_probability(self, pre: Population, post: Population, p: float, weight=1, seed: int = 0):
        rng = np.random.default_rng(seed)
        mask = rng.random((pre.size, post.size)) < p
        i, j = np.nonzero(mask)
        w = weight(rng, i.size) if callable(weight) else weight
        self._add(pre, post, i, j, w)

    def connect(self, pre: Population, post: Population, pairs, weight=1):
        """Explicit list of ``(i, j)`` (population-local indices) or ``(i, j, w)``."""
        arr = np.asarray(pairs, dtype=np.int64).reshape(-1, np.shape(pairs)[-1] if len(pairs) else 2)
        if arr.size and ((arr[:, 0] >= pre.size).any() or (arr[:, 1] >= post.size).any() or (arr[:, :2] < 0).any()):
            raise ValueError(f"connect {pre.name}->{post.name}: an index is outside the populations")
        self._add(pre, post, arr[:, 0], arr[:, 1], arr[:, 2] if arr.shape[1] > 2 else weight)

    def to_graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for pop in self.populations:
            base = self._first[pop.name]
            for k in range(pop.size):
                attrs = {f: (int(np.asarray(v).ravel()[k]) if np.ndim(v) else int(v))
                         for f, v in {**DEFAULT_LIF, **pop.params}.items()}
                g.add_node(base + k, population=pop.name, rate=pop.rate, report=pop.report, **attrs)
        for s, d, w in self._edges:
            g.add_weighted_edges_from(zip(s.tolist(), d.tolist(), w.tolist()))
        return g

    def arrays(self) -> "NetArrays":
        """The same network as arrays, without building a graph (fast for big networks)."""
        n = self.size
        params = {f: np.zeros(n, dtype=np.int64) for f in LIF_FIELDS}
        rate, report, pop = np.ones(n), np.ones(n, dtype=bool), np.empty(n, dtype=object)
        for p in self.populations:
            sl = slice(self._first[p.name], self._first[p.name] + p.size)
            for f in LIF_FIELDS:
                params[f][sl] = {**DEFAULT_LIF, **p.params}[f]
            rate[sl], report[sl], pop[sl] = p.rate, p.report, p.name
        if self._edges:
            src = np.concatenate([e[0] for e in self._edges])
            dst = np.concatenate([e[1] for e in self._edges])
            w = np.concatenate([e[2] for e in self._edges])
            # a DiGraph keeps one edge per pair (the last one); do the same
            key = src * n + dst
            _, last = np.unique(key[::-1], return_index=True)
            keep = np.sort(key.size - 1 - last)
            src, dst, w = src[keep], dst[keep], w[keep]
        else:
            src = dst = w = np.zeros(0, dtype=np.int64)
        return NetArrays(n, src, dst, w, params, rate, report, pop)


@dataclass
class NetArrays:
    """A network as flat arrays (neurons ``0..n-1``)."""

    n: int
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    params: dict
    rate: np.ndarray
    report: np.ndarray
    population: np.ndarray

    def name(self, i: int) -> str:
        pop = self.population[i]
        return f"neuron {i}" + (f" (population '{pop}')" if pop else "")


def graph_arrays(g: nx.DiGraph) -> NetArrays:
    """Flatten a ``DiGraph`` (any hashable node ids) to :class:`NetArrays`, nodes in graph order."""
    nodes = list(g.nodes)
    index = {v: i for i, v in enumerate(nodes)}
    n = len(nodes)
    params = {f: np.array([int(g.nodes[v].get(f, DEFAULT_LIF[f])) for v in nodes], dtype=np.int64)
              for f in LIF_FIELDS}
    rate = np.array([float(g.nodes[v].get("rate", 1.0)) for v in nodes])
    report = np.array([bool(g.nodes[v].get("report", True)) for v in nodes])
    pop = np.array([g.nodes[v].get("population", "") for v in nodes], dtype=object)
    if g.number_of_edges():
        e = np.array([(index[a], index[b], int(d.get("weight", 1))) for a, b, d in g.edges(data=True)],
                     dtype=np.int64)
        src, dst, w = e[:, 0], e[:, 1], e[:, 2]
    else:
        src = dst = w = np.zeros(0, dtype=np.int64)
    return NetArrays(n, src, dst, w, params, rate, report, pop)
