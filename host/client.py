"""A convenient Python API over any :class:`~neurovm.host.backend.Backend`.

:class:`ChipClient` speaks the command protocol for you: map virtual cores,
load core images, inject spikes, run, read spikes, state and counters.
Errors and faults that a command provokes are raised as :class:`ChipError`
(with the decoded messages); the chip keeps working afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurovm.formats import ARCH_COUNTERS, NUM_COUNTERS, REGIONS, Perm, Region
from neurovm.image import CoreImage

from . import protocol as P
from .backend import Backend

__all__ = ["ChipClient", "ChipError", "RunResult", "SPIKE_DTYPE"]

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

    def for_vm(self, vm: int) -> np.ndarray:
        return self.spikes[self.spikes["vm"] == vm]


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

    # ---- plumbing -------------------------------------------------------
    def exchange(self, words) -> list:
        """Send command words; return the decoded output messages."""
        return P.decode_output(self.backend.exchange(words))

    def _checked(self, what: str, words) -> list:
        msgs = self.exchange(words)
        bad = [m for m in msgs if isinstance(m, (P.ErrorMsg, P.Fault))]
        if bad:
            raise ChipError(what, bad)
        return msgs

    # ---- hypervisor --------------------------------------------------------
    def reset(self, pcore: int | None = None) -> None:
        """Reset the whole chip, or scrub one physical core."""
        self._checked("reset", P.encode_reset(pcore))

    def map(self, vm: int, vcore: int, pcore: int, perms: int = Perm.ALL) -> None:
        """Map ``vcore`` of ``vm`` to physical core ``pcore`` (privileged)."""
        self._checked(f"map VM {vm} vcore {vcore} -> core {pcore}", P.encode_mmu_map(vm, vcore, pcore, perms))

    def unmap(self, vm: int, vcore: int) -> None:
        self._checked(f"unmap VM {vm} vcore {vcore}", P.encode_mmu_map(vm, vcore, valid=False))

    # ---- memories ------------------------------------------------------------
    def write(self, vm: int, vcore: int, region: Region, addr: int, data) -> None:
        self._checked(f"write VM {vm} vcore {vcore} {Region(region).name}[{addr}]",
                      P.encode_write(vm, vcore, region, addr, data))

    def read(self, vm: int, vcore: int, region: Region, addr: int, count: int) -> np.ndarray:
        """Read ``count`` words (uint32) of a region."""
        msgs = self._checked(f"read VM {vm} vcore {vcore} {Region(region).name}[{addr}:{addr + count}]",
                             P.encode_read(vm, vcore, region, addr, count))
        data = [m.data for m in msgs if isinstance(m, P.ReadData)]
        return np.concatenate(data) if data else np.zeros(0, dtype=np.uint32)

    def load_core(self, vm: int, vcore: int, image: CoreImage, clear_state: bool = True) -> None:
        """Write a core image (all configuration regions); optionally zero u, v, ref, acc."""
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
        for region, name in ((Region.STATE_U, "u"), (Region.STATE_V, "v"),
                             (Region.STATE_REF, "ref"), (Region.ACC, "acc")):
            words = self.read(vm, vcore, region, 0, n)
            out[name] = REGIONS[region].fmt[name].get(words.astype(np.int64))
        return out

    # ---- running -----------------------------------------------------------------
    def inject(self, vm: int, vcore: int, axons) -> None:
        """Inject spikes on ``axons`` of a core; they are integrated in the next timestep."""
        words: list[int] = []
        for a in np.atleast_1d(np.asarray(axons, dtype=np.int64)):
            words += P.encode_inject(vm, vcore, int(a))
        if words:
            self._checked(f"inject VM {vm} vcore {vcore}", words)

    def run(self, steps: int, inject: dict | None = None) -> RunResult:
        """Run ``steps`` timesteps.

        Parameters
        ----------
        inject : dict, optional
            ``{step_offset: [(vm, vcore, axon), ...]}``: spikes injected before
            the given step of this run (0 = the first step).
        """
        words: list[int] = []
        inject = inject or {}
        bad_keys = [k for k in inject if not 0 <= k < steps]
        if bad_keys:
            raise ValueError(f"inject keys {sorted(bad_keys)} are outside this run's steps 0..{steps - 1}")
        if inject:
            for s in range(steps):
                for vm, vcore, axon in inject.get(s, ()):
                    words += P.encode_inject(vm, vcore, axon)
                words += P.encode_run(1)
        else:
            words = P.encode_run(steps)
        spikes, msgs = P.decode_spikes(self.backend.exchange(words))
        errors = [m for m in msgs if isinstance(m, P.ErrorMsg)
                  or (isinstance(m, P.Fault) and m.origin == P.FaultOrigin.HOST)]
        if errors:
            raise ChipError("run", errors)
        return RunResult(
            spikes=np.rec.fromarrays(spikes.T, dtype=SPIKE_DTYPE).view(np.ndarray) if len(spikes)
            else np.zeros(0, dtype=SPIKE_DTYPE),
            faults=[m for m in msgs if isinstance(m, P.Fault)],
            steps=[m.timestep for m in msgs if isinstance(m, P.StepEnd)],
        )

    def counters(self, vm: int, vcore: int, arch_only: bool = False) -> np.ndarray:
        """The telemetry counters of one core (see :class:`neurovm.formats.Counter`)."""
        n = ARCH_COUNTERS if arch_only else NUM_COUNTERS
        msgs = self._checked(f"counters VM {vm} vcore {vcore}", P.encode_read_counters(vm, vcore, 0, n))
        return next(m.values for m in msgs if isinstance(m, P.CountersMsg))

