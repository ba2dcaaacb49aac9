"""The contents of one core, as field arrays, and their memory words (docs/architecture.md §5).

A :class:`CoreImage` is what the mapper produces and what the host loads:
it packs itself into the region words of :mod:`neurovm.formats` and checks
every word against the same legality rules the chip applies to WRITE data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .config import ChipConfig
from .formats import REGIONS, Region

__all__ = ["CoreImage", "ImageError"]


class ImageError(ValueError):
    """A core image that no chip of the given configuration can hold."""


def _arr(x=()):
    return np.asarray(x, dtype=np.int64)


@dataclass
class CoreImage:
    """Configuration of one core. Arrays may be shorter than their region; the rest is zero.

    Per axon: ``syn_start``, ``syn_len``.  Per synapse entry: ``target``,
    ``weight``.  Per neuron: ``du``, ``dv``, ``refract``, ``bias_mant``,
    ``bias_exp``, ``vth_mant``, ``fo_start``, ``fo_len``, ``report``.  Per
    fan-out entry: ``fo_axon``, ``fo_vcore``.  Per core: ``weight_exp``,
    ``n_active`` (defaults to the number of neurons given).
    """

    syn_start: np.ndarray = field(default_factory=_arr)
    syn_len: np.ndarray = field(default_factory=_arr)
    target: np.ndarray = field(default_factory=_arr)
    weight: np.ndarray = field(default_factory=_arr)
    du: np.ndarray = field(default_factory=_arr)
    dv: np.ndarray = field(default_factory=_arr)
    refract: np.ndarray = field(default_factory=_arr)
    bias_mant: np.ndarray = field(default_factory=_arr)
    bias_exp: np.ndarray = field(default_factory=_arr)
    vth_mant: np.ndarray = field(default_factory=_arr)
    fo_start: np.ndarray = field(default_factory=_arr)
    fo_len: np.ndarray = field(default_factory=_arr)
    report: np.ndarray = field(default_factory=_arr)
    fo_axon: np.ndarray = field(default_factory=_arr)
    fo_vcore: np.ndarray = field(default_factory=_arr)
    weight_exp: int = 0
    n_active: int | None = None

    _GROUPS = {
        Region.AXON: ("syn_start", "syn_len"),
        Region.SYN: ("target", "weight"),
        Region.NRN_DECAY: ("du", "dv", "refract"),
        Region.NRN_BIAS: ("bias_mant", "bias_exp"),
        Region.NRN_VTH: ("vth_mant",),
        Region.FANOUT_PTR: ("fo_start", "fo_len", "report"),
        Region.FANOUT: ("fo_axon", "fo_vcore"),
    }
    _FIELD_OF = {"fo_axon": "axon", "fo_vcore": "vcore"}

    def __post_init__(self):
        for f in fields(self):
            if f.name not in ("weight_exp", "n_active"):
                setattr(self, f.name, _arr(getattr(self, f.name)).ravel())

    @property
    def num_neurons(self) -> int:
        return max(len(getattr(self, n)) for n in
                   ("du", "dv", "refract", "bias_mant", "bias_exp", "vth_mant", "fo_start", "fo_len", "report"))

    def region_words(self, cfg: ChipConfig) -> dict[Region, np.ndarray]:
        """The memory words of every configuration region (CORE_CFG included).

        Raises
        ------
        ImageError
            Naming the region, the entry and the rule, if any word is illegal
            or any array is longer than its region.
        """
        out: dict[Region, np.ndarray] = {}
        for region, names in self._GROUPS.items():
            spec = REGIONS[region]
            n = max(len(getattr(self, k)) for k in names)
            if n > spec.size(cfg):
                raise ImageError(f"{region.name}: {n} entries given, the core has {spec.size(cfg)}")
            cols = {}
            for k in names:
                a = getattr(self, k)
                if len(a) not in (0, n):
                    raise ImageError(f"{region.name}: '{k}' has {len(a)} entries, expected {n}")
                cols[self._FIELD_OF.get(k, k)] = a if len(a) else np.zeros(n, dtype=np.int64)
            out[region] = self._checked(cfg, region, cols)
        n_active = self.num_neurons if self.n_active is None else self.n_active
        out[Region.CORE_CFG] = self._checked(
            cfg, Region.CORE_CFG, {"weight_exp": _arr([self.weight_exp]), "n_active": _arr([n_active])})
        return out

    @staticmethod
    def _checked(cfg: ChipConfig, region: Region, cols: dict) -> np.ndarray:
        spec = REGIONS[region]
        for name, a in cols.items():
            f = spec.fmt[name]
            off = np.flatnonzero((a < f.min) | (a > f.max))
            if off.size:
                k = int(off[0])
                raise ImageError(f"{region.name}[{k}]: {name}={int(a[k])} does not fit its "
                                 f"{f.width}-bit field")
        words = spec.fmt.pack_array(**cols)
        bad = np.flatnonzero(spec.invalid(cfg, words))
        if bad.size:
            k = int(bad[0])
            raise ImageError(f"{region.name}[{k}]: {spec.validate(cfg, int(words[k]))}"
                             + (f" (and {bad.size - 1} more entries)" if bad.size > 1 else ""))
        return words
