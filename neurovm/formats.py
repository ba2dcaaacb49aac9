"""Bit-level word formats of NeuroVM, declared once.

Every 32-bit word the chip reads or writes -- host commands, output messages,
and the per-core memory words -- is described here as a :class:`WordFormat`
(a list of :class:`Field` with bit offsets).  The emulator packs and unpacks
with these tables, the host encodes commands with them, and
``neurovm.hdl.layouts`` turns the same tables into Amaranth ``data.Struct``
layouts; ``tests/test_formats.py`` checks that the bit offsets agree.

The tables are the machine-readable half of docs/architecture.md §5-§8.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .config import (
    BIAS_EXP_BITS,
    BIAS_MANT_BITS,
    DECAY_BITS,
    HV_VM,
    LEARN_EPOCH_BITS,
    LEARN_RATE_BITS,
    LEARN_SHIFT_BITS,
    REFRACT_BITS,
    TRACE_BITS,
    TRACE_IMPULSE_BITS,
    U_MAX,
    U_MIN,
    V_MAX,
    V_MIN,
    VM_BITS,
    VTH_BITS,
    WEIGHT_EXP_MAX,
    WEIGHT_EXP_MIN,
    ChipConfig,
)

__all__ = [
    "command_length",
    "Field", "WordFormat", "Opcode", "OutType", "ErrorCode", "FaultCause", "Perm",
    "Region", "RegionSpec", "REGIONS", "COMMAND_FORMATS", "OUTPUT_FORMATS",
    "LearnRegion", "LEARN_REGIONS", "SYN_LEARNING", "region_specs",
    "MMU_ENTRY", "Counter", "NUM_COUNTERS", "ARCH_COUNTERS", "GUEST_COUNTERS", "ALL_DOMAINS", "domain_bit", "COUNTER_BITS", "WORD_BITS",
    "AXON_EVENT", "CORE_SPIKE", "CFG_REQUEST", "CfgOp", "AER_PACKET", "LINK_FORMATS",
]

WORD_BITS = 32
WORD_MASK = 0xFFFF_FFFF
#: Every telemetry counter is one 32-bit wrapping word (§9.1).
COUNTER_BITS = WORD_BITS


@dataclass(frozen=True)
class Field:
    """One bit field of a 32-bit word: bits ``[lsb + width - 1 : lsb]``."""

    name: str
    lsb: int
    width: int
    signed: bool = False

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def min(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    def get(self, word):
        """Extract this field from an int or a numpy array of words."""
        if isinstance(word, np.ndarray):
            raw = (word.astype(np.int64) >> self.lsb) & ((1 << self.width) - 1)
            if self.signed:
                raw = raw - ((raw >> (self.width - 1)) << self.width)
            return raw
        raw = (int(word) >> self.lsb) & ((1 << self.width) - 1)
        if self.signed and raw >> (self.width - 1):
            raw -= 1 << self.width
        return raw

    def put(self, value):
        """Place ``value`` (int or numpy array) into this field's bits."""
        if isinstance(value, np.ndarray):
            return ((value.astype(np.int64) & ((1 << self.width) - 1)) << self.lsb).astype(np.int64)
        return (int(value) & ((1 << self.width) - 1)) << self.lsb


