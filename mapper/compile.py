"""From a partition to loadable core images, a placement on the mesh, a report, and the file format."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from neurovm.config import ChipConfig
from neurovm.image import CoreImage
from neurovm.npzfile import load_npz, save_npz

from .network import LIF_FIELDS, NetArrays
from .partition import LIMITS, MapError, packet_volume, resource_use

__all__ = ["compile_images", "place", "MappedNetwork", "FORMAT", "FORMAT_VERSION"]

FORMAT = "neurovm-mapped-network"
FORMAT_VERSION = 1


def compile_images(net: NetArrays, core_of: np.ndarray, cfg: ChipConfig, weight_exp: int = 0) -> dict[int, CoreImage]:
    """One :class:`CoreImage` per virtual core.

    Neurons of a core take local indices in ascending global id.  A core's
    axons are the distinct source neurons that reach it, in ascending id;
    axon ``a``'s synapse list holds that source's synapses into the core.  A
    neuron's fan-out list has one entry per distinct destination core, in
    ascending vcore, naming the axon that core gave it.
    """
    core_of = np.asarray(core_of, dtype=np.int64)
    k = int(core_of.max()) + 1 if net.n else 0
    local = np.zeros(net.n, dtype=np.int64)
    for q in range(k):
        idx = np.flatnonzero(core_of == q)
        local[idx] = np.arange(idx.size)
    dcore = core_of[net.dst] if net.dst.size else np.zeros(0, np.int64)
    # axon id of (source, destination core)
    pair = net.src * k + dcore
    upairs = np.unique(pair)
    p_src, p_core = upairs // max(k, 1), upairs % max(k, 1)
    axon_of_pair = np.zeros(upairs.size, dtype=np.int64)
    for q in range(k):
        sel = np.flatnonzero(p_core == q)
        axon_of_pair[sel] = np.arange(sel.size)   # upairs sorted: ascending source within a core
    images = {}
    for q in range(k):
        mine = np.flatnonzero(core_of == q)
        sel = np.flatnonzero(dcore == q)
        order = sel[np.lexsort((net.dst[sel], net.src[sel]))]
        ax = axon_of_pair[np.searchsorted(upairs, pair[order])]
        n_ax = int(np.sum(p_core == q))
        lens = np.bincount(ax, minlength=n_ax)
        fo = np.flatnonzero(np.isin(p_src, mine))           # entries of this core's neurons, ascending (src, core)
        fo_len = np.bincount(local[p_src[fo]], minlength=mine.size) if fo.size else np.zeros(mine.size, np.int64)
        images[q] = CoreImage(
            syn_start=np.cumsum(lens) - lens, syn_len=lens,
            target=local[net.dst[order]], weight=net.weight[order],
            fo_start=np.cumsum(fo_len) - fo_len, fo_len=fo_len, report=net.report[mine],
            fo_axon=axon_of_pair[fo], fo_vcore=p_core[fo], weight_exp=weight_exp,
            **{f: net.params[f][mine] for f in LIF_FIELDS},
        )
    return images


def _hops(cfg: ChipConfig) -> np.ndarray:
    xy = np.array([cfg.core_xy(p) for p in range(cfg.num_cores)])
    return np.abs(xy[:, None, :] - xy[None, :, :]).sum(axis=2)


def place(traffic: np.ndarray, cfg: ChipConfig, free: list[int], time_budget: float = 2.0) -> np.ndarray:
    """Physical core of each virtual core, chosen from ``free``, minimising sum(traffic * hops).

    Greedy (heaviest-communicating vcore first, onto the free core closest to
    its already-placed partners), then pairwise swaps while they help (within
    ``time_budget`` seconds).
    """
    k = traffic.shape[0]
    if k > len(free):
        raise MapError(f"cores: {k} virtual cores needed, {len(free)} physical cores free (short by {k - len(free)})")
    sym = traffic + traffic.T
    hop = _hops(cfg)
    free = list(free)
    pcore = -np.ones(k, dtype=np.int64)
    for v in np.argsort(-sym.sum(axis=1), kind="stable"):
        placed = np.flatnonzero(pcore >= 0)
        cost = hop[np.ix_(free, pcore[placed])] @ sym[v, placed] if placed.size else np.zeros(len(free))
        pcore[v] = free.pop(int(np.argmin(cost)))

    def swap_delta(pc, a, b):
        """Change of sum(traffic * hops) if vcores a and b exchange physical cores (O(k))."""
        pa, pb = pc[a], pc[b]
        others = np.ones(k, dtype=bool)
        others[[a, b]] = False
        ho_a, ho_b = hop[pa, pc[others]], hop[pb, pc[others]]
        return float(sym[a, others] @ (ho_b - ho_a) + sym[b, others] @ (ho_a - ho_b))

    deadline = time.perf_counter() + time_budget
    improved = True
    while improved and k > 1 and time.perf_counter() < deadline:
        improved = False
        for a in range(k):
            if time.perf_counter() > deadline:
                break
            for b in range(a + 1, k):
                if swap_delta(pcore, a, b) < -1e-9:
                    pcore[[a, b]] = pcore[[b, a]]
                    improved = True
    return pcore


@dataclass
class MappedNetwork:
    """A network compiled for one tenant: images per vcore, where each neuron went, and the MMU table."""

    config: ChipConfig
    images: dict[int, CoreImage]
    core_of: np.ndarray          # vcore of each neuron
    local: np.ndarray            # index of each neuron inside its vcore
    pcore_of_vcore: np.ndarray   # the placement: MMU table vcore -> physical core
    report: dict = field(default_factory=dict)
    populations: dict = field(default_factory=dict)   # name -> global neuron ids (ascending)

    @property
    def n(self) -> int:
        """Number of neurons."""
        return int(self.core_of.size)

    def neurons(self, which) -> np.ndarray:
        """Global neuron ids of a population name, or of the given ids (checked)."""
        if isinstance(which, str):
            if which not in self.populations:
                raise KeyError(f"no population {which!r}; this network has {sorted(self.populations) or 'none'}")
            return np.asarray(self.populations[which], dtype=np.int64)
        ids = np.atleast_1d(np.asarray(which, dtype=np.int64))
        bad = ids[(ids < 0) | (ids >= self.n)]
        if bad.size:
            raise KeyError(f"neuron {int(bad[0])} does not exist (the network has {self.n} neurons)")
        return ids

    def fanout_of(self, neurons) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fan-out entries of ``neurons``: arrays ``(neuron, vcore, axon)``.

        Injecting on exactly these ``(vcore, axon)`` pairs has the effect of the
        neurons spiking (one step earlier than their own spike would arrive):
        that is how the runtime feeds input populations.
        """
        out = [[], [], []]
        for v in np.atleast_1d(np.asarray(neurons, dtype=np.int64)):
            img = self.images[int(self.core_of[v])]
            li = int(self.local[v])
            start, ln = int(img.fo_start[li]), int(img.fo_len[li])
            out[0].append(np.full(ln, v))
            out[1].append(np.asarray(img.fo_vcore[start:start + ln], dtype=np.int64))
            out[2].append(np.asarray(img.fo_axon[start:start + ln], dtype=np.int64))
        return tuple(np.concatenate(x) if x else np.zeros(0, np.int64) for x in out)

    def neuron_of(self, vcore, local) -> np.ndarray:
        """Global neuron ids of (vcore, local index) pairs (e.g. from SPIKE messages)."""
        table = np.full((int(self.core_of.max()) + 1, int(self.local.max()) + 1), -1, dtype=np.int64)
        table[self.core_of, self.local] = np.arange(self.n)
        vcore, local = np.ravel(vcore).astype(np.int64), np.ravel(local).astype(np.int64)
        ok = (vcore < table.shape[0]) & (local < table.shape[1])
        out = np.full(vcore.size, -1, dtype=np.int64)
        out[ok] = table[vcore[ok], local[ok]]
        if (out < 0).any():
            i = int(np.flatnonzero(out < 0)[0])
            raise KeyError(f"no neuron at vcore {vcore[i]} index {local[i]}")
        return out

    # ------------------------------------------------------------------ file format
    def save(self, path) -> None:
        """Write the mapped network (``.npz``: a JSON header plus arrays; format version 1)."""
        arrays = {"core_of": self.core_of, "local": self.local, "pcore_of_vcore": self.pcore_of_vcore}
        for q, img in self.images.items():
            for f in fields(img):
                if f.name not in ("weight_exp", "n_active"):
                    arrays[f"core{q}.{f.name}"] = getattr(img, f.name)
        header = {"format": FORMAT, "version": FORMAT_VERSION, "config": self.config.to_dict(),
                  "cores": {str(q): {"weight_exp": img.weight_exp, "n_active": img.n_active}
                            for q, img in self.images.items()},
                  "report": self.report,
                  "populations": {k: [int(v) for v in ids] for k, ids in self.populations.items()}}
        save_npz(path, header, arrays)

    @classmethod
    def load(cls, path) -> "MappedNetwork":
        """Read a file written by :meth:`save`; every image is re-checked against the chip's rules."""
        path = Path(path)
        header, z = load_npz(path, FORMAT, FORMAT_VERSION, "mapped-network file", MapError)
        cfg = ChipConfig.from_dict(header["config"])
        images = {}
        try:
            for q, meta in header["cores"].items():
                kw = {f.name: z[f"core{q}.{f.name}"] for f in fields(CoreImage)
                      if f.name not in ("weight_exp", "n_active")}
                img = CoreImage(**kw, weight_exp=meta["weight_exp"], n_active=meta["n_active"])
                img.region_words(cfg)   # raises ImageError naming the region and entry
                images[int(q)] = img
            return cls(cfg, images, z["core_of"], z["local"], z["pcore_of_vcore"], header.get("report", {}),
                       {k: np.asarray(v, dtype=np.int64) for k, v in header.get("populations", {}).items()})
        except KeyError as e:
            raise MapError(f"{path}: truncated file, array {e} is missing") from None


def mapping_report(net: NetArrays, core_of: np.ndarray, pcore: np.ndarray, cfg: ChipConfig) -> dict:
    """Cores used, utilisation per constraint, packet volume and mean hops."""
    use = resource_use(net, core_of)
    hop = _hops(cfg)
    k = len(pcore)
    ps_key = np.unique(net.src * k + core_of[net.dst]) if net.src.size else np.zeros(0, np.int64)
    ps, pc = ps_key // max(k, 1), ps_key % max(k, 1)
    foreign = pc != core_of[ps]
    h = hop[pcore[core_of[ps[foreign]]], pcore[pc[foreign]]] if foreign.any() else np.zeros(0)
    w = net.rate[ps[foreign]]
    return {
        "neurons": int(net.n), "synapses": int(net.src.size), "cores": int(k),
        "utilisation": {name: {"max": float(use[name].max() / getattr(cfg, attr)) if k else 0.0,
                               "mean": float(use[name].mean() / getattr(cfg, attr)) if k else 0.0}
                        for name, attr in LIMITS},
        "packet_volume": packet_volume(net, core_of),
        "mean_hops": float((w * h).sum() / w.sum()) if w.sum() else 0.0,
        "pcore_of_vcore": [int(p) for p in pcore],
    }
