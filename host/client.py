"""A convenient Python API over any :class:`~neurovm.host.backend.Backend`.

:class:`ChipClient` speaks the command protocol for you: map virtual cores,
load core images, inject spikes, run, read spikes, state and counters.
Errors and faults that a command provokes are raised as :class:`ChipError`
(with the decoded messages); the chip keeps working afterwards.

Every value is checked before a word is sent (:class:`~neurovm.host.protocol.RequestError`:
nothing is wrapped or masked), every outgoing word list is framed by the §8.1
command lengths (a list that ends inside a command is refused), and one lock
serialises the exchanges, so a client may be shared by threads.  If an
exchange fails half-way (a backend error, a timeout), framing may be lost: the
next call first resynchronises the chip (§8.1: NOP run, SYNC, drain to its
acknowledgement), by itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from neurovm.config import HV_VM
from neurovm.formats import (ALL_DOMAINS, ARCH_COUNTERS, GUEST_COUNTERS, NUM_COUNTERS, REGIONS, WORD_MASK, Perm,
                             Region, region_specs)
from neurovm.image import CoreImage

from . import protocol as P
from .backend import Backend

__all__ = ["ChipClient", "ChipError", "RunResult", "SPIKE_DTYPE", "RequestError"]

RequestError = P.RequestError

SPIKE_DTYPE = np.dtype([("timestep", np.int64), ("vm", np.int64), ("vcore", np.int64), ("neuron", np.int64)])


class ChipError(RuntimeError):
    """The chip answered a command with error or fault messages."""

    def __init__(self, what: str, messages: list):
        self.messages = messages
        super().__init__(f"{what}: " + "; ".join(str(m) for m in messages))


@dataclass
class RunResult:
    """What a RUN produced: spikes (structured array of SPIKE_DTYPE), fan-out faults, steps."""

    spikes: np.ndarray
    faults: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    #: ``T[d]`` of every domain before the run (index d: guest VM d, HV_VM for bare-metal cores);
    #: a spike of domain d at step s of this run (0-based) carries ``T[d] + 1 + s`` (§6.1)
    domain_t0: np.ndarray = field(default_factory=lambda: np.zeros(HV_VM + 1, dtype=np.int64))

    def for_vm(self, vm: int) -> np.ndarray:
        return self.spikes[self.spikes["vm"] == vm]

    def step_of(self, spikes: np.ndarray) -> np.ndarray:
        """The step within this run (0-based) of each spike, from its domain's timestep."""
        t0 = self.domain_t0[np.asarray(spikes["vm"], dtype=np.int64)]
        return (np.asarray(spikes["timestep"], dtype=np.int64) - t0 - 1) & WORD_MASK