class WordFormat:
    """A named word made of non-overlapping fields; other bits are reserved (zero).

    Host-visible words are 32 bits; the payloads of internal HDL links
    (:data:`LINK_FORMATS`) use ``bits`` up to 63.
    """

    def __init__(self, name: str, *fields: Field, bits: int = WORD_BITS):
        if not 1 <= bits <= 63:
            raise ValueError(f"{name}: {bits} bits is outside 1..63")
        self.name = name
        self.bits = bits
        self.fields: dict[str, Field] = {}
        used = 0
        for f in fields:
            if f.lsb < 0 or f.width < 1 or f.lsb + f.width > bits:
                raise ValueError(f"{name}.{f.name} does not fit a {bits}-bit word")
            if used & f.mask:
                raise ValueError(f"{name}.{f.name} overlaps another field")
            used |= f.mask
            self.fields[f.name] = f
        self.used_mask = used
        self.reserved_mask = ((1 << bits) - 1) & ~used

    def __getitem__(self, name: str) -> Field:
        return self.fields[name]

    def __repr__(self):
        return f"WordFormat({self.name!r}, {list(self.fields)})"

    def pack(self, **values) -> int:
        """Pack field values into a word; every value must fit its field."""
        word = 0
        for name, value in values.items():
            if name not in self.fields:
                raise KeyError(f"{self.name} has no field {name!r}")
            f = self.fields[name]
            if not f.min <= int(value) <= f.max:
                raise ValueError(f"{self.name}.{name}={value} does not fit {f.width} "
                                 f"{'signed' if f.signed else 'unsigned'} bits")
            word |= f.put(value)
        return word

    def pack_array(self, **values) -> np.ndarray:
        """Vectorized :meth:`pack` (no range check; callers validate first)."""
        word = None
        for name, value in values.items():
            part = self.fields[name].put(np.asarray(value))
            word = part if word is None else word | part
        return np.asarray(word, dtype=np.int64).astype(np.uint32 if self.bits <= WORD_BITS else np.uint64)

    def unpack(self, word: int) -> dict[str, int]:
        return {name: f.get(word) for name, f in self.fields.items()}


# ---------------------------------------------------------------------------
# Host command stream (docs/architecture.md §8.1)
# ---------------------------------------------------------------------------
class Opcode(enum.IntEnum):
    NOP = 0x0
    WRITE = 0x1
    READ = 0x2
    INJECT = 0x3
    RUN = 0x4
    MMU_MAP = 0x5
    READ_COUNTERS = 0x6
    RESET = 0x7
    SYNC = 0x8


def command_length(header: int) -> int:
    """Words in the command that starts with ``header`` (§8.1): WRITE ``2 + count``,
    READ and MMU_MAP 2, everything else (unknown opcodes included) 1."""
    op = _OP.get(int(header))
    if op == Opcode.WRITE:
        return 2 + COMMAND_FORMATS[Opcode.WRITE]["count"].get(int(header))
    return 2 if op in (Opcode.READ, Opcode.MMU_MAP) else 1


#: RUN's ``domains``: bit d = the cores of domain d (guest VM d, or the bare-metal cores for d = HV_VM).
ALL_DOMAINS = (1 << (HV_VM + 1)) - 1


def domain_bit(vm: int) -> int:
    """The RUN ``domains`` bit of guest VM ``vm`` (or of the bare-metal cores for ``HV_VM``)."""
    return 1 << vm


_OP = Field("op", 28, 4)
_VM = Field("vm", 24, VM_BITS)
_VCORE = Field("vcore", 16, 8)

COMMAND_FORMATS: dict[Opcode, WordFormat] = {
    Opcode.NOP: WordFormat("NOP", _OP),
    Opcode.WRITE: WordFormat("WRITE", _OP, _VM, _VCORE, Field("region", 12, 4), Field("count", 0, 12)),
    Opcode.READ: WordFormat("READ", _OP, _VM, _VCORE, Field("region", 12, 4), Field("count", 0, 12)),
    Opcode.INJECT: WordFormat("INJECT", _OP, _VM, _VCORE, Field("axon", 0, 16)),
    Opcode.RUN: WordFormat("RUN", _OP, _VM, Field("domains", 16, 8), Field("steps", 0, 12)),
    Opcode.MMU_MAP: WordFormat("MMU_MAP", _OP, _VM),
    Opcode.READ_COUNTERS: WordFormat("READ_COUNTERS", _OP, _VM, _VCORE, Field("first", 4, 4), Field("count", 0, 4)),
    Opcode.RESET: WordFormat("RESET", _OP, _VM, Field("scope", 16, 1), Field("pcore", 0, 8)),
    Opcode.SYNC: WordFormat("SYNC", _OP, Field("tag", 0, 24)),
}

