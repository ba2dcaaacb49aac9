"""Encode host commands and decode the chip's output stream (docs/architecture.md §8).

Pure functions over :mod:`neurovm.formats`; shared by every backend and by
the tests.  ``encode_*`` return lists of 32-bit ints; :func:`decode_output`
turns an output word stream into typed messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from neurovm.config import HV_VM
from neurovm.formats import (
    ALL_DOMAINS,
    COMMAND_FORMATS,
    FANOUT_SOURCE,
    MMU_ENTRY,
    OUTPUT_FORMATS,
    OUTPUT_PAYLOAD_WORDS,
    REGIONS,
    ErrorCode,
    FaultCause,
    FaultOrigin,
    LearnRegion,
    Opcode,
    OutType,
    Perm,
    Region,
    command_length,
)

__all__ = [
    "encode_write", "encode_read", "encode_inject", "encode_run", "encode_mmu_map",
    "encode_read_counters", "encode_reset", "encode_sync", "command_starts", "encode_nop", "resync_words",
    "ReadData", "Spike", "StepEnd", "Fault", "CountersMsg", "SyncAck", "ErrorMsg",
    "decode_output", "decode_spikes", "split_messages", "ProtocolError", "MAX_BURST",
    "RequestError", "FramingError", "WordRangeError", "check_framing", "as_words", "check_int", "check_steps",
]

MAX_BURST = 4095  # data words per WRITE/READ command
WORD_MAX = 0xFFFF_FFFF


class RequestError(ValueError):
    """A request the host refuses before sending any word (a value that does not fit its
    field, a bad step count, a stream that ends inside a command): nothing changed."""


class FramingError(RequestError):
    """A command word stream that ends inside a command (§8.1 lengths); nothing was sent."""


def check_int(what: str, value, lo: int, hi: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool) in ``lo..hi``, else :class:`RequestError` naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise RequestError(f"{what} must be an integer, not {value!r} ({type(value).__name__})")
    if value < lo or (hi is not None and value > hi):
        allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise RequestError(f"{what}={int(value)} is outside {allowed}")
    return int(value)


class WordRangeError(RequestError):
    """A value that is not an integer in the allowed range; ``index`` and ``value`` name it."""

    def __init__(self, message: str, index: int, value, lo: int | None, hi: int | None):
        self.index, self.value, self.lo, self.hi = index, value, lo, hi
        super().__init__(message)

    @classmethod
    def of(cls, what: str, index: int, value, lo: int | None = None, hi: int | None = None) -> "WordRangeError":
        why = f"{value!r} is not an integer" if lo is None else f"value {value} is outside {lo}..{hi}"
        return cls(f"{what} {index}: {why}", index, value, lo, hi)


def as_words(values, what: str = "word", lo: int = 0, hi: int = WORD_MAX) -> np.ndarray:
    """``values`` as a flat int64 array, refusing (:class:`WordRangeError` naming ``what``, the
    index and the value) any non-integer or any value outside ``lo..hi``: nothing is ever
    wrapped, masked or truncated."""
    arr = np.asarray(values)
    flat = arr.ravel()
    if arr.dtype.kind in "iu":
        bad = np.flatnonzero((flat < lo) | (flat > hi))
        if bad.size:
            i = int(bad[0])
            raise WordRangeError.of(what, i, int(flat[i]), lo, hi)
        return flat.astype(np.int64)
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    items = flat.tolist()
    for i, v in enumerate(items):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise WordRangeError.of(what, i, v)
        if not lo <= v <= hi:
            raise WordRangeError.of(what, i, v, lo, hi)
    return np.array(items, dtype=np.int64)


def check_framing(words) -> np.ndarray:
    """Header positions of a command stream; :class:`FramingError` if it ends inside a command.

    The error names the command (its position among the commands, its opcode and header),
    the word it starts at, its length and how many words are missing.
    """
    words = as_words(words, "command word")
    starts = command_starts(words)
    if starts.size:
        last = int(starts[-1])
        need = command_length(int(words[last]))
        have = words.size - last
        if have < need:
            op = (int(words[last]) >> 28) & 0xF
            name = Opcode(op).name if op in Opcode._value2member_map_ else f"opcode {op}"
            raise FramingError(f"the command stream ends inside command {starts.size - 1} ({name} header "
                               f"0x{int(words[last]):08x} at word {last}): it has {need} words, {have} given, "
                               f"{need - have} missing; nothing was sent")
    return starts


def _cmd(op: Opcode, **fields) -> int:
    fmt = COMMAND_FORMATS[op]
    for name, value in fields.items():   # integers only, in range: never truncated, wrapped or masked
        check_int(f"{fmt.name}.{name}", value, fmt[name].min, fmt[name].max)
    return fmt.pack(op=op, **fields)


def encode_nop() -> list[int]:
    return [0]


def resync_words() -> list[int]:
    """Words that return the parser to a command boundary from any state (§8.1.3)."""
    return [0] * (2 + MAX_BURST)


def encode_write(vm: int, vcore: int, region: Region, addr: int, data: Sequence[int]) -> list[int]:
    """WRITE commands for ``data`` at ``addr`` (split into bursts of at most 4095 words).

    Every data value must be a 32-bit word, ``0 .. 2**32-1``; a signed value ``-2**31 .. -1``
    is accepted (as its two's complement) only in a region whose word is one signed 32-bit
    field (u, v, acc).  Anything else raises :class:`WordRangeError` naming the region, address and value.
    """
    where = f"WRITE VM {vm} vcore {vcore} {_region_name(region)}"
    fields = REGIONS[Region(region)].fmt.fields if int(region) in Region._value2member_map_ else {}
    signed32 = len(fields) == 1 and next(iter(fields.values())).signed and next(iter(fields.values())).width == 32
    addr = check_int(f"{where} address", addr, 0, WORD_MAX)
    try:
        arr = as_words(data, "data word", -(1 << 31) if signed32 else 0, WORD_MAX)
    except WordRangeError as e:
        kind = "a signed 32-bit field" if signed32 else "a 32-bit memory word"
        why = f"{e.value!r} is not an integer" if e.lo is None else \
            f"value {e.value} is outside {e.lo}..{e.hi} ({kind})"
        raise WordRangeError(f"{where}[{addr + e.index}]: {why}; nothing was sent", e.index, e.value, e.lo, e.hi) \
            from None
    if addr + arr.size - 1 > WORD_MAX:
        raise RequestError(f"{where}: address {addr} + {arr.size} words passes the 32-bit address space")
    data = (arr & WORD_MAX).tolist()
    out: list[int] = []
    for off in range(0, len(data), MAX_BURST):
        chunk = data[off : off + MAX_BURST]
        out.append(_cmd(Opcode.WRITE, vm=vm, vcore=vcore, region=int(region), count=len(chunk)))
        out.append(addr + off)
        out.extend(chunk)
    return out


def encode_read(vm: int, vcore: int, region: Region, addr: int, count: int) -> list[int]:
    """READ commands for ``count`` words (split into bursts of at most 4095 words)."""
    where = f"READ VM {vm} vcore {vcore} {_region_name(region)}"
    addr = check_int(f"{where} address", addr, 0, WORD_MAX)
    count = check_int(f"{where}[{addr}] count", count, 1, WORD_MAX - addr + 1)
    out: list[int] = []
    for off in range(0, count, MAX_BURST):
        n = min(MAX_BURST, count - off)
        out += [_cmd(Opcode.READ, vm=vm, vcore=vcore, region=int(region), count=n), addr + off]
    return out


def encode_inject(vm: int, vcore: int, axon: int) -> list[int]:
    return [_cmd(Opcode.INJECT, vm=vm, vcore=vcore, axon=axon)]


def encode_run(steps: int, vm: int = HV_VM, domains: int = ALL_DOMAINS) -> list[int]:
    """RUN commands for ``steps`` timesteps of the cores of ``domains`` (§8.1; split into runs of
    at most 4095 steps).  ``domains``: bit d = guest VM d (``domain_bit``), bit 7 = the bare-metal
    cores; the default steps every core."""
    steps = check_steps(steps)
    domains = check_int("run: domains", domains, 1, ALL_DOMAINS)
    out: list[int] = []
    while steps > 0:
        n = min(steps, 4095)
        out.append(_cmd(Opcode.RUN, vm=vm, domains=domains, steps=n))
        steps -= n
    return out


def encode_mmu_map(tvm: int, vcore: int, pcore: int = 0, perms: int = Perm.ALL, valid: bool = True,
                   vm: int = HV_VM) -> list[int]:
    for name, value in (("tvm", tvm), ("vcore", vcore), ("pcore", pcore), ("perms", perms)):
        check_int(f"MMU_MAP entry.{name}", value, MMU_ENTRY[name].min, MMU_ENTRY[name].max)
    entry = MMU_ENTRY.pack(tvm=tvm, vcore=vcore, valid=int(valid), perms=int(perms), pcore=pcore)
    return [_cmd(Opcode.MMU_MAP, vm=vm), entry]


def encode_read_counters(vm: int, vcore: int, first: int = 0, count: int = 8) -> list[int]:
    return [_cmd(Opcode.READ_COUNTERS, vm=vm, vcore=vcore, first=first, count=count)]


def encode_reset(pcore: int | None = None, vm: int = HV_VM) -> list[int]:
    """RESET of the whole chip (``pcore=None``) or of one physical core."""
    if pcore is None:
        return [_cmd(Opcode.RESET, vm=vm, scope=0, pcore=0)]
    return [_cmd(Opcode.RESET, vm=vm, scope=1, pcore=pcore)]


def check_steps(steps) -> int:
    """``steps`` as an int if it is a positive integer (not a bool); :class:`RequestError` otherwise.

    The one rule every ``run`` API applies (``ChipClient.run``, ``Chip.run``, ``VM.run``).
    """
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < 1:
        shown = steps.item() if isinstance(steps, np.generic) else steps
        raise RequestError(f"run: steps must be a positive integer, not {shown!r}")
    return int(steps)


def _region_name(region) -> str:
    for names in (Region, LearnRegion):   # LearnRegion: the learning chip's regions (§24)
        try:
            return names(region).name
        except ValueError:
            pass
    return f"region {region!r}"


def command_starts(words) -> np.ndarray:
    """Positions of the command headers in a word stream (framing by §8.1 lengths)."""
    words = np.asarray(words, dtype=np.int64).ravel()
    starts, pos = [], 0
    while pos < words.size:
        starts.append(pos)
        pos += command_length(int(words[pos]))
    return np.array(starts, dtype=np.int64)


def encode_sync(tag: int) -> list[int]:
    return [_cmd(Opcode.SYNC, tag=tag)]


# ---------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadData:
    data: np.ndarray


@dataclass(frozen=True)
class Spike:
    vm: int
    vcore: int
    neuron: int
    timestep: int


@dataclass(frozen=True)
class StepEnd:
    timestep: int


@dataclass(frozen=True)
class Fault:
    """A refused access. ``word``/``index`` name the command word (host origin),
    or ``word`` is the fan-out entry and ``src_vcore``/``src_neuron`` its source."""

    vm: int
    cause: FaultCause
    origin: FaultOrigin
    word: int
    index: int  # stream index of the word (host origin) or raw source word (fan-out)

    @property
    def src_vcore(self) -> int:
        return FANOUT_SOURCE["vcore"].get(self.index)

    @property
    def src_neuron(self) -> int:
        return FANOUT_SOURCE["neuron"].get(self.index)

    def __str__(self):
        if self.origin == FaultOrigin.FANOUT:
            dst = REGIONS[Region.FANOUT].fmt.unpack(self.word)
            return (f"{self.cause.name} fault: VM {self.vm} vcore {self.src_vcore} neuron {self.src_neuron} "
                    f"spiked to vcore {dst['vcore']} axon {dst['axon']}")
        return f"{self.cause.name} fault: VM {self.vm}, command word 0x{self.word:08x} at stream index {self.index}"


@dataclass(frozen=True)
class CountersMsg:
    values: np.ndarray


@dataclass(frozen=True)
class SyncAck:
    tag: int


@dataclass(frozen=True)
class ErrorMsg:
    code: ErrorCode
    detail: int
    word: int
    index: int

    def __str__(self):
        return f"{self.code.name} error: word 0x{self.word:08x} at stream index {self.index} (detail {self.detail})"


class ProtocolError(ValueError):
    """The output stream itself is malformed (a backend bug, never a user error)."""


def split_messages(words) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Message boundaries of an output stream: (header positions, types, payload lengths).

    Raises :class:`ProtocolError` on an unknown type or a truncated message.
    """
    w = np.asarray(words, dtype=np.int64)
    fixed = {int(t): n for t, n in OUTPUT_PAYLOAD_WORDS.items()}
    counted = (int(OutType.READ_DATA), int(OutType.COUNTERS))
    pos, types, lens = [], [], []
    i, n = 0, len(w)
    wl = w.tolist()
    while i < n:
        hdr = wl[i]
        t = hdr >> 28
        if t in fixed:
            npay = fixed[t]
        elif t in counted:
            npay = hdr & (0xFFF if t == OutType.READ_DATA else 0xF)
        else:
            raise ProtocolError(f"unknown output type in word 0x{hdr:08x} at output index {i}")
        if i + 1 + npay > n:
            raise ProtocolError(f"truncated {OutType(t).name} message at output index {i}")
        pos.append(i)
        types.append(t)
        lens.append(npay)
        i += 1 + npay
    return np.array(pos, dtype=np.int64), np.array(types, dtype=np.int64), np.array(lens, dtype=np.int64)


def _message(t: OutType, hdr: int, p: np.ndarray):
    f = OUTPUT_FORMATS[t].unpack(hdr)
    try:
        if t == OutType.READ_DATA:
            return ReadData(p.astype(np.uint32))
        if t == OutType.SPIKE:
            return Spike(f["vm"], f["vcore"], f["neuron"], int(p[0]))
        if t == OutType.STEP_END:
            return StepEnd(int(p[0]))
        if t == OutType.FAULT:
            return Fault(f["vm"], FaultCause(f["cause"]), FaultOrigin(f["origin"]), int(p[0]), int(p[1]))
        if t == OutType.COUNTERS:
            return CountersMsg(p.astype(np.int64))
        if t == OutType.SYNC_ACK:
            return SyncAck(f["tag"])
        return ErrorMsg(ErrorCode(f["code"]), f["detail"], int(p[0]), int(p[1]))
    except ValueError as e:  # an undefined cause or error code
        raise ProtocolError(f"malformed {t.name} message 0x{hdr:08x}: {e}") from None


def decode_output(words: Iterable[int]) -> list:
    """Split an output word stream into typed messages. Raises :class:`ProtocolError` on garbage."""
    w = np.asarray(list(words) if not isinstance(words, np.ndarray) else words, dtype=np.int64)
    return _messages(w, *split_messages(w))


def _messages(w: np.ndarray, pos: np.ndarray, types: np.ndarray, lens: np.ndarray) -> list:
    """Typed messages for the given boundaries of stream ``w``."""
    return [_message(OutType(t), int(w[i]), w[i + 1 : i + 1 + n]) for i, t, n in
            zip(pos.tolist(), types.tolist(), lens.tolist())]


def decode_spikes(words) -> tuple[np.ndarray, list]:
    """Fast path for RUN output: ``(spikes, other_messages)``.

    ``spikes`` is an (n, 4) int64 array of (timestep, vm, vcore, neuron) in
    stream order; every other message is decoded as by :func:`decode_output`.
    """
    w = np.asarray(words, dtype=np.int64)
    pos, types, lens = split_messages(w)
    is_spike = types == OutType.SPIKE
    sp = pos[is_spike]
    fmt = OUTPUT_FORMATS[OutType.SPIKE]
    spikes = np.stack([w[sp + 1], fmt["vm"].get(w[sp]), fmt["vcore"].get(w[sp]), fmt["neuron"].get(w[sp])], 1) \
        if sp.size else np.zeros((0, 4), dtype=np.int64)
    others = _messages(w, pos[~is_spike], types[~is_spike], lens[~is_spike])
    return spikes, others
