"""The golden model: a whole NeuroVM chip driven by its 32-bit command stream.

:class:`Chip` consumes exactly the host command stream of
docs/architecture.md §8.1 and produces exactly the output stream of §8.2.
It is the executable spec: the HDL and the Verilator model must produce the
same output words for the same input words.

The timestep path is vectorized over the whole chip (all cores, neurons,
synapses and fan-out entries at once); the only Python loop is the one over
commands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurovm.config import DEFAULT_CONFIG, HV_VM, ChipConfig
from neurovm.formats import (
    command_length,
    COMMAND_FORMATS,
    FANOUT_SOURCE,
    MMU_ENTRY,
    NUM_COUNTERS,
    OUTPUT_FORMATS,
    REGIONS,
    WORD_MASK,
    Counter,
    ErrorCode,
    FaultCause,
    FaultOrigin,
    Opcode,
    OutType,
    Perm,
    Region,
)

from .lif import lif_step, scaled_weight, wrap_state
from .mesh import xy_route

__all__ = ["Chip"]

_STATE_REGIONS = {Region.STATE_U: "u", Region.STATE_V: "v", Region.STATE_REF: "ref", Region.ACC: "acc"}
_VCORE_SPACE = 256  # the 8-bit vcore field of fan-out entries
_OPCODES = {int(op) for op in Opcode}


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + l)`` for every (s, l), in order, without a loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.cumsum(lens) - lens
    return np.repeat(starts - first, lens) + np.arange(total, dtype=np.int64)


@dataclass
class _Decoded:
    """Field arrays decoded from the configuration memories (cached between writes)."""

    axon_start: np.ndarray
    axon_len: np.ndarray
    syn_target: np.ndarray
    syn_weight: np.ndarray  # scaled: floor(w * 2^weight_exp) * 2^6
    du: np.ndarray
    dv: np.ndarray
    refract: np.ndarray
    bias_mant: np.ndarray
    bias_exp: np.ndarray
    vth_mant: np.ndarray
    fo_start: np.ndarray
    fo_len: np.ndarray
    report: np.ndarray
    fo_axon: np.ndarray
    fo_vcore: np.ndarray
    n_active: np.ndarray
    active: np.ndarray  # (C, N) bool: neuron index < n_active of its core


class Chip:
    """Bit-exact emulator of one NeuroVM chip.

    Parameters
    ----------
    config : ChipConfig
        Sizes of the chip.

    Examples
    --------
    >>> from neurovm.host.protocol import encode_sync
    >>> chip = Chip()
    >>> [hex(w) for w in chip.feed(encode_sync(5))]
    ['0x60000005']
    """

    def __init__(self, config: ChipConfig = DEFAULT_CONFIG):
        self.config = config
        self._buf: list[int] = []
        self._pos = 0
        self.stream_index = 0  # index of the next input word since power-up (not cleared by RESET)
        self._out: list[np.ndarray] = []
        c = config
        C = c.num_cores
        self._route = self._route_matrix()
        self._xy = np.array([c.core_xy(p) for p in range(C)], dtype=np.int64)
        self._lut: np.ndarray | None = None
        self._dec: _Decoded | None = None
        self.mem: dict[Region, np.ndarray] = {}
        self._reset_chip()

    # ------------------------------------------------------------------
    # public stream interface
    # ------------------------------------------------------------------
    def feed(self, words) -> np.ndarray:
        """Consume command words; return every output word they produced.

        A trailing incomplete command is kept and completed by later calls.
        """
        arr = np.asarray(words, dtype=np.int64).ravel()
        if arr.size and (arr.min() < 0 or arr.max() > WORD_MASK):
            raise ValueError("command words must be 32-bit unsigned integers")
        self._buf.extend(int(w) for w in arr)
        while self._process_one():
            pass
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        if not self._out:
            return np.zeros(0, dtype=np.uint32)
        out = np.concatenate(self._out).astype(np.uint32)
        self._out.clear()
        return out

    @property
    def pending_words(self) -> int:
        """Words of an incomplete command waiting for the rest of it."""
        return len(self._buf) - self._pos

    # ------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------
    def _reset_chip(self):
        c = self.config
        C, N = c.num_cores, c.neurons_per_core
        for spec in REGIONS.values():
            if spec.region not in _STATE_REGIONS:
                self.mem[spec.region] = np.zeros((C, spec.size(c)), dtype=np.uint32)
        self.u = np.zeros((C, N), dtype=np.int64)
        self.v = np.zeros((C, N), dtype=np.int64)
        self.ref = np.zeros((C, N), dtype=np.int64)
        self.acc = np.zeros((C, N), dtype=np.int64)
        self.counters = np.zeros((C, NUM_COUNTERS), dtype=np.int64)
        self.timestep = 0
        # MMU: per-VM translation tables and the per-core owner registers
        self.mmu_valid = np.zeros((c.max_vms, c.vcores_per_vm), dtype=bool)
        self.mmu_pcore = np.zeros((c.max_vms, c.vcores_per_vm), dtype=np.int64)
        self.mmu_perms = np.zeros((c.max_vms, c.vcores_per_vm), dtype=np.int64)
        self.owner_valid = np.zeros(C, dtype=bool)
        self.owner_vm = np.zeros(C, dtype=np.int64)
        self.owner_vcore = np.zeros(C, dtype=np.int64)
        self._dec = None
        self._lut = None

    def _reset_core(self, p: int):
        for arr in self.mem.values():
            arr[p] = 0
        for arr in (self.u, self.v, self.ref, self.acc, self.counters):
            arr[p] = 0
        self._dec = None

    def domain(self, p: int) -> tuple[int, int]:
        """(VM id, vcore) under which physical core ``p`` is seen: its owner, or (7, p)."""
        if self.owner_valid[p]:
            return int(self.owner_vm[p]), int(self.owner_vcore[p])
        return HV_VM, p

    def _decoded(self) -> _Decoded:
        if self._dec is None:
            c = self.config
            m = self.mem
            F = {r: REGIONS[r].fmt for r in REGIONS}

            def get(region, name):
                return F[region][name].get(m[region])

            wexp = get(Region.CORE_CFG, "weight_exp")[:, 0]
            n_active = get(Region.CORE_CFG, "n_active")[:, 0]
            self._dec = _Decoded(
                axon_start=get(Region.AXON, "syn_start"),
                axon_len=get(Region.AXON, "syn_len"),
                syn_target=get(Region.SYN, "target"),
                syn_weight=scaled_weight(get(Region.SYN, "weight"), wexp[:, None]),
                du=get(Region.NRN_DECAY, "du"),
                dv=get(Region.NRN_DECAY, "dv"),
                refract=get(Region.NRN_DECAY, "refract"),
                bias_mant=get(Region.NRN_BIAS, "bias_mant"),
                bias_exp=get(Region.NRN_BIAS, "bias_exp"),
                vth_mant=get(Region.NRN_VTH, "vth_mant"),
                fo_start=get(Region.FANOUT_PTR, "fo_start"),
                fo_len=get(Region.FANOUT_PTR, "fo_len"),
                report=get(Region.FANOUT_PTR, "report").astype(bool),
                fo_axon=get(Region.FANOUT, "axon"),
                fo_vcore=get(Region.FANOUT, "vcore"),
                n_active=n_active,
                active=np.arange(c.neurons_per_core)[None, :] < n_active[:, None],
            )
        return self._dec

    def _translation_lut(self) -> np.ndarray:
        """(C, 256) array: destination pcore of a fan-out to vcore ``j`` from core ``p``,
        or ``-cause`` when the spike must fault instead (§7.3)."""
        if self._lut is None:
            c = self.config
            C, V = c.num_cores, c.vcores_per_vm
            lut = np.full((C, _VCORE_SPACE), -int(FaultCause.UNMAPPED), dtype=np.int64)
            for p in range(C):
                if self.owner_valid[p]:
                    vm = self.owner_vm[p]
                    for vc in range(V):
                        q = self._translate(vm, vc)
                        if q is None:
                            continue
                        lut[p, vc] = q if self.mmu_perms[vm, vc] & Perm.S else -int(FaultCause.PERMISSION)
                else:  # a bare-metal (hypervisor) core: vcore field names a physical core
                    for q in range(C):
                        lut[p, q] = -int(FaultCause.CROSS_VM) if self.owner_valid[q] else q
            self._lut = lut
        return self._lut

    def _translate(self, vm: int, vcore: int) -> int | None:
        """Physical core of (vm, vcore), or None if unmapped (entry invalid or owner mismatch)."""
        c = self.config
        if vcore >= c.vcores_per_vm or not self.mmu_valid[vm, vcore]:
            return None
        p = int(self.mmu_pcore[vm, vcore])
        if not (self.owner_valid[p] and self.owner_vm[p] == vm and self.owner_vcore[p] == vcore):
            return None
        return p

    def _route_matrix(self) -> np.ndarray:
        """(C*C, C) 0/1 matrix: row ``src*C + dst`` marks the routers on the XY route."""
        C = self.config.num_cores
        r = np.zeros((C * C, C), dtype=np.int64)
        for s in range(C):
            for d in range(C):
                r[s * C + d, xy_route(self.config, s, d)] = 1
        return r

    # ------------------------------------------------------------------
    # spike delivery and the timestep
    # ------------------------------------------------------------------
    def _deliver(self, q: np.ndarray, axon: np.ndarray):
        """Accumulate axon events (core ``q``, ``axon``) into the next step's input."""
        if q.size == 0:
            return
        c = self.config
        C, N = c.num_cores, c.neurons_per_core
        d = self._decoded()
        starts = d.axon_start[q, axon]
        lens = d.axon_len[q, axon]
        syn_ops = np.bincount(q, weights=lens, minlength=C).astype(np.int64)
        self.counters[:, Counter.SYN_OPS] += syn_ops
        self.counters[:, Counter.BUSY_CYCLES] += syn_ops
        idx = _ranges(starts, lens)
        if idx.size == 0:
            return
        core = np.repeat(q, lens)
        flat = core * N + d.syn_target[core, idx]
        # Exact: |w| < 2^21 and far fewer than 2^32 terms, so float64 sums stay integral.
        add = np.bincount(flat, weights=d.syn_weight[core, idx], minlength=C * N)
        self.acc = wrap_state(self.acc + add.astype(np.int64).reshape(C, N))

    def _step(self):
        c = self.config
        C = c.num_cores
        self.timestep = (self.timestep + 1) & WORD_MASK
        t = self.timestep
        d = self._decoded()
        act = d.active
        u, v, ref, spiked = lif_step(
            self.u, self.v, self.ref, self.acc, d.du, d.dv, d.bias_mant, d.bias_exp, d.vth_mant, d.refract
        )
        self.u = np.where(act, u, self.u)
        self.v = np.where(act, v, self.v)
        self.ref = np.where(act, ref, self.ref)
        self.acc = np.where(act, 0, self.acc)
        spiked &= act
        self.counters[:, Counter.NEURON_UPDATES] += d.n_active
        self.counters[:, Counter.BUSY_CYCLES] += d.n_active
        self.counters[:, Counter.SPIKES_OUT] += spiked.sum(axis=1)

        p, n = np.nonzero(spiked)  # row-major: ordered by (core, neuron)
        lens = d.fo_len[p, n]
        idx = _ranges(d.fo_start[p, n], lens)
        src_p = np.repeat(p, lens)
        src_n = np.repeat(n, lens)
        self.counters[:, Counter.BUSY_CYCLES] += np.bincount(src_p, minlength=C)
        vc = d.fo_vcore[src_p, idx]
        dest = self._translation_lut()[src_p, vc]
        ok = dest >= 0

        # ---- output messages of this step, in canonical order (§6.3) ----
        dom_vm = np.where(self.owner_valid, self.owner_vm, HV_VM)
        dom_vc = np.where(self.owner_valid, self.owner_vcore, np.arange(C))
        rep = d.report[p, n]
        rp, rn = p[rep], n[rep]
        fp, fn, fidx = src_p[~ok], src_n[~ok], idx[~ok]
        n_msgs = rp.size + fp.size
        if n_msgs:
            words = np.zeros((n_msgs, 3), dtype=np.int64)
            spike_fmt = OUTPUT_FORMATS[OutType.SPIKE]
            words[: rp.size, 0] = spike_fmt.pack_array(
                type=np.full(rp.size, OutType.SPIKE), vm=dom_vm[rp], vcore=dom_vc[rp], neuron=rn)
            words[: rp.size, 1] = t
            fault_fmt = OUTPUT_FORMATS[OutType.FAULT]
            words[rp.size:, 0] = fault_fmt.pack_array(
                type=np.full(fp.size, OutType.FAULT), vm=dom_vm[fp], cause=-dest[~ok],
                origin=np.full(fp.size, FaultOrigin.FANOUT))
            words[rp.size:, 1] = self.mem[Region.FANOUT][fp, fidx]
            words[rp.size:, 2] = FANOUT_SOURCE.pack_array(vcore=dom_vc[fp], neuron=fn)
            nwords = np.concatenate([np.full(rp.size, 2), np.full(fp.size, 3)])
            key_p = np.concatenate([rp, fp])
            key_n = np.concatenate([rn, fn])
            kind = np.concatenate([np.zeros(rp.size, np.int64), np.ones(fp.size, np.int64)])
            seq = np.concatenate([np.zeros(rp.size, np.int64), fidx])
            order = np.lexsort((seq, kind, key_n, key_p))
            words, nwords = words[order], nwords[order]
            self._out.append(words[np.arange(3)[None, :] < nwords[:, None]])

        # ---- packets: deliver for step t+1 and count (§6.2, §9) ----
        sp, dq = src_p[ok], dest[ok]
        if sp.size:
            self.counters[:, Counter.PACKETS_SENT] += np.bincount(sp, minlength=C)
            hops = np.abs(self._xy[sp] - self._xy[dq])
            self.counters[:, Counter.HOPS_X] += np.bincount(sp, weights=hops[:, 0], minlength=C).astype(np.int64)
            self.counters[:, Counter.HOPS_Y] += np.bincount(sp, weights=hops[:, 1], minlength=C).astype(np.int64)
            pairs = np.bincount(sp * C + dq, minlength=C * C)
            self.counters[:, Counter.PACKETS_ROUTED] += pairs @ self._route
            self._deliver(dq, d.fo_axon[sp, idx[ok]])
        self._emit(OUTPUT_FORMATS[OutType.STEP_END].pack(type=OutType.STEP_END), t)

    # ------------------------------------------------------------------
    # command parsing
    # ------------------------------------------------------------------
    def _emit(self, *words: int):
        self._out.append(np.array(words, dtype=np.int64))

    def _error(self, code: ErrorCode, word: int, index: int, detail: int = 0):
        hdr = OUTPUT_FORMATS[OutType.ERROR].pack(type=OutType.ERROR, code=code, detail=detail)
        self._emit(hdr, word, index & WORD_MASK)

    def _fault(self, cause: FaultCause, vm: int, word: int, index: int):
        hdr = OUTPUT_FORMATS[OutType.FAULT].pack(type=OutType.FAULT, vm=vm, cause=cause, origin=FaultOrigin.HOST)
        self._emit(hdr, word, index & WORD_MASK)

    def _process_one(self) -> bool:
        """Execute the command at the read position; False if it is not complete yet."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            return False
        hdr = buf[pos]
        op = hdr >> 28
        index = self.stream_index
        if op not in _OPCODES:
            self._pos += 1
            self.stream_index += 1
            self._error(ErrorCode.UNKNOWN_OPCODE, hdr, index)
            return True
        op = Opcode(op)
        length = command_length(hdr)
        if len(buf) - pos < length:
            return False
        words = buf[pos : pos + length]
        self._pos += length
        self.stream_index += length
        fmt = COMMAND_FORMATS[op]
        if hdr & fmt.reserved_mask:
            self._error(ErrorCode.RESERVED_BITS, hdr, index)
            return True
        f = fmt.unpack(hdr)
        vm = f.get("vm", HV_VM)
        if vm != HV_VM and vm >= self.config.max_vms:
            self._error(ErrorCode.BAD_VM, hdr, index)
            return True
        if op in (Opcode.RUN, Opcode.MMU_MAP, Opcode.RESET) and vm != HV_VM:
            self._fault(FaultCause.PRIVILEGE, vm, hdr, index)
            return True
        getattr(self, "_cmd_" + op.name.lower())(f, words, index)
        return True

    def _resolve(self, f: dict, need: Perm, hdr: int, index: int) -> int | None:
        """Physical core addressed by a host command, or None after emitting the error/fault."""
        vm, vcore = f["vm"], f["vcore"]
        if vm == HV_VM:
            if vcore >= self.config.num_cores:
                self._error(ErrorCode.BAD_ADDRESS, hdr, index)
                return None
            return vcore
        p = self._translate(vm, vcore)
        if p is None:
            self._fault(FaultCause.UNMAPPED, vm, hdr, index)
            return None
        if not self.mmu_perms[vm, vcore] & need:
            self._fault(FaultCause.PERMISSION, vm, hdr, index)
            return None
        return p

    def _check_span(self, f: dict, words: list, index: int) -> bool:
        """Length, region and address checks shared by WRITE and READ."""
        hdr, addr = words[0], words[1]
        if f["count"] == 0:
            self._error(ErrorCode.BAD_LENGTH, hdr, index)
            return False
        if f["region"] not in REGIONS.keys():
            self._error(ErrorCode.BAD_REGION, hdr, index)
            return False
        size = REGIONS[Region(f["region"])].size(self.config)
        if addr >= size or addr + f["count"] > size:
            self._error(ErrorCode.BAD_ADDRESS, addr, index + 1)
            return False
        return True

    def _cmd_nop(self, f, words, index):
        pass

    def _cmd_sync(self, f, words, index):
        self._emit(OUTPUT_FORMATS[OutType.SYNC_ACK].pack(type=OutType.SYNC_ACK, tag=f["tag"]))

    def _cmd_write(self, f, words, index):
        if not self._check_span(f, words, index):
            return
        p = self._resolve(f, Perm.W, words[0], index)
        if p is None:
            return
        region = Region(f["region"])
        spec = REGIONS[region]
        addr = words[1]
        data = np.array(words[2:], dtype=np.int64)
        bad = spec.invalid(self.config, data)
        for k in np.flatnonzero(bad):
            self._error(ErrorCode.BAD_FIELD, int(data[k]), index + 2 + int(k), detail=addr + int(k))
        good = np.flatnonzero(~bad)
        if good.size == 0:
            return
        if region in _STATE_REGIONS:
            name = _STATE_REGIONS[region]
            field = next(iter(spec.fmt.fields.values()))
            getattr(self, name)[p, addr + good] = field.get(data[good])
        else:
            self.mem[region][p, addr + good] = data[good]
            self._dec = None

    def _cmd_read(self, f, words, index):
        if not self._check_span(f, words, index):
            return
        p = self._resolve(f, Perm.R, words[0], index)
        if p is None:
            return
        region = Region(f["region"])
        addr, count = words[1], f["count"]
        if region in _STATE_REGIONS:
            data = getattr(self, _STATE_REGIONS[region])[p, addr : addr + count] & WORD_MASK
        else:
            data = self.mem[region][p, addr : addr + count].astype(np.int64)
        self._emit(OUTPUT_FORMATS[OutType.READ_DATA].pack(type=OutType.READ_DATA, count=count), *data.tolist())

    def _cmd_inject(self, f, words, index):
        if f["axon"] >= self.config.axons_per_core:
            self._error(ErrorCode.BAD_ADDRESS, words[0], index)
            return
        p = self._resolve(f, Perm.S, words[0], index)
        if p is None:
            return
        self._deliver(np.array([p]), np.array([f["axon"]]))

    def _cmd_run(self, f, words, index):
        if f["steps"] == 0:
            self._error(ErrorCode.BAD_LENGTH, words[0], index)
            return
        for _ in range(f["steps"]):
            self._step()

    def _cmd_read_counters(self, f, words, index):
        first, count = f["first"], f["count"]
        if count == 0 or first + count > NUM_COUNTERS:
            self._error(ErrorCode.BAD_LENGTH, words[0], index)
            return
        p = self._resolve(f, Perm.R, words[0], index)
        if p is None:
            return
        vals = (self.counters[p, first : first + count] & WORD_MASK).tolist()
        self._emit(OUTPUT_FORMATS[OutType.COUNTERS].pack(type=OutType.COUNTERS, count=count), *vals)

    def _cmd_reset(self, f, words, index):
        c = self.config
        if f["scope"] == 0:
            if f["pcore"] != 0:
                self._error(ErrorCode.RESERVED_BITS, words[0], index)
                return
            self._reset_chip()
            return
        if f["pcore"] >= c.num_cores:
            self._error(ErrorCode.BAD_ADDRESS, words[0], index)
            return
        self._reset_core(f["pcore"])

    def _cmd_mmu_map(self, f, words, index):
        c = self.config
        entry, eidx = words[1], index + 1
        if entry & MMU_ENTRY.reserved_mask:
            self._error(ErrorCode.RESERVED_BITS, entry, eidx)
            return
        e = MMU_ENTRY.unpack(entry)
        tvm, vcore, pcore = e["tvm"], e["vcore"], e["pcore"]
        if tvm >= c.max_vms:
            self._error(ErrorCode.BAD_VM, entry, eidx)
            return
        if vcore >= c.vcores_per_vm or (e["valid"] and pcore >= c.num_cores):
            self._error(ErrorCode.BAD_ADDRESS, entry, eidx)
            return
        if e["valid"]:
            if self.owner_valid[pcore] and (self.owner_vm[pcore], self.owner_vcore[pcore]) != (tvm, vcore):
                self._fault(FaultCause.CORE_OWNED, tvm, entry, eidx)
                return
            if self.mmu_valid[tvm, vcore]:
                self.owner_valid[self.mmu_pcore[tvm, vcore]] = False
            self.mmu_valid[tvm, vcore] = True
            self.mmu_pcore[tvm, vcore] = pcore
            self.mmu_perms[tvm, vcore] = e["perms"]
            self.owner_valid[pcore] = True
            self.owner_vm[pcore] = tvm
            self.owner_vcore[pcore] = vcore
        elif self.mmu_valid[tvm, vcore]:
            self.owner_valid[self.mmu_pcore[tvm, vcore]] = False
            self.mmu_valid[tvm, vcore] = False
        self._lut = None