#: Payload word of MMU_MAP: one translation-table entry.
MMU_ENTRY = WordFormat(
    "MMU_ENTRY",
    Field("tvm", 24, VM_BITS),
    Field("vcore", 16, 8),
    Field("valid", 15, 1),
    Field("perms", 12, 3),
    Field("pcore", 0, 8),
)


class Perm(enum.IntFlag):
    """Permission bits of a translation-table entry."""

    R = 1  # host READ / READ_COUNTERS
    W = 2  # host WRITE
    S = 4  # receive spikes (INJECT and fan-out)
    ALL = 7


# ---------------------------------------------------------------------------
# Output stream (docs/architecture.md §8.2)
# ---------------------------------------------------------------------------
class OutType(enum.IntEnum):
    READ_DATA = 0x1
    SPIKE = 0x2
    STEP_END = 0x3
    FAULT = 0x4
    COUNTERS = 0x5
    SYNC_ACK = 0x6
    ERROR = 0xE


_TYPE = Field("type", 28, 4)
OUTPUT_FORMATS: dict[OutType, WordFormat] = {
    OutType.READ_DATA: WordFormat("READ_DATA", _TYPE, Field("count", 0, 12)),
    OutType.SPIKE: WordFormat("SPIKE", _TYPE, _VM, _VCORE, Field("neuron", 0, 16)),
    OutType.STEP_END: WordFormat("STEP_END", _TYPE),
    OutType.FAULT: WordFormat("FAULT", _TYPE, _VM, Field("cause", 20, 4), Field("origin", 19, 1)),
    OutType.COUNTERS: WordFormat("COUNTERS", _TYPE, Field("count", 0, 4)),
    OutType.SYNC_ACK: WordFormat("SYNC_ACK", _TYPE, Field("tag", 0, 24)),
    OutType.ERROR: WordFormat("ERROR", _TYPE, Field("code", 20, 4), Field("detail", 0, 16)),
}

#: Number of payload words after each output header (READ_DATA and COUNTERS: ``count``).
OUTPUT_PAYLOAD_WORDS = {
    OutType.SPIKE: 1, OutType.STEP_END: 1, OutType.FAULT: 2,
    OutType.SYNC_ACK: 0, OutType.ERROR: 2,
}

#: Fan-out fault payload word 1: the source of the failed spike.
FANOUT_SOURCE = WordFormat("FANOUT_SOURCE", Field("vcore", 16, 8), Field("neuron", 0, 16))


class ErrorCode(enum.IntEnum):
    """Malformed-command errors (the command is dropped; the chip keeps working)."""

    UNKNOWN_OPCODE = 1
    RESERVED_BITS = 2
    BAD_VM = 3
    BAD_LENGTH = 4
    BAD_REGION = 5
    BAD_ADDRESS = 6
    BAD_FIELD = 7


class FaultCause(enum.IntEnum):
    """Virtualization faults (the access is refused and changes nothing)."""

    UNMAPPED = 1
    PERMISSION = 2
    PRIVILEGE = 3
    CORE_OWNED = 4
    CROSS_VM = 5


class FaultOrigin(enum.IntEnum):
    HOST = 0
    FANOUT = 1


# ---------------------------------------------------------------------------
# Per-core memory regions (docs/architecture.md §5)
# ---------------------------------------------------------------------------
class Region(enum.IntEnum):
    AXON = 0
    SYN = 1
    NRN_DECAY = 2
    NRN_BIAS = 3
    NRN_VTH = 4
    FANOUT_PTR = 5
    FANOUT = 6
    STATE_U = 7
    STATE_V = 8
    STATE_REF = 9
    ACC = 10
    CORE_CFG = 11


Limits = Callable[[ChipConfig], Mapping[str, tuple[int, int]]]