class ChipClient:
    """Drive one chip through a backend.

    Parameters
    ----------
    backend : Backend
        The transport (emulator, Verilator model, FPGA).
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self.config = backend.config
        #: Held around every exchange; the runtime also holds it around operations of
        #: several exchanges.  Re-entrant: ``with chip.lock:`` groups calls of one thread.
        self.lock = threading.RLock()
        self._resync_needed = False
        self.resyncs = 0      # resynchronisations done (after failed exchanges, or asked for)
        #: ``T[d]`` per domain as the chip keeps it (§6.1), followed from every RUN this client sends
        self.domain_t = np.zeros(HV_VM + 1, dtype=np.int64)

    # ---- plumbing -------------------------------------------------------
    def _transfer(self, words) -> np.ndarray:
        """The one way words reach the backend: checked, framed, locked, resynchronised if needed.

        Raises :class:`RequestError` (nothing sent) if a word is not a 32-bit integer or the
        list ends inside a command.  If the backend fails, the exception propagates and the
        next transfer resynchronises first.
        """
        words = P.as_words(words, "command word")
        P.check_framing(words)
        with self.lock:
            if self._resync_needed:
                self.resync()
            try:
                return self.backend.exchange(words)
            except BaseException:
                self._resync_needed = True
                raise

    def resync(self) -> int:
        """Resynchronise the chip's parser and drop stale output now (§8.1); returns the words dropped.

        Called by itself before the next exchange after a failed one; call it directly after
        sending words through :attr:`backend` behind the client's back.
        """
        with self.lock:
            self._resync_needed = True
            dropped = self.backend.resync()
            self._resync_needed = False
            self.resyncs += 1
            return dropped

    def exchange(self, words) -> list:
        """Send command words; return the decoded output messages."""
        return P.decode_output(self._transfer(words))

    def _checked(self, what: str, words) -> list:
        msgs = self.exchange(words)
        bad = [m for m in msgs if isinstance(m, (P.ErrorMsg, P.Fault))]
        if bad:
            raise ChipError(what, bad)
        return msgs

    # ---- hypervisor --------------------------------------------------------
    def reset(self, pcore: int | None = None) -> None:
        """Reset the whole chip, or scrub one physical core."""
        with self.lock:
            self._checked("reset", P.encode_reset(pcore))
            if pcore is None:
                self.domain_t[:] = 0

    def map(self, vm: int, vcore: int, pcore: int, perms: int = Perm.ALL) -> None:
        """Map ``vcore`` of ``vm`` to physical core ``pcore`` (privileged)."""
        self._checked(f"map VM {vm} vcore {vcore} -> core {pcore}", P.encode_mmu_map(vm, vcore, pcore, perms))

    def unmap(self, vm: int, vcore: int) -> None:
        self._checked(f"unmap VM {vm} vcore {vcore}", P.encode_mmu_map(vm, vcore, valid=False))

    # ---- memories ------------------------------------------------------------
    def write(self, vm: int, vcore: int, region: Region, addr: int, data) -> None:
        """Write ``data`` at ``addr`` of a region.

        Every value is checked before a word is sent: it must be a 32-bit word (a signed
        32-bit value for u, v, acc) and a legal word of its region (§5 field limits);
        :class:`RequestError` names the region, address, field, value and allowed range.
        """
        region = self._region(region)
        words = P.encode_write(vm, vcore, region, addr, data)
        self._check_fields(vm, vcore, region, addr, data)
        self._checked(f"write VM {vm} vcore {vcore} {region.name}[{addr}]", words)

    def _region(self, region):
        """The region enum of id ``region`` on this chip (a learning chip also has §24's regions)."""
        specs = region_specs(self.config)
        if isinstance(region, (bool, np.bool_)) or not isinstance(region, (int, np.integer)) \
                or int(region) not in specs:
            raise RequestError(f"region {region!r} does not exist on this chip; regions: "
                               f"{', '.join(f'{int(r)} {specs[r].region.name}' for r in sorted(specs))}")
        return specs[int(region)].region

    def _check_fields(self, vm: int, vcore: int, region, addr: int, data) -> None:
        """RequestError naming the first data word whose fields break §5's (§24's) limits for ``region``."""
        spec = region_specs(self.config)[int(region)]
        words = P.as_words(data, "data word", -(1 << 31), P.WORD_MAX) & P.WORD_MAX
        bad = np.flatnonzero(spec.invalid(self.config, words)) if words.size else ()
        if len(bad):
            i = int(bad[0])
            raise RequestError(f"write VM {vm} vcore {vcore} {region.name}[{addr + i}]: word 0x{int(words[i]):08x}: "
                               f"{spec.validate(self.config, int(words[i]))}; nothing was sent")

    def read(self, vm: int, vcore: int, region: Region, addr: int, count: int) -> np.ndarray:
        """Read ``count`` words (uint32) of a region."""
        region = self._region(region)
        words = P.encode_read(vm, vcore, region, addr, count)
        msgs = self._checked(f"read VM {vm} vcore {vcore} {region.name}[{addr}:{addr + count}]", words)
        data = [m.data for m in msgs if isinstance(m, P.ReadData)]
        return np.concatenate(data) if data else np.zeros(0, dtype=np.uint32)

    def load_core(self, vm: int, vcore: int, image: CoreImage, clear_state: bool = True) -> None:
        """Write a core image (all configuration regions); optionally zero u, v, ref, acc."""
        with self.lock:
            self._load_core(vm, vcore, image, clear_state)

    def _load_core(self, vm: int, vcore: int, image: CoreImage, clear_state: bool) -> None:
        words = image.region_words(self.config)
        cmds: list[int] = []
        for region, data in words.items():
            if len(data):
                cmds += P.encode_write(vm, vcore, region, 0, data)
        if clear_state:
            n = self.config.neurons_per_core
            for region in (Region.STATE_U, Region.STATE_V, Region.STATE_REF, Region.ACC):
                cmds += P.encode_write(vm, vcore, region, 0, np.zeros(n, dtype=np.int64))
        self._checked(f"load VM {vm} vcore {vcore}", cmds)

    def read_state(self, vm: int, vcore: int, count: int | None = None) -> dict[str, np.ndarray]:
        """Signed u, v, ref, acc of the first ``count`` neurons of a core."""
        n = self.config.neurons_per_core if count is None else count
        out = {}
        with self.lock:          # one consistent snapshot: no other thread's RUN in between
            for region, name in ((Region.STATE_U, "u"), (Region.STATE_V, "v"),
                                 (Region.STATE_REF, "ref"), (Region.ACC, "acc")):
                words = self.read(vm, vcore, region, 0, n)
                out[name] = REGIONS[region].fmt[name].get(words.astype(np.int64))
        return out

    # ---- running -----------------------------------------------------------------
    def inject(self, vm: int, vcore: int, axons) -> None:
        """Inject spikes on ``axons`` of a core; they are integrated in the next timestep."""
        words: list[int] = []
        for a in P.as_words(np.atleast_1d(axons), f"inject VM {vm} vcore {vcore} axon", 0, 0xFFFF).tolist():
            words += P.encode_inject(vm, vcore, a)
        if words:
            self._checked(f"inject VM {vm} vcore {vcore}", words)

    def run(self, steps: int, inject: dict | None = None, domains: int = ALL_DOMAINS) -> RunResult:
        """Run ``steps`` timesteps of the cores of ``domains`` (privileged; §6.1).

        Parameters
        ----------
        inject : dict, optional
            ``{step_offset: [(vm, vcore, axon), ...]}``: spikes injected before
            the given step of this run (0 = the first step).
        domains : int
            Bit set of the domains that step (``formats.domain_bit(vm)``; bit 7 = the
            bare-metal cores); every other core is frozen. Default: every core.
        """
        steps = P.check_steps(steps)
        domains = P.check_int("run: domains", domains, 1, ALL_DOMAINS)
        words = self._run_words(steps, inject or {}, domains)
        with self.lock:
            t0 = self.domain_t.copy()
            spikes, msgs = P.decode_spikes(self._transfer(words))
            bits = (domains >> np.arange(HV_VM + 1)) & 1
            self.domain_t = (self.domain_t + steps * bits) & WORD_MASK
        errors = [m for m in msgs if isinstance(m, P.ErrorMsg)
                  or (isinstance(m, P.Fault) and m.origin == P.FaultOrigin.HOST)]
        if errors:
            raise ChipError("run", errors)
        return RunResult(
            spikes=np.rec.fromarrays(spikes.T, dtype=SPIKE_DTYPE).view(np.ndarray) if len(spikes)
            else np.zeros(0, dtype=SPIKE_DTYPE),
            faults=[m for m in msgs if isinstance(m, P.Fault)],
            steps=[m.timestep for m in msgs if isinstance(m, P.StepEnd)],
            domain_t0=t0,
        )

    def _run_words(self, steps: int, inject: dict, domains: int = ALL_DOMAINS) -> list[int]:
        """The RUN (and INJECT) words of a run; RequestError, before anything is sent, on a bad
        step key or an injection the chip would refuse by its address (§8.3 check 7)."""
        if not isinstance(inject, dict):
            raise RequestError(f"run: inject must be a dict {{step: [(vm, vcore, axon), ...]}}, not "
                               f"{type(inject).__name__}")
        bad_keys = [k for k in inject if isinstance(k, (bool, np.bool_))
                    or not isinstance(k, (int, np.integer)) or not 0 <= k < steps]
        if bad_keys:
            raise RequestError(f"run: inject keys {bad_keys} are outside this run's steps 0..{steps - 1}")
        if not inject:
            return P.encode_run(steps, domains=domains)
        words: list[int] = []
        for s in range(steps):
            for item in inject.get(s, ()):
                words += self._inject_words(s, item)
            words += P.encode_run(1, domains=domains)
        return words

    def _inject_words(self, step: int, item) -> list[int]:
        """The INJECT word of one ``(vm, vcore, axon)`` of a run's injection plan, checked."""
        cfg = self.config
        try:
            vm, vcore, axon = item
        except (TypeError, ValueError):
            raise RequestError(f"run: inject[{step}]: {item!r} is not a (vm, vcore, axon) triple") from None
        where = f"run: inject[{step}] {item!r}"
        vm = P.check_int(f"{where}: vm", vm, 0, HV_VM)
        if vm != HV_VM and vm >= cfg.max_vms:
            raise RequestError(f"{where}: vm={vm} is neither a guest VM (0..{cfg.max_vms - 1}) nor "
                               f"the hypervisor ({HV_VM})")
        P.check_int(f"{where}: vcore", vcore, 0, (cfg.num_cores if vm == HV_VM else cfg.vcores_per_vm) - 1)
        P.check_int(f"{where}: axon", axon, 0, cfg.axons_per_core - 1)
        return P.encode_inject(vm, int(vcore), int(axon))

    def counters(self, vm: int, vcore: int, arch_only: bool = False) -> np.ndarray:
        """The telemetry counters of one core (see :class:`neurovm.formats.Counter`).

        A guest reads counters ``0 .. GUEST_COUNTERS-1`` only (§9.1: PACKETS_ROUTED and
        BUSY_CYCLES are the hypervisor's); the hypervisor reads all of them, or the
        architectural ones with ``arch_only``.
        """
        n = GUEST_COUNTERS if vm != HV_VM else ARCH_COUNTERS if arch_only else NUM_COUNTERS
        msgs = self._checked(f"counters VM {vm} vcore {vcore}", P.encode_read_counters(vm, vcore, 0, n))
        return next(m.values for m in msgs if isinstance(m, P.CountersMsg))

