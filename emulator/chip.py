"""The golden model: a whole NeuroVM chip (or a batch of copies) driven by its 32-bit command stream.

:class:`Chip` consumes exactly the host command stream of
docs/architecture.md §8.1 and produces exactly the output stream of §8.2.
It is the executable spec: the HDL and the Verilator model must produce the
same output words for the same input words.

The command parser is host Python/numpy; the timestep (:class:`.engine.Engine`)
is vectorized over every copy, core, neuron, synapse and fan-out entry at once
and runs on numpy or, with ``device="cuda"``, on CuPy (§6.4, §15).
:meth:`Chip.run_batch` forks the chip into many copies that differ only in their
injections and steps them as dense arrays (:mod:`.fork`; what a batched
``predict`` runs on).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurovm.config import DEFAULT_CONFIG, HV_VM, ChipConfig
from neurovm.formats import (
    command_length,
    COMMAND_FORMATS,
    GUEST_COUNTERS,
    MMU_ENTRY,
    NUM_COUNTERS,
    OUTPUT_FORMATS,
    WORD_MASK,
    ErrorCode,
    FaultCause,
    FaultOrigin,
    LearnRegion,
    Opcode,
    OutType,
    Perm,
    Region,
    region_specs,
)

from .engine import VCORE_SPACE, Engine
from .fork import BatchRun, Fork, ForkError, counts_of
from .xp import namespace, to_host

__all__ = ["Chip", "BatchRun", "ForkError"]

_STATE_REGIONS = {Region.STATE_U: "u", Region.STATE_V: "v", Region.STATE_REF: "ref", Region.ACC: "acc"}
#: Learning chips (§24): the trace regions live in the engine, one state array per field.
_TRACE_REGIONS = {LearnRegion.PRE_TRACE: {"x": "pre_x", "x0": "pre_x0", "pend": "pre_pend"},
                  LearnRegion.POST_TRACE: {"y": "post_y", "y0": "post_y0"}}
_OPCODES = {int(op) for op in Opcode}
_NO_STATE_ACCESS = {Opcode.NOP, Opcode.SYNC, Opcode.INJECT, Opcode.RUN, Opcode.MMU_MAP}


class Chip:
    """Bit-exact emulator of one NeuroVM chip, or of ``batch`` independent copies of it.

    Parameters
    ----------
    config : ChipConfig
        Sizes of the chip (every copy has the same).
    batch : int or None
        None (default): one chip; :meth:`feed` returns one output array and the
        state attributes (``u``, ``counters``, ``owner_valid``, ...) have no batch axis.
        An int ``B >= 1``: ``B`` copies, each with its own memories, translation
        tables, state, counters, timestep, stream index, input buffer and output
        stream; :meth:`feed` sends the same words to every copy and
        :meth:`feed_each` one stream per copy, both returning ``B`` output arrays,
        and the state attributes have a leading axis of length ``B``.
    device : str
        ``"cpu"`` (numpy, default) or ``"cuda"`` / ``"cuda:N"`` (CuPy): where the
        state arrays live and the timestep runs.  The command parser and the raw
        core memories stay on the host.  Raises
        :class:`~neurovm.emulator.xp.DeviceUnavailableError` when CuPy or a CUDA
        device is absent.

    Notes
    -----
    The batch contract (spec §6.4): the output words of copy ``b`` are
    bit-identical to those of a separate ``Chip(config)`` fed copy ``b``'s stream.
    Non-RUN commands are executed per copy in stream order; a RUN is stepped
    vectorized: every copy that has reached a RUN steps together (copies that have
    not, e.g. waiting for the rest of a command, keep still), ``min`` of the
    remaining step counts at a time, then each copy continues its own stream.

    Examples
    --------
    >>> from neurovm.host.protocol import encode_sync
    >>> chip = Chip()
    >>> [hex(w) for w in chip.feed(encode_sync(5))]
    ['0x60000005']
    >>> [[hex(w) for w in out] for out in Chip(batch=2).feed_each([encode_sync(1), encode_sync(2)])]
    [['0x60000001'], ['0x60000002']]
    """

    def __init__(self, config: ChipConfig = DEFAULT_CONFIG, batch: int | None = None, device: str = "cpu"):
        if batch is not None and (not isinstance(batch, (int, np.integer)) or batch < 1):
            raise ValueError(f"Chip batch={batch!r}: must be None (one chip) or an int >= 1")
        self.config = config
        self.regions = region_specs(config)   # the regions this chip has (§5; §24 on a learning chip)
        self.batch = batch
        self.device = device
        self.xp = namespace(device)
        B = 1 if batch is None else int(batch)
        self._B = B
        self._buf: list[list[int]] = [[] for _ in range(B)]
        self._pos = [0] * B
        self._stream_index = [0] * B  # index of the next input word since power-up (not cleared by RESET)
        self._log: list[tuple[np.ndarray, np.ndarray]] = []  # output words and their copies, in time order
        self._pending_steps = np.zeros(B, dtype=np.int64)
        self._pending_domains = np.zeros(B, dtype=np.int64)   # the domain set of each copy's RUN (§6.1)
        self.engine = Engine(config, B, self.xp)
        self.mem: dict[Region, np.ndarray] = {}
        self._reset_copy(slice(None))

    # ------------------------------------------------------------------
    # public stream interface
    # ------------------------------------------------------------------
    def feed(self, words):
        """Consume command words (every copy gets them); return every output word they produced.

        A trailing incomplete command is kept and completed by later calls.

        Returns
        -------
        ndarray of uint32, or a list of ``B`` of them when the chip was made with ``batch=B``.
        """
        arr = self._checked_words(words, "command words")
        return self._run_streams([arr] * self._B)

    def feed_each(self, streams: Sequence) -> list[np.ndarray]:
        """Feed stream ``b`` to copy ``b``; return the ``B`` output streams (batch chips only).

        Raises
        ------
        ValueError
            The chip is not a batch, the number of streams is not ``B``, or a word is not
            a 32-bit unsigned integer (nothing is consumed then).
        """
        if self.batch is None:
            raise ValueError("Chip.feed_each needs a batch chip (Chip(config, batch=B)); use feed()")
        if len(streams) != self._B:
            raise ValueError(f"Chip.feed_each: {len(streams)} streams for a batch of {self._B} copies")
        arrays = [self._checked_words(s, f"stream {b}") for b, s in enumerate(streams)]
        return self._run_streams(arrays)

    def run_batch(self, copies: int, steps: int, inject=None, axons=None, source: int = 0) -> BatchRun:
        """Run ``copies`` copies of this chip as it is now, each with its own injections; the chip is unchanged.

        Copy ``b`` does what this chip would do if fed, for every step ``t``, the INJECT
        commands of its injections before step ``t`` and then ``RUN 1``: the same SPIKE
        words, state and counters (spec §6.4; tested against ``feed_each``).  The steps are
        dense array operations over the copies (:mod:`.fork`), with no command parsing.

        Parameters
        ----------
        copies : int
            Number of copies (``>= 1``).
        steps : int
            Timesteps (``>= 1``).
        inject : sequence or callable, optional
            Without ``axons``: a sequence of ``steps`` items, item ``t`` a tuple ``(copy, pcore,
            axon)`` of equal-length integer arrays (physical cores: the hypervisor's view).
            With ``axons``: item ``t`` (or ``inject(t)``) is a ``(copies, K)`` array of
            non-negative integer counts, how often copy ``b`` injects ``axons[k]``, or None.
        axons : (K, 2) int array, optional
            The (physical core, axon) pairs the count form refers to.
        source : int
            For a batch chip: the copy to fork (default 0).

        Returns
        -------
        BatchRun
            Per copy: the SPIKE raster of the reporting neurons, the counters, the final state.

        Raises
        ------
        ForkError (a ValueError)
            A bad argument (named), or an active neuron whose fan-out fails translation.
        """
        copies, steps = self._batch_size("copies", copies), self._batch_size("steps", steps)
        if not 0 <= source < self._B:
            raise ForkError(f"run_batch: source copy {source} does not exist (0..{self._B - 1})")
        if axons is None:
            inject = self._triples(inject, copies, steps)
            axons = np.unique(np.concatenate([np.stack([p, a], axis=1) for _, p, a in inject]
                                             + [np.zeros((0, 2), dtype=np.int64)]), axis=0)
            counts = counts_of(inject, copies, axons, self.config.axons_per_core)
        else:
            axons = self._checked_axons(axons)
            counts = self._count_form(inject, copies, axons.shape[0], steps)
        self._refresh_engine()
        self.engine.flush()
        if self.engine.learning and bool(to_host(self.engine.learn.enable[source]).any()):
            cores = np.flatnonzero(to_host(self.engine.learn.enable[source])).tolist()
            raise ForkError(f"run_batch: cores {cores} have learning enabled (LEARN_RULE.enable, §24); "
                            "the forked batch does not learn: feed the copies (Chip(batch=B).feed_each) instead")
        return Fork(self.engine, source, copies, axons).run(steps, counts)

    @staticmethod
    def _batch_size(what: str, value) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ForkError(f"run_batch: {what} must be an int >= 1, not {value!r}")
        return int(value)

    def _checked_axons(self, axons) -> np.ndarray:
        """``axons`` as a (K, 2) int64 array of existing (pcore, axon) pairs."""
        c = self.config
        a = np.asarray(axons)
        if a.ndim != 2 or a.shape[1] != 2 or a.dtype.kind not in "iu":
            raise ForkError(f"run_batch: axons must be a (K, 2) integer array of (pcore, axon), not "
                            f"shape {a.shape} dtype {a.dtype}")
        a = a.astype(np.int64)
        for col, what, limit in ((0, "pcore", c.num_cores), (1, "axon", c.axons_per_core)):
            bad = (a[:, col] < 0) | (a[:, col] >= limit)
            if bad.any():
                k = int(np.argmax(bad))
                raise ForkError(f"run_batch: axons[{k}]: {what} {int(a[k, col])} is outside 0..{limit - 1}")
        return a

    def _triples(self, inject, copies: int, steps: int) -> list:
        """The (copy, pcore, axon) form checked: one item per step, every index in range."""
        if inject is None:
            inject = [(np.zeros(0, np.int64),) * 3] * steps
        if callable(inject) or len(inject) != steps:
            raise ForkError(f"run_batch: inject must be a sequence of {steps} (copy, pcore, axon) items "
                            "(a callable only with axons=)")
        out = []
        for t, item in enumerate(inject):
            try:
                copy, pcore, axon = (np.asarray(x).astype(np.int64, casting="safe").ravel() for x in item)
            except (TypeError, ValueError):
                raise ForkError(f"run_batch: inject[{t}] is not a (copy, pcore, axon) triple of "
                                "integer arrays") from None
            if not copy.size == pcore.size == axon.size:
                raise ForkError(f"run_batch: inject[{t}]: copy, pcore, axon have lengths "
                                f"{copy.size}, {pcore.size}, {axon.size}")
            for what, arr, limit in (("copy", copy, copies), ("pcore", pcore, self.config.num_cores),
                                     ("axon", axon, self.config.axons_per_core)):
                bad = (arr < 0) | (arr >= limit)
                if bad.any():
                    raise ForkError(f"run_batch: inject[{t}]: {what} {int(arr[np.argmax(bad)])} is outside "
                                    f"0..{limit - 1}")
            out.append((copy, pcore, axon))
        return out

    @staticmethod
    def _count_form(inject, copies: int, k: int, steps: int):
        """The count form as a function of the step, each result checked when it is used."""
        if inject is None:
            return lambda t: None
        if not callable(inject) and len(inject) != steps:
            raise ForkError(f"run_batch: inject has {len(inject)} items for {steps} steps")
        get = inject if callable(inject) else inject.__getitem__

        def at(t: int):
            counts = get(t)
            if counts is None:
                return None
            shape = getattr(counts, "shape", None)
            if shape != (copies, k) or counts.dtype.kind not in "biu" or (counts.size and counts.min() < 0):
                raise ForkError(f"run_batch: inject at step {t} must be a ({copies}, {k}) array of "
                                f"non-negative integer counts, not shape {shape} "
                                f"dtype {getattr(counts, 'dtype', type(counts).__name__)}")
            return counts

        return at

    @property
    def pending_words(self):
        """Words of an incomplete command waiting for the rest of it (a list per copy for a batch)."""
        pending = [len(buf) - pos for buf, pos in zip(self._buf, self._pos)]
        return pending[0] if self.batch is None else pending

    @property
    def stream_index(self):
        """Index of the next input word since power-up (a list per copy for a batch)."""
        return self._stream_index[0] if self.batch is None else list(self._stream_index)

    @staticmethod
    def _checked_words(words, what: str) -> np.ndarray:
        arr = np.asarray(words, dtype=np.int64).ravel()
        if arr.size and (arr.min() < 0 or arr.max() > WORD_MASK):
            raise ValueError(f"{what} must be 32-bit unsigned integers (0..0x{WORD_MASK:X})")
        return arr

    def _run_streams(self, arrays: list[np.ndarray]):
        for b, arr in enumerate(arrays):
            self._buf[b].extend(arr.tolist())
        self._drive()
        for b in range(self._B):
            if self._pos[b]:
                del self._buf[b][: self._pos[b]]
                self._pos[b] = 0
        self.engine.flush()
        return self._collect()

    def _drive(self):
        """Execute every complete command of every copy; step the copies at a RUN together."""
        waiting = np.zeros(self._B, dtype=bool)  # copies whose next command is incomplete
        while True:
            for b in np.flatnonzero((self._pending_steps == 0) & ~waiting):
                while self._pending_steps[b] == 0:
                    if not self._process_one(int(b)):
                        waiting[b] = True
                        break
            running = self._pending_steps > 0
            if not running.any():
                return
            steps = int(self._pending_steps[running].min())
            mask = None if running.all() else running
            for _ in range(steps):
                self._step(mask)
            self._pending_steps[running] -= steps

    def _collect(self):
        """Split the output log into one stream per copy (each in time order)."""
        log, self._log = self._log, []
        if not log:
            empty = np.zeros(0, dtype=np.uint32)
            return empty if self.batch is None else [empty.copy() for _ in range(self._B)]
        words = np.concatenate([w for w, _ in log]).astype(np.uint32)
        if self.batch is None:
            return words
        copy = np.concatenate([c for _, c in log])
        order = np.argsort(copy, kind="stable")
        bounds = np.searchsorted(copy[order], np.arange(self._B + 1))
        words = words[order]
        return [words[bounds[b]:bounds[b + 1]] for b in range(self._B)]

    # ------------------------------------------------------------------
    # state (views without the batch axis for a single chip)
    # ------------------------------------------------------------------
    def _view(self, arr):
        return arr[0] if self.batch is None else arr

    u = property(lambda self: self._view(self.engine.u), doc="Current u of every neuron.")
    v = property(lambda self: self._view(self.engine.v), doc="Voltage v of every neuron.")
    ref = property(lambda self: self._view(self.engine.ref), doc="Refractory counter of every neuron.")
    acc = property(lambda self: self._view(self.engine.acc), doc="Input accumulated for the next step.")
    counters = property(lambda self: self._view(self.engine.counters), doc="Telemetry counters per core.")
    mmu_valid = property(lambda self: self._view(self._mmu_valid), doc="MMU entry valid, per (VM, vcore).")
    mmu_pcore = property(lambda self: self._view(self._mmu_pcore), doc="MMU entry's pcore, per (VM, vcore).")
    mmu_perms = property(lambda self: self._view(self._mmu_perms), doc="MMU entry's permissions, per (VM, vcore).")
    owner_valid = property(lambda self: self._view(self._owner_valid), doc="Core owned by a VM, per pcore.")
    owner_vm = property(lambda self: self._view(self._owner_vm), doc="Owner VM per pcore.")
    owner_vcore = property(lambda self: self._view(self._owner_vcore), doc="Owner vcore per pcore.")

    @property
    def timestep(self):
        """The 32-bit timestep counter (an array per copy for a batch)."""
        return int(self._timestep[0]) if self.batch is None else self._timestep.copy()

    def _reset_copy(self, b):
        """RESET (chip scope) of copy ``b`` (an int, or ``slice(None)`` for every copy at power-up)."""
        c = self.config
        B, C = self._B, c.num_cores
        if not self.mem:
            for spec in self.regions.values():
                if spec.region not in _STATE_REGIONS and spec.region not in _TRACE_REGIONS:
                    self.mem[spec.region] = np.zeros((B, C, spec.size(c)), dtype=np.uint32)
            self._mmu_valid = np.zeros((B, c.max_vms, c.vcores_per_vm), dtype=bool)
            self._mmu_pcore = np.zeros((B, c.max_vms, c.vcores_per_vm), dtype=np.int64)
            self._mmu_perms = np.zeros((B, c.max_vms, c.vcores_per_vm), dtype=np.int64)
            self._owner_valid = np.zeros((B, C), dtype=bool)
            self._owner_vm = np.zeros((B, C), dtype=np.int64)
            self._owner_vcore = np.zeros((B, C), dtype=np.int64)
            self._timestep = np.zeros(B, dtype=np.int64)
            self._t_dom = np.zeros((B, HV_VM + 1), dtype=np.int64)   # T[d] per domain d (§6.1)
            self._tables_dirty = np.ones(B, dtype=bool)
            self._lut_dirty = np.ones(B, dtype=bool)
            return
        for arr in self.mem.values():
            arr[b] = 0
        for arr in (self._mmu_valid, self._mmu_pcore, self._mmu_perms, self._owner_valid, self._owner_vm,
                    self._owner_vcore):
            arr[b] = 0
        self._timestep[b] = 0
        self._t_dom[b] = 0
        self.engine.reset(b)
        self._tables_dirty[b] = True
        self._lut_dirty[b] = True

    def _reset_core(self, b: int, p: int):
        for arr in self.mem.values():
            arr[b, p] = 0
        self.engine.reset(b, p)
        self._tables_dirty[b] = True

    def domain(self, p: int, b: int = 0) -> tuple[int, int]:
        """(VM id, vcore) under which physical core ``p`` of copy ``b`` is seen: its owner, or (7, p)."""
        if self._owner_valid[b, p]:
            return int(self._owner_vm[b, p]), int(self._owner_vcore[b, p])
        return HV_VM, p

    # ------------------------------------------------------------------
    # translation (host) and the decoded tables (device)
    # ------------------------------------------------------------------
    def _translation_lut(self, b: int = 0) -> np.ndarray:
        """(C, 256) array of copy ``b``: destination pcore of a fan-out to vcore ``j`` from core
        ``p``, or ``-cause`` when the spike must fault instead (§7.3)."""
        return self._build_luts(np.array([b]))[0][0]

    def _build_luts(self, copies: np.ndarray):
        """Translation tables and (VM, vcore) domains of ``copies``, vectorized over copies and cores."""
        c = self.config
        C, V = c.num_cores, c.vcores_per_vm
        k = copies.size
        ov, ovm, ovc = self._owner_valid[copies], self._owner_vm[copies], self._owner_vcore[copies]
        lut = np.full((k, C, VCORE_SPACE), -int(FaultCause.UNMAPPED), dtype=np.int64)
        # a guest core: vcore j names (its VM, j) through the MMU; unmapped or stale entries fault
        bi, vm, vc = np.arange(k)[:, None, None], ovm[:, :, None], np.arange(V)[None, None, :]
        q = self._mmu_pcore[copies][bi, vm, vc]
        mapped = (self._mmu_valid[copies][bi, vm, vc] & ov[bi, q] & (ovm[bi, q] == vm) & (ovc[bi, q] == vc))
        sendable = (self._mmu_perms[copies][bi, vm, vc] & Perm.S) != 0
        guest = np.where(mapped, np.where(sendable, q, -int(FaultCause.PERMISSION)), -int(FaultCause.UNMAPPED))
        lut[:, :, :V] = np.where(ov[:, :, None], guest, lut[:, :, :V])
        # a bare-metal (hypervisor) core: the vcore field names a physical core; owned ones fault
        bare = np.where(ov[:, None, :], -int(FaultCause.CROSS_VM), np.arange(C)[None, None, :])
        lut[:, :, :C] = np.where(ov[:, :, None], lut[:, :, :C], bare)
        dom_vm = np.where(ov, ovm, HV_VM)
        dom_vc = np.where(ov, ovc, np.arange(C)[None, :])
        return lut, dom_vm, dom_vc

    def _translate(self, vm: int, vcore: int, b: int = 0) -> int | None:
        """Physical core of (vm, vcore) in copy ``b``, or None if unmapped (entry invalid or owner mismatch)."""
        c = self.config
        if vcore >= c.vcores_per_vm or not self._mmu_valid[b, vm, vcore]:
            return None
        p = int(self._mmu_pcore[b, vm, vcore])
        if not (self._owner_valid[b, p] and self._owner_vm[b, p] == vm and self._owner_vcore[b, p] == vcore):
            return None
        return p

    def _pull_learned(self, b: int) -> None:
        """Learning chips: copy the weights learning changed in copy ``b`` into its SYN words (the
        ``target`` and ``fixed`` bits stay), so that READ sees them and a table reload keeps them."""
        engine = self.engine
        if not (engine.learning and engine.weights_changed[b]):
            return
        fmt = self.regions[Region.SYN].fmt
        syn = self.mem[Region.SYN][b].astype(np.int64)
        self.mem[Region.SYN][b] = (syn & ~fmt["weight"].mask) | fmt["weight"].put(engine.learned_weights(b))
        engine.weights_changed[b] = False

    def _refresh_engine(self):
        """Upload the decoded tables and translation of every copy changed since the last step."""
        if self._tables_dirty.any():
            copies = np.flatnonzero(self._tables_dirty)
            for b in copies:
                self._pull_learned(int(b))
            self.engine.flush()
            self.engine.load_tables(copies, self.mem)
            self._tables_dirty[copies] = False
        if self._lut_dirty.any():
            copies = np.flatnonzero(self._lut_dirty)
            self.engine.load_translation(copies, *self._build_luts(copies))
            self._lut_dirty[copies] = False

    def _step(self, running: np.ndarray | None):
        """One timestep of the running copies (all if None); its output words go to the log."""
        self._refresh_engine()
        stepping = np.ones(self._B, dtype=bool) if running is None else running
        self._timestep[stepping] = (self._timestep[stepping] + 1) & WORD_MASK
        cores, spike_t = self._gate(stepping)
        words, copy = self.engine.step(running, self._timestep, cores, spike_t)
        self._log.append((words, copy))

    def _gate(self, stepping: np.ndarray):
        """Count the step in ``T[d]`` of every domain the running copies' RUNs name; return each
        copy's stepping cores (domain in its RUN's set) and the timestep a SPIKE of each core carries."""
        bits = (self._pending_domains[:, None] >> np.arange(HV_VM + 1)[None, :]) & 1
        self._t_dom += bits * stepping[:, None]
        self._t_dom &= WORD_MASK
        dom = np.where(self._owner_valid, self._owner_vm, HV_VM)          # (B, C): each core's domain
        cores = stepping[:, None] & (np.take_along_axis(bits, dom, axis=1) == 1)
        return cores, np.take_along_axis(self._t_dom, dom, axis=1)

    # ------------------------------------------------------------------
    # command parsing (per copy, on the host)
    # ------------------------------------------------------------------
    def _emit(self, b: int, *words: int):
        self._log.append((np.array(words, dtype=np.int64), np.full(len(words), b, dtype=np.int64)))

    def _error(self, b: int, code: ErrorCode, word: int, index: int, detail: int = 0):
        hdr = OUTPUT_FORMATS[OutType.ERROR].pack(type=OutType.ERROR, code=code, detail=detail)
        self._emit(b, hdr, word, index & WORD_MASK)

    def _fault(self, b: int, cause: FaultCause, vm: int, word: int, index: int):
        hdr = OUTPUT_FORMATS[OutType.FAULT].pack(type=OutType.FAULT, vm=vm, cause=cause, origin=FaultOrigin.HOST)
        self._emit(b, hdr, word, index & WORD_MASK)

    def _process_one(self, b: int) -> bool:
        """Execute the command at copy ``b``'s read position; False if it is not complete yet."""
        buf, pos = self._buf[b], self._pos[b]
        if pos >= len(buf):
            return False
        hdr = buf[pos]
        op = hdr >> 28
        index = self._stream_index[b]
        if op not in _OPCODES:
            self._pos[b] += 1
            self._stream_index[b] += 1
            self._error(b, ErrorCode.UNKNOWN_OPCODE, hdr, index)
            return True
        op = Opcode(op)
        length = command_length(hdr)
        if len(buf) - pos < length:
            return False
        words = buf[pos : pos + length]
        self._pos[b] += length
        self._stream_index[b] += length
        fmt = COMMAND_FORMATS[op]
        if hdr & fmt.reserved_mask:
            self._error(b, ErrorCode.RESERVED_BITS, hdr, index)
            return True
        f = fmt.unpack(hdr)
        vm = f.get("vm", HV_VM)
        if vm != HV_VM and vm >= self.config.max_vms:
            self._error(b, ErrorCode.BAD_VM, hdr, index)
            return True
        if op in (Opcode.RUN, Opcode.MMU_MAP, Opcode.RESET) and vm != HV_VM:
            self._fault(b, FaultCause.PRIVILEGE, vm, hdr, index)
            return True
        if op not in _NO_STATE_ACCESS:
            self.engine.flush()  # queued injections land before anything reads or rewrites state
            self._pull_learned(b)
        getattr(self, "_cmd_" + op.name.lower())(b, f, words, index)
        return True

    def _resolve(self, b: int, f: dict, need: Perm, hdr: int, index: int) -> int | None:
        """Physical core addressed by a host command, or None after emitting the error/fault."""
        vm, vcore = f["vm"], f["vcore"]
        if vm == HV_VM:
            if vcore >= self.config.num_cores:
                self._error(b, ErrorCode.BAD_ADDRESS, hdr, index)
                return None
            return vcore
        p = self._translate(vm, vcore, b)
        if p is None:
            self._fault(b, FaultCause.UNMAPPED, vm, hdr, index)
            return None
        if not self._mmu_perms[b, vm, vcore] & need:
            self._fault(b, FaultCause.PERMISSION, vm, hdr, index)
            return None
        return p

    def _check_span(self, b: int, f: dict, words: list, index: int) -> bool:
        """Length, region and address checks shared by WRITE and READ."""
        hdr, addr = words[0], words[1]
        if f["count"] == 0:
            self._error(b, ErrorCode.BAD_LENGTH, hdr, index)
            return False
        if f["region"] not in self.regions:
            self._error(b, ErrorCode.BAD_REGION, hdr, index)
            return False
        size = self.regions[f["region"]].size(self.config)
        if addr >= size or addr + f["count"] > size:
            self._error(b, ErrorCode.BAD_ADDRESS, addr, index + 1)
            return False
        return True

    def _cmd_nop(self, b, f, words, index):
        pass

    def _cmd_sync(self, b, f, words, index):
        self._emit(b, OUTPUT_FORMATS[OutType.SYNC_ACK].pack(type=OutType.SYNC_ACK, tag=f["tag"]))

    def _cmd_write(self, b, f, words, index):
        if not self._check_span(b, f, words, index):
            return
        p = self._resolve(b, f, Perm.W, words[0], index)
        if p is None:
            return
        spec = self.regions[f["region"]]
        region = spec.region
        addr = words[1]
        data = np.array(words[2:], dtype=np.int64)
        bad = spec.invalid(self.config, data)
        for k in np.flatnonzero(bad):
            self._error(b, ErrorCode.BAD_FIELD, int(data[k]), index + 2 + int(k), detail=addr + int(k))
        good = np.flatnonzero(~bad)
        if good.size == 0:
            return
        if region in _STATE_REGIONS:
            field = next(iter(spec.fmt.fields.values()))
            state = getattr(self.engine, _STATE_REGIONS[region])
            state[b, p, self.xp.asarray(addr + good)] = self.xp.asarray(field.get(data[good]))
        elif region in _TRACE_REGIONS:
            for name, attr in _TRACE_REGIONS[region].items():
                getattr(self.engine, attr)[b, p, self.xp.asarray(addr + good)] = \
                    self.xp.asarray(spec.fmt[name].get(data[good]))
        else:
            self.mem[region][b, p, addr + good] = data[good]
            self._tables_dirty[b] = True

    def _cmd_read(self, b, f, words, index):
        if not self._check_span(b, f, words, index):
            return
        p = self._resolve(b, f, Perm.R, words[0], index)
        if p is None:
            return
        spec = self.regions[f["region"]]
        region = spec.region
        addr, count = words[1], f["count"]
        if region in _STATE_REGIONS:
            state = getattr(self.engine, _STATE_REGIONS[region])
            data = to_host(state[b, p, addr : addr + count]) & WORD_MASK
        elif region in _TRACE_REGIONS:
            data = spec.fmt.pack_array(**{name: to_host(getattr(self.engine, attr)[b, p, addr : addr + count])
                                          for name, attr in _TRACE_REGIONS[region].items()}).astype(np.int64)
        else:
            data = self.mem[region][b, p, addr : addr + count].astype(np.int64)
        self._emit(b, OUTPUT_FORMATS[OutType.READ_DATA].pack(type=OutType.READ_DATA, count=count), *data.tolist())

    def _cmd_inject(self, b, f, words, index):
        if f["axon"] >= self.config.axons_per_core:
            self._error(b, ErrorCode.BAD_ADDRESS, words[0], index)
            return
        p = self._resolve(b, f, Perm.S, words[0], index)
        if p is None:
            return
        if self._tables_dirty[b]:
            self._refresh_engine()
        self.engine.inject(b, p, f["axon"])

    def _cmd_run(self, b, f, words, index):
        if f["steps"] == 0 or f["domains"] == 0:
            self._error(b, ErrorCode.BAD_LENGTH, words[0], index)
            return
        self._pending_domains[b] = f["domains"]
        self._pending_steps[b] = f["steps"]  # stepped by _drive, together with every other copy at a RUN

    def _cmd_read_counters(self, b, f, words, index):
        first, count = f["first"], f["count"]
        if count == 0 or first + count > NUM_COUNTERS:
            self._error(b, ErrorCode.BAD_LENGTH, words[0], index)
            return
        p = self._resolve(b, f, Perm.R, words[0], index)
        if p is None:
            return
        if f["vm"] != HV_VM and first + count > GUEST_COUNTERS:   # PACKETS_ROUTED, BUSY_CYCLES: §9.1
            self._fault(b, FaultCause.PERMISSION, f["vm"], words[0], index)
            return
        vals = (to_host(self.engine.counters[b, p, first : first + count]) & WORD_MASK).tolist()
        self._emit(b, OUTPUT_FORMATS[OutType.COUNTERS].pack(type=OutType.COUNTERS, count=count), *vals)

    def _cmd_reset(self, b, f, words, index):
        c = self.config
        if f["scope"] == 0:
            if f["pcore"] != 0:
                self._error(b, ErrorCode.RESERVED_BITS, words[0], index)
                return
            self._reset_copy(b)
            return
        if f["pcore"] >= c.num_cores:
            self._error(b, ErrorCode.BAD_ADDRESS, words[0], index)
            return
        self._reset_core(b, f["pcore"])

    def _cmd_mmu_map(self, b, f, words, index):
        c = self.config
        entry, eidx = words[1], index + 1
        if entry & MMU_ENTRY.reserved_mask:
            self._error(b, ErrorCode.RESERVED_BITS, entry, eidx)
            return
        e = MMU_ENTRY.unpack(entry)
        tvm, vcore, pcore = e["tvm"], e["vcore"], e["pcore"]
        if tvm >= c.max_vms:
            self._error(b, ErrorCode.BAD_VM, entry, eidx)
            return
        if vcore >= c.vcores_per_vm or (e["valid"] and pcore >= c.num_cores):
            self._error(b, ErrorCode.BAD_ADDRESS, entry, eidx)
            return
        if e["valid"]:
            if self._owner_valid[b, pcore] and (self._owner_vm[b, pcore], self._owner_vcore[b, pcore]) != (tvm, vcore):
                self._fault(b, FaultCause.CORE_OWNED, tvm, entry, eidx)
                return
            if self._mmu_valid[b, tvm, vcore]:
                self._owner_valid[b, self._mmu_pcore[b, tvm, vcore]] = False
            self._mmu_valid[b, tvm, vcore] = True
            self._mmu_pcore[b, tvm, vcore] = pcore
            self._mmu_perms[b, tvm, vcore] = e["perms"]
            self._owner_valid[b, pcore] = True
            self._owner_vm[b, pcore] = tvm
            self._owner_vcore[b, pcore] = vcore
        elif self._mmu_valid[b, tvm, vcore]:
            self._owner_valid[b, self._mmu_pcore[b, tvm, vcore]] = False
            self._mmu_valid[b, tvm, vcore] = False
        self._lut_dirty[b] = True