@dataclass(frozen=True)
class RegionSpec:
    """A per-core memory region: its size, word format and the legal field values.

    ``limits(cfg)`` gives ``{field: (min, max)}`` for fields narrower than their
    bits allow; ``extent`` = ``(start, length, size_attr)`` requires
    ``start + length <= cfg.<size_attr>``.
    """

    region: Region
    fmt: WordFormat
    size: Callable[[ChipConfig], int]
    limits: Limits = lambda cfg: {}
    extent: tuple[str, str, str] | None = None

    def bounds(self, cfg: ChipConfig) -> dict[str, tuple[int, int]]:
        out = {name: (f.min, f.max) for name, f in self.fmt.fields.items()}
        out.update(self.limits(cfg))
        return out

    def validate(self, cfg: ChipConfig, word: int) -> str | None:
        """Return ``None`` if ``word`` is a legal memory word, else why not."""
        if word & self.fmt.reserved_mask:
            return f"reserved bits 0x{word & self.fmt.reserved_mask:08x} set"
        vals = self.fmt.unpack(word)
        for name, (lo, hi) in self.bounds(cfg).items():
            if not lo <= vals[name] <= hi:
                return f"{name}={vals[name]} outside {lo}..{hi}"
        if self.extent is not None:
            s, n, size_attr = self.extent
            if vals[s] + vals[n] > getattr(cfg, size_attr):
                return f"{s}+{n}={vals[s] + vals[n]} exceeds {size_attr}={getattr(cfg, size_attr)}"
        return None

    def invalid(self, cfg: ChipConfig, words: np.ndarray) -> np.ndarray:
        """Vectorized :meth:`validate`: a boolean array, True where a word is illegal."""
        words = np.asarray(words, dtype=np.int64)
        bad = (words & self.fmt.reserved_mask) != 0
        vals = {name: f.get(words) for name, f in self.fmt.fields.items()}
        for name, (lo, hi) in self.bounds(cfg).items():
            bad |= (vals[name] < lo) | (vals[name] > hi)
        if self.extent is not None:
            s, n, size_attr = self.extent
            bad |= vals[s] + vals[n] > getattr(cfg, size_attr)
        return bad


def _n(cfg):
    return cfg.neurons_per_core


REGIONS: dict[Region, RegionSpec] = {
    Region.AXON: RegionSpec(
        Region.AXON,
        WordFormat("AXON", Field("syn_start", 0, 16), Field("syn_len", 16, 16)),
        size=lambda cfg: cfg.axons_per_core,
        limits=lambda cfg: {"syn_start": (0, cfg.synapses_per_core - 1), "syn_len": (0, cfg.synapses_per_core)},
        extent=("syn_start", "syn_len", "synapses_per_core"),
    ),
    Region.SYN: RegionSpec(
        Region.SYN,
        WordFormat("SYN", Field("target", 0, 16), Field("weight", 16, 8, signed=True)),
        size=lambda cfg: cfg.synapses_per_core,
        limits=lambda cfg: {"target": (0, cfg.neurons_per_core - 1), "weight": (cfg.weight_min, cfg.weight_max)},
    ),
    Region.NRN_DECAY: RegionSpec(
        Region.NRN_DECAY,
        WordFormat("NRN_DECAY", Field("du", 0, DECAY_BITS), Field("dv", 12, DECAY_BITS),
                   Field("refract", 24, REFRACT_BITS)),
        size=_n,
    ),
    Region.NRN_BIAS: RegionSpec(
        Region.NRN_BIAS,
        WordFormat("NRN_BIAS", Field("bias_mant", 0, BIAS_MANT_BITS, signed=True),
                   Field("bias_exp", 16, BIAS_EXP_BITS)),
        size=_n,
    ),
    Region.NRN_VTH: RegionSpec(Region.NRN_VTH, WordFormat("NRN_VTH", Field("vth_mant", 0, VTH_BITS)), size=_n),
    Region.FANOUT_PTR: RegionSpec(
        Region.FANOUT_PTR,
        WordFormat("FANOUT_PTR", Field("fo_start", 0, 16), Field("fo_len", 16, 15), Field("report", 31, 1)),
        size=_n,
        limits=lambda cfg: {"fo_start": (0, cfg.fanout_per_core - 1), "fo_len": (0, cfg.fanout_per_core)},
        extent=("fo_start", "fo_len", "fanout_per_core"),
    ),
    Region.FANOUT: RegionSpec(
        Region.FANOUT,
        WordFormat("FANOUT", Field("axon", 0, 16), Field("vcore", 16, 8)),
        size=lambda cfg: cfg.fanout_per_core,
        limits=lambda cfg: {"axon": (0, cfg.axons_per_core - 1),
                            "vcore": (0, max(cfg.vcores_per_vm, cfg.num_cores) - 1)},
    ),
    Region.STATE_U: RegionSpec(Region.STATE_U, WordFormat("STATE_U", Field("u", 0, 32, signed=True)), size=_n,
                               limits=lambda cfg: {"u": (U_MIN, U_MAX)}),
    Region.STATE_V: RegionSpec(Region.STATE_V, WordFormat("STATE_V", Field("v", 0, 32, signed=True)), size=_n,
                               limits=lambda cfg: {"v": (V_MIN, V_MAX)}),
    Region.STATE_REF: RegionSpec(Region.STATE_REF, WordFormat("STATE_REF", Field("ref", 0, REFRACT_BITS)), size=_n),
    Region.ACC: RegionSpec(Region.ACC, WordFormat("ACC", Field("acc", 0, 32, signed=True)), size=_n,
                           limits=lambda cfg: {"acc": (U_MIN, U_MAX)}),
    Region.CORE_CFG: RegionSpec(
        Region.CORE_CFG,
        WordFormat("CORE_CFG", Field("weight_exp", 0, 4, signed=True), Field("n_active", 16, 16)),
        size=lambda cfg: 1,
        limits=lambda cfg: {"weight_exp": (WEIGHT_EXP_MIN, WEIGHT_EXP_MAX), "n_active": (0, cfg.neurons_per_core)},
    ),
}


