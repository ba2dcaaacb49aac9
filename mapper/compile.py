"""From a partition to loadable core images, a placement on the mesh, a report, and the file format."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from neurovm.config import ChipConfig
from neurovm.image import CoreImage
from neurovm.npzfile import load_checked, save_npz

from .network import LIF_FIELDS, NetArrays
from .partition import LIMITS, MapError, _check_work_budget, packet_volume, reject_removed_arguments, resource_use

__all__ = ["compile_images", "place", "default_place_budget", "MappedNetwork", "FORMAT", "FORMAT_VERSION"]

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


#: default placement budget: this many sweeps over all vcore pairs ...
DEFAULT_PLACE_SWEEPS = 8
#: ... capped at this many swap candidates (8 sweeps of 256 vcores: 261,120 candidates, about 1 s)
DEFAULT_PLACE_WORK_CAP = 300_000


def default_place_budget(k: int) -> int:
    """The placement's default budget in swap candidates: :data:`DEFAULT_PLACE_SWEEPS` sweeps
    over the ``k * (k - 1) / 2`` vcore pairs, at most :data:`DEFAULT_PLACE_WORK_CAP`."""
    return int(min(DEFAULT_PLACE_SWEEPS * (k * (k - 1) // 2), DEFAULT_PLACE_WORK_CAP))


def place(traffic: np.ndarray, cfg: ChipConfig, free: list[int], *, work_budget: int | None = None,
          **removed) -> np.ndarray:
    """Physical core of each virtual core, chosen from ``free``, minimising sum(traffic * hops).

    Greedy (heaviest-communicating vcore first, onto the free core closest to
    its already-placed partners, the earliest in ``free`` on ties), then sweeps of
    pairwise swaps while they help.  ``work_budget`` bounds the swap search in
    swap candidates evaluated (one unit per vcore pair tried, each O(k));
    ``None`` means :func:`default_place_budget`.  Sums avoid BLAS, so the
    placement is the same for any thread count or machine load.
    """
    reject_removed_arguments("place", removed)
    work_budget = _check_work_budget(work_budget, "place")
    k = traffic.shape[0]
    if k > len(free):
        raise MapError(f"cores: {k} virtual cores needed, {len(free)} physical cores free (short by {k - len(free)})")
    budget = default_place_budget(k) if work_budget is None else work_budget
    sym = traffic + traffic.T
    hop = _hops(cfg)
    pcore = _greedy_placement(sym, hop, list(free))
    return _swap_search(sym, hop, pcore, budget)


def _greedy_placement(sym: np.ndarray, hop: np.ndarray, free: list[int]) -> np.ndarray:
    """Heaviest-communicating vcore first, each onto the free core nearest its placed partners."""
    k = sym.shape[0]
    pcore = -np.ones(k, dtype=np.int64)
    for v in np.argsort(-sym.sum(axis=1), kind="stable"):
        placed = np.flatnonzero(pcore >= 0)
        cost = (hop[np.ix_(free, pcore[placed])] * sym[v, placed]).sum(axis=1) if placed.size \
            else np.zeros(len(free))
        pcore[v] = free.pop(int(np.argmin(cost)))
    return pcore


def _swap_deltas(sym: np.ndarray, hpc: np.ndarray, a: int, bs: np.ndarray) -> np.ndarray:
    """Change of sum(traffic * hops) if vcore ``a`` exchanged physical cores with each of ``bs``.

    ``hpc[i, o]`` is the hop count between the physical cores of vcores ``i`` and ``o``;
    the pair's own link (and any self-traffic) is left out, as it does not change.
    """
    k = sym.shape[0]
    keep = np.ones((bs.size, k), dtype=bool)
    keep[:, a] = False
    keep[np.arange(bs.size), bs] = False
    moved_a = sym[a][None, :] * (hpc[bs] - hpc[a][None, :])     # a takes b's place
    moved_b = sym[bs] * (hpc[a][None, :] - hpc[bs])             # b takes a's place
    return (np.where(keep, moved_a, 0.0) + np.where(keep, moved_b, 0.0)).sum(axis=1)


def _swap_search(sym: np.ndarray, hop: np.ndarray, pcore: np.ndarray, budget: int) -> np.ndarray:
    """Sweeps of pairwise swaps: for ``a`` ascending, for ``b > a`` ascending, exchange the two
    vcores' physical cores when that lowers sum(traffic * hops); stop after ``budget``
    candidates (one unit per pair tried) or a sweep without improvement.

    The candidates ``b`` of one ``a`` are evaluated together under the current placement up
    to the first improving one, which is what trying them one by one would do.
    """
    k = sym.shape[0]
    spent = 0
    improved = True
    while improved and k > 1:
        improved = False
        for a in range(k - 1):
            b0 = a + 1
            while b0 < k:
                if spent >= budget:
                    return pcore
                bs = np.arange(b0, min(k, b0 + budget - spent))
                deltas = _swap_deltas(sym, hop[np.ix_(pcore, pcore)], a, bs)
                hit = np.flatnonzero(deltas < -1e-9)
                if not hit.size:
                    spent += bs.size
                    break
                b = int(bs[hit[0]])
                spent += b - b0 + 1
                pcore[[a, b]] = pcore[[b, a]]
                improved = True
                b0 = b + 1
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
        """Write the mapped network (``.npz``: a JSON header plus arrays; format version 1), atomically.

        The header is built and checked (strict JSON) before the target is touched; a
        failure or a kill at any point leaves the previous file intact.

        Raises
        ------
        MapError
            The network cannot be saved (e.g. a report value that is not finite JSON).
        neurovm.atomic.SaveError
            The folder is missing or the file cannot be written.
        """
        arrays = {"core_of": self.core_of, "local": self.local, "pcore_of_vcore": self.pcore_of_vcore}
        for q, img in self.images.items():
            for f in fields(img):
                if f.name not in ("weight_exp", "n_active"):
                    arrays[f"core{q}.{f.name}"] = getattr(img, f.name)
        for name, a in arrays.items():
            if np.asarray(a).dtype.kind not in "iu":
                raise MapError(f"{path}: cannot save: array {name!r} has dtype {np.asarray(a).dtype}, "
                               f"integers are required")
        header = {"format": FORMAT, "version": FORMAT_VERSION, "config": self.config.to_dict(),
                  "cores": {str(q): {"weight_exp": int(img.weight_exp),
                                     "n_active": None if img.n_active is None else int(img.n_active)}
                            for q, img in self.images.items()},
                  "report": self.report,
                  "populations": {k: [int(v) for v in ids] for k, ids in self.populations.items()}}
        try:
            save_npz(path, header, arrays)
        except (TypeError, ValueError) as e:   # raised while building the header: nothing was written
            raise MapError(f"{path}: cannot save: the header is not strict JSON ({e})") from None

    @classmethod
    def load(cls, path) -> "MappedNetwork":
        """Read a file written by :meth:`save`; every field and image is re-checked against the chip's rules.

        Header fields are checked for type and range; each array's dtype and shape is checked
        from its ``.npy`` header against the file's ``ChipConfig`` (region sizes, cores,
        neurons) before it is read; the placement must name distinct physical cores, core
        keys must be ``0..k-1``, every neuron must sit in a distinct slot of an existing
        core, populations must name existing neurons, and fan-out entries must name
        existing vcores and axons. Every problem raises :class:`MapError` naming the file
        and the field.
        """
        from neurovm.image import ImageError

        return load_checked(path, FORMAT, FORMAT_VERSION, "mapped-network file", MapError, cls._from_file,
                            also=(ImageError,))

    @classmethod
    def _from_file(cls, header: dict, members) -> "MappedNetwork":
        """The network described by a checked header and its arrays (see :meth:`load`)."""
        try:
            cfg = ChipConfig.from_dict(header["config"])
        except (TypeError, ValueError) as e:
            raise MapError(f"header field 'config': {e}") from None
        cores = cls._header_cores(header["cores"], cfg)
        k = len(cores)
        pcore = members.integers("pcore_of_vcore", ndim=1, max_shape=(k,), what=f"{k} cores in the header")
        cls._check_placement(pcore, k, cfg)
        images = {q: cls._file_image(members, q, meta, cfg) for q, meta in cores.items()}
        cls._check_fanout(images)
        limit = max(k, 1) * cfg.neurons_per_core
        core_of = members.integers("core_of", ndim=1, max_shape=(limit,), what=f"{k} cores x neurons_per_core")
        local = members.integers("local", ndim=1, max_shape=(limit,), what=f"{k} cores x neurons_per_core")
        cls._check_neurons(core_of, local, images)
        report = header.get("report", {})
        if not isinstance(report, dict):
            raise MapError(f"header field 'report': must be a dict, not {type(report).__name__}")
        pops = cls._header_populations(header.get("populations", {}), core_of.size)
        return cls(cfg, images, core_of, local, pcore, report, pops)

    @staticmethod
    def _header_cores(cores, cfg: ChipConfig) -> dict[int, dict]:
        """``cores``: keys ``"0".."k-1"`` (k <= num_cores), each ``{"weight_exp": int, "n_active": int|None}``."""
        from neurovm.config import WEIGHT_EXP_MAX, WEIGHT_EXP_MIN

        if not isinstance(cores, dict):
            raise MapError(f"header field 'cores': must be a dict, not {type(cores).__name__}")
        if len(cores) > cfg.num_cores:
            raise MapError(f"header field 'cores': {len(cores)} cores, the chip has num_cores={cfg.num_cores}")
        out = {}
        for key, meta in cores.items():
            if not (key.isascii() and key.isdigit() and str(int(key)) == key):
                raise MapError(f"header field 'cores': key {key!r} is not a vcore number (0, 1, 2, ...)")
            if not isinstance(meta, dict) or set(meta) != {"weight_exp", "n_active"}:
                raise MapError(f"header field 'cores[{key}]': {meta!r} must be a dict with exactly "
                               f"'weight_exp' and 'n_active'")
            we, na = meta["weight_exp"], meta["n_active"]
            if type(we) is not int or not WEIGHT_EXP_MIN <= we <= WEIGHT_EXP_MAX:
                raise MapError(f"header field 'cores[{key}].weight_exp' = {we!r}: an integer in "
                               f"{WEIGHT_EXP_MIN}..{WEIGHT_EXP_MAX} is required")
            if na is not None and (type(na) is not int or not 0 <= na <= cfg.neurons_per_core):
                raise MapError(f"header field 'cores[{key}].n_active' = {na!r}: null or an integer in "
                               f"0..{cfg.neurons_per_core} (neurons_per_core) is required")
            out[int(key)] = meta
        if sorted(out) != list(range(len(out))):
            raise MapError(f"header field 'cores': keys {sorted(out)} must be exactly 0..{len(out) - 1}")
        return dict(sorted(out.items()))

    @staticmethod
    def _check_placement(pcore: np.ndarray, k: int, cfg: ChipConfig) -> None:
        """``pcore_of_vcore``: one distinct physical core in ``0..num_cores-1`` per vcore."""
        if pcore.size != k:
            raise MapError(f"array 'pcore_of_vcore' has {pcore.size} entries for {k} cores in the header")
        bad = np.flatnonzero((pcore < 0) | (pcore >= cfg.num_cores))
        if bad.size:
            v = int(bad[0])
            raise MapError(f"array 'pcore_of_vcore': vcore {v} names physical core {int(pcore[v])}, "
                           f"outside 0..{cfg.num_cores - 1}")
        first = {}
        for v, p in enumerate(pcore.tolist()):
            if p in first:
                raise MapError(f"array 'pcore_of_vcore': vcores {first[p]} and {v} both name physical core {p}; "
                               f"each physical core holds one vcore")
            first[p] = v

    @staticmethod
    def _file_image(members, q: int, meta: dict, cfg: ChipConfig) -> CoreImage:
        """Core ``q``'s image: each array's shape checked against its region before it is read."""
        from neurovm.formats import REGIONS

        size_of = {name: REGIONS[region].size(cfg) for region, names in CoreImage._GROUPS.items() for name in names}
        kw = {name: members.integers(f"core{q}.{name}", ndim=1, max_shape=(size,),
                                     what="the region size for this ChipConfig")
              for name, size in size_of.items()}
        # the learning settings (§24): optional members, absent from files written before learning existed
        learn_size = {"fixed": cfg.synapses_per_core, "pre_x": cfg.axons_per_core, "post_y": cfg.neurons_per_core,
                      "learn_rule": 1, "learn_cfg": 2}
        kw.update({name: members.integers(f"core{q}.{name}", ndim=1, max_shape=(size,),
                                          what="the learning region size for this ChipConfig")
                   for name, size in learn_size.items() if f"core{q}.{name}" in members})
        img = CoreImage(**kw, weight_exp=meta["weight_exp"], n_active=meta["n_active"])
        try:
            img.region_words(cfg)
        except ValueError as e:   # ImageError, naming the region and entry
            raise MapError(f"core {q}: {e}") from None
        return img

    @staticmethod
    def _check_fanout(images: dict[int, CoreImage]) -> None:
        """Every fan-out entry a neuron uses names an existing vcore and one of that core's axons
        (entries past the end of the given arrays read as zero, as in the chip's memory)."""
        axons = np.array([max(images[q].syn_start.size, images[q].syn_len.size) for q in range(len(images))],
                         dtype=np.int64)
        for q, img in images.items():
            lens = img.fo_len   # fo_start, fo_len: equal lengths or empty (zeros), checked by region_words
            starts = img.fo_start if img.fo_start.size else np.zeros(lens.size, np.int64)
            entry = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(starts, lens)
            dest, axon = (np.zeros(entry.size, np.int64) for _ in range(2))
            for a, src in ((dest, img.fo_vcore), (axon, img.fo_axon)):
                inside = entry < src.size
                a[inside] = src[entry[inside]]
            bad = np.flatnonzero(dest >= len(images))
            if bad.size:
                e = int(entry[bad[0]])
                raise MapError(f"core {q}: FANOUT[{e}] names vcore {int(dest[bad[0]])}, the network has "
                               f"vcores 0..{len(images) - 1}")
            bad = np.flatnonzero(axon >= axons[dest]) if entry.size else bad
            if bad.size:
                e, d = int(entry[bad[0]]), int(dest[bad[0]])
                raise MapError(f"core {q}: FANOUT[{e}] names axon {int(axon[bad[0]])} of vcore {d}, which has "
                               f"{int(axons[d])} axons")

    @staticmethod
    def _check_neurons(core_of: np.ndarray, local: np.ndarray, images: dict[int, CoreImage]) -> None:
        """``core_of``/``local``: same length; each neuron in a distinct slot of an existing core."""
        if core_of.size != local.size:
            raise MapError(f"arrays 'core_of' ({core_of.size}) and 'local' ({local.size}) differ in length")
        k = len(images)
        bad = np.flatnonzero((core_of < 0) | (core_of >= k))
        if bad.size:
            i = int(bad[0])
            raise MapError(f"array 'core_of': neuron {i} is on vcore {int(core_of[i])}, the network has "
                           f"vcores 0..{k - 1}")
        held = np.array([images[q].num_neurons for q in range(k)], dtype=np.int64)
        cap = held[core_of] if core_of.size else np.zeros(0, np.int64)
        bad = np.flatnonzero((local < 0) | (local >= cap))
        if bad.size:
            i = int(bad[0])
            raise MapError(f"array 'local': neuron {i} has index {int(local[i])} on vcore {int(core_of[i])}, "
                           f"which holds {int(cap[i])} neurons")
        slot = core_of * max(int(held.max(initial=0)), 1) + local
        uniq, first = np.unique(slot, return_index=True)
        if uniq.size != slot.size:
            dup = np.setdiff1d(np.arange(slot.size), first)[0]
            other = int(first[np.searchsorted(uniq, slot[dup])])
            raise MapError(f"arrays 'core_of'/'local': neurons {other} and {int(dup)} both sit at vcore "
                           f"{int(core_of[dup])} index {int(local[dup])}")

    @staticmethod
    def _header_populations(pops, n: int) -> dict[str, np.ndarray]:
        """``populations``: name -> list of existing neuron ids (integers ``0..n-1``)."""
        if not isinstance(pops, dict):
            raise MapError(f"header field 'populations': must be a dict, not {type(pops).__name__}")
        out = {}
        for name, ids in pops.items():
            if not isinstance(ids, list) or any(type(v) is not int for v in ids):
                raise MapError(f"header field 'populations[{name!r}]': must be a list of integer neuron ids")
            bad = [v for v in ids if not 0 <= v < n]
            if bad:
                raise MapError(f"header field 'populations[{name!r}]': neuron {bad[0]} does not exist "
                               f"(the network has {n} neurons)")
            out[name] = np.asarray(ids, dtype=np.int64)
        return out


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
