"""The contents of one core, as field arrays, and their memory words (docs/architecture.md §5).

A :class:`CoreImage` is what the mapper produces and what the host loads:
it packs itself into the region words of :mod:`neurovm.formats` and checks
every word against the same legality rules the chip applies to WRITE data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .config import ChipConfig
from .formats import LEARN_REGIONS, REGIONS, SYN_LEARNING, LearnRegion, Region

__all__ = ["CoreImage", "ImageError", "LearningRule"]


class ImageError(ValueError):
    """A core image that no chip of the given configuration can hold."""


def _arr(x=()):
    return np.asarray(x, dtype=np.int64)


@dataclass(frozen=True)
class LearningRule:
    """A core's learning engine settings (§24): the STDP rule (LEARN_RULE) and the two traces (LEARN_CFG).

    ``dw = y0 * ((a_plus * x) >> s_plus) - x0 * ((a_minus * y) >> s_minus)`` at every learning pass,
    one pass every ``2 ** epoch_log2`` steps; the pre trace ``x`` (per axon) and the post trace ``y``
    (per neuron) decay by ``decay / 4096`` per step and grow by ``impulse`` per spike.
    ``enable`` = 0 keeps the settings but learns nothing (what ``VM.run(learn=False)`` runs with).
    """

    a_plus: int = 16
    a_minus: int = 16
    s_plus: int = 6
    s_minus: int = 6
    epoch_log2: int = 0
    x_decay: int = 512
    x_impulse: int = 64
    y_decay: int = 512
    y_impulse: int = 64
    enable: int = 1

    def rule_word(self) -> int:
        """The LEARN_RULE word; ImageError naming the field if a value does not fit it."""
        fmt = LEARN_REGIONS[LearnRegion.LEARN_RULE].fmt
        values = {name: getattr(self, name) for name in fmt.fields}
        return _packed("LEARN_RULE", fmt, values)

    def cfg_words(self) -> list[int]:
        """The two LEARN_CFG words: the pre trace (x), then the post trace (y)."""
        fmt = LEARN_REGIONS[LearnRegion.LEARN_CFG].fmt
        return [_packed(f"LEARN_CFG[{k}]", fmt, {"decay": getattr(self, f"{t}_decay"),
                                                  "impulse": getattr(self, f"{t}_impulse")})
                for k, t in enumerate("xy")]

    @classmethod
    def from_words(cls, rule_word: int, cfg_words) -> "LearningRule":
        """The settings a LEARN_RULE word and two LEARN_CFG words hold."""
        rule = LEARN_REGIONS[LearnRegion.LEARN_RULE].fmt.unpack(int(rule_word))
        cfg = [LEARN_REGIONS[LearnRegion.LEARN_CFG].fmt.unpack(int(w)) for w in cfg_words]
        return cls(**rule, x_decay=cfg[0]["decay"], x_impulse=cfg[0]["impulse"],
                   y_decay=cfg[1]["decay"], y_impulse=cfg[1]["impulse"])


def _packed(what: str, fmt, values: dict) -> int:
    for name, v in values.items():
        f = fmt[name]
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not f.min <= v <= f.max:
            raise ImageError(f"{what}.{name}={v!r} does not fit its {f.width}-bit "
                             f"{'signed' if f.signed else 'unsigned'} field ({f.min}..{f.max})")
    return fmt.pack(**values)


@dataclass
class CoreImage:
    """Configuration of one core. Arrays may be shorter than their region; the rest is zero.

    Per axon: ``syn_start``, ``syn_len``.  Per synapse entry: ``target``,
    ``weight``.  Per neuron: ``du``, ``dv``, ``refract``, ``bias_mant``,
    ``bias_exp``, ``vth_mant``, ``fo_start``, ``fo_len``, ``report``.  Per
    fan-out entry: ``fo_axon``, ``fo_vcore``.  Per core: ``weight_exp``,
    ``n_active`` (defaults to the number of neurons given).

    Learning (§24; only for a chip with ``ChipConfig.learning == 1``, every array empty by
    default): ``fixed`` per synapse entry (1 = not plastic), ``pre_x`` per axon and ``post_y``
    per neuron (initial trace values), ``learn_rule`` (0 or 1 LEARN_RULE word) and
    ``learn_cfg`` (0 or 2 LEARN_CFG words) -- see :meth:`with_learning`.
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
    fixed: np.ndarray = field(default_factory=_arr)
    pre_x: np.ndarray = field(default_factory=_arr)
    post_y: np.ndarray = field(default_factory=_arr)
    learn_rule: np.ndarray = field(default_factory=_arr)
    learn_cfg: np.ndarray = field(default_factory=_arr)
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
    _LEARN_FIELDS = ("fixed", "pre_x", "post_y", "learn_rule", "learn_cfg")

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
        if cfg.learning:
            out.update(self._learning_words(cfg))
        elif any(getattr(self, k).any() for k in self._LEARN_FIELDS):
            used = [k for k in self._LEARN_FIELDS if getattr(self, k).any()]
            raise ImageError(f"the image uses on-chip learning ({', '.join(used)}) but the chip has none "
                             f"(ChipConfig.learning=0)")
        return out

    @property
    def rule(self) -> LearningRule | None:
        """The image's learning settings, or None if it has none."""
        if not self.learn_rule.size:
            return None
        cfg = self.learn_cfg if self.learn_cfg.size else np.zeros(2, dtype=np.int64)
        return LearningRule.from_words(int(self.learn_rule[0]), cfg)

    def with_learning(self, rule: LearningRule, fixed=None) -> "CoreImage":
        """A copy of this image with the learning settings ``rule`` (and ``fixed`` bits, if given)."""
        from dataclasses import replace

        return replace(self, learn_rule=_arr([rule.rule_word()]), learn_cfg=_arr(rule.cfg_words()),
                       fixed=self.fixed if fixed is None else _arr(fixed).ravel())

    def _learning_words(self, cfg: ChipConfig) -> dict:
        """SYN with its ``fixed`` bits, LEARN_RULE and LEARN_CFG (zero words when not given), and
        the trace regions when initial values are given (§24.1)."""
        out: dict = {}
        n_syn = max(len(self.target), len(self.weight), len(self.fixed))
        for name, a in (("target", self.target), ("weight", self.weight), ("fixed", self.fixed)):
            if len(a) not in (0, n_syn):
                raise ImageError(f"SYN: '{name}' has {len(a)} entries, expected {n_syn}")
        cols = {k: (a if len(a) else np.zeros(n_syn, dtype=np.int64))
                for k, a in (("target", self.target), ("weight", self.weight), ("fixed", self.fixed))}
        out[Region.SYN] = self._checked(cfg, Region.SYN, cols, SYN_LEARNING)
        for region, name, size in ((LearnRegion.LEARN_RULE, "learn_rule", 1), (LearnRegion.LEARN_CFG, "learn_cfg", 2)):
            words = getattr(self, name)
            if len(words) not in (0, size):
                raise ImageError(f"{region.name}: '{name}' has {len(words)} words, expected 0 or {size}")
            words = words if len(words) else np.zeros(size, dtype=np.int64)
            spec = LEARN_REGIONS[region]
            bad = np.flatnonzero((words < 0) | (words > 0xFFFF_FFFF) | spec.invalid(cfg, words & 0xFFFF_FFFF))
            if bad.size:
                k = int(bad[0])
                raise ImageError(f"{region.name}[{k}]: word {int(words[k])}: "
                                 f"{spec.validate(cfg, int(words[k]) & 0xFFFF_FFFF) or 'not a 32-bit word'}")
            out[region] = words.astype(np.uint32)
        for region, name, fname in ((LearnRegion.PRE_TRACE, "pre_x", "x"), (LearnRegion.POST_TRACE, "post_y", "y")):
            a = getattr(self, name)
            if len(a):
                spec = LEARN_REGIONS[region]
                if len(a) > spec.size(cfg):
                    raise ImageError(f"{region.name}: {len(a)} entries given, the core has {spec.size(cfg)}")
                out[region] = self._checked(cfg, region, {fname: a}, spec)
        return out

    @staticmethod
    def _checked(cfg: ChipConfig, region, cols: dict, spec=None) -> np.ndarray:
        spec = REGIONS[region] if spec is None else spec
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