# ---------------------------------------------------------------------------
# On-chip learning (docs/architecture.md §24).  These regions exist only on a
# chip built with ``ChipConfig.learning == 1``; on any other chip their ids are
# BAD_REGION exactly as before, so the default chip (and the HDL, which has no
# learning engine yet) is unchanged.  They are not members of :class:`Region`
# for the same reason: code that walks ``Region`` sees the base chip.
# ---------------------------------------------------------------------------
class LearnRegion(enum.IntEnum):
    """Region ids of the learning engine (the 4-bit ``region`` field's last four values)."""

    PRE_TRACE = 12    # per axon: pre-synaptic trace x, epoch flag x0, pending event
    POST_TRACE = 13   # per neuron: post-synaptic trace y, epoch flag y0
    LEARN_CFG = 14    # 2 words: the trace parameters, word 0 = pre (x), word 1 = post (y)
    LEARN_RULE = 15   # 1 word: the STDP rule, its epoch and the core's enable


#: The synapse word of a learning chip: bit 24 ``fixed`` = 1 keeps the weight out of learning.
SYN_LEARNING = RegionSpec(
    Region.SYN,
    WordFormat("SYN", Field("target", 0, 16), Field("weight", 16, 8, signed=True), Field("fixed", 24, 1)),
    size=lambda cfg: cfg.synapses_per_core,
    limits=lambda cfg: {"target": (0, cfg.neurons_per_core - 1), "weight": (cfg.weight_min, cfg.weight_max)},
)

LEARN_REGIONS: dict[LearnRegion, RegionSpec] = {
    LearnRegion.PRE_TRACE: RegionSpec(
        LearnRegion.PRE_TRACE,
        WordFormat("PRE_TRACE", Field("x", 0, TRACE_BITS), Field("x0", 8, 1), Field("pend", 9, 1)),
        size=lambda cfg: cfg.axons_per_core,
    ),
    LearnRegion.POST_TRACE: RegionSpec(
        LearnRegion.POST_TRACE,
        WordFormat("POST_TRACE", Field("y", 0, TRACE_BITS), Field("y0", 8, 1)),
        size=_n,
    ),
    LearnRegion.LEARN_CFG: RegionSpec(
        LearnRegion.LEARN_CFG,
        WordFormat("LEARN_CFG", Field("decay", 0, DECAY_BITS), Field("impulse", 16, TRACE_IMPULSE_BITS)),
        size=lambda cfg: 2,
    ),
    LearnRegion.LEARN_RULE: RegionSpec(
        LearnRegion.LEARN_RULE,
        WordFormat("LEARN_RULE", Field("a_plus", 0, LEARN_RATE_BITS, signed=True),
                   Field("a_minus", 8, LEARN_RATE_BITS, signed=True), Field("s_plus", 16, LEARN_SHIFT_BITS),
                   Field("s_minus", 20, LEARN_SHIFT_BITS), Field("epoch_log2", 24, LEARN_EPOCH_BITS),
                   Field("enable", 31, 1)),
        size=lambda cfg: 1,
    ),
}


def region_specs(cfg: ChipConfig) -> dict[int, RegionSpec]:
    """The regions a chip of configuration ``cfg`` has, by id: :data:`REGIONS`, plus, on a
    learning chip (``cfg.learning == 1``), :data:`LEARN_REGIONS` and the SYN word with its
    ``fixed`` bit (§24).  What WRITE and READ check a region id and its words against."""
    specs: dict[int, RegionSpec] = dict(REGIONS)
    if getattr(cfg, "learning", 0):
        specs[Region.SYN] = SYN_LEARNING
        specs.update(LEARN_REGIONS)
    return specs


class Counter(enum.IntEnum):
    """Per-core telemetry counters (32-bit, wrapping), read with READ_COUNTERS."""

    SYN_OPS = 0
    NEURON_UPDATES = 1
    SPIKES_OUT = 2
    PACKETS_SENT = 3
    HOPS_X = 4
    HOPS_Y = 5
    PACKETS_ROUTED = 6
    BUSY_CYCLES = 7  # implementation-defined; excluded from bit-exact comparisons


NUM_COUNTERS = len(Counter)
#: Counters whose values are architectural (identical on every backend).
ARCH_COUNTERS = NUM_COUNTERS - 1
#: Counters a guest may read: 0..5 (PACKETS_ROUTED and BUSY_CYCLES see other VMs' traffic; §9.1).
GUEST_COUNTERS = int(Counter.PACKETS_ROUTED)


# ---------------------------------------------------------------------------
# Internal links between HDL blocks (docs/architecture.md §12).  Not visible to
# the host; declared here so the HDL stream payloads (``hdl/layouts.py``) and
# the cocotb drivers and monitors pack the same bits.
# ---------------------------------------------------------------------------
#: Input of a core: one spike arriving on one of its axons (INJECT or mesh).
AXON_EVENT = WordFormat("AXON_EVENT", Field("axon", 0, 16), bits=16)

#: Output of a core: a spike to report (``report`` = 1, other fields 0 but
#: ``neuron``) or one fan-out entry of a spiking neuron.  Bits [23:0] are the
#: FANOUT memory word (the virtual destination the MMU translates).
CORE_SPIKE = WordFormat(
    "CORE_SPIKE",
    Field("axon", 0, 16), Field("vcore", 16, 8), Field("neuron", 24, 16), Field("report", 40, 1),
    bits=41,
)


class CfgOp(enum.IntEnum):
    """Operation of a core configuration request."""

    READ = 0    # read one memory word; the core answers with its 32-bit value
    WRITE = 1   # write one (already validated) memory word
    CLEAR = 2   # RESET core: zero every memory, register and counter


#: Configuration request to one core (from the host interface, after the MMU).
CFG_REQUEST = WordFormat(
    "CFG_REQUEST",
    Field("data", 0, 32), Field("addr", 32, 16), Field("region", 48, 4), Field("op", 52, 2),
    bits=54,
)

#: An AER packet on the mesh (§10).
AER_PACKET = WordFormat("AER_PACKET", Field("axon", 0, 16), Field("dst_x", 16, 4), Field("dst_y", 20, 4), bits=24)

LINK_FORMATS = {f.name: f for f in (AXON_EVENT, CORE_SPIKE, CFG_REQUEST, AER_PACKET)}
