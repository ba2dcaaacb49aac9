"""The NeuroVM host runtime: backends, the command protocol and the client API.

:class:`Backend` is the transport interface every chip implementation serves
(emulator now; Verilator model and FPGA later); :class:`ChipClient` is the
convenient API written against it.
"""

from .backend import Backend, CheckedBackend, CosimMismatch, EmulatorBackend
from .client import ChipClient, ChipError, RunResult
from .runtime import VM, Chip, SpikeTrains, VMError

__all__ = ["Backend", "EmulatorBackend", "CheckedBackend", "CosimMismatch", "ChipClient", "ChipError",
           "RunResult", "Chip", "VM", "VMError", "SpikeTrains", "open"]

BACKENDS = ("emulator", "verilator")


def open(backend: str = "emulator", config=None, check: bool = False, waves: str | None = None,
         quiet: bool = True) -> Chip:  # noqa: A001 - mirrors neurovm.open
    """Open a chip.

    Parameters
    ----------
    backend : {"emulator", "verilator"}
        The golden numpy emulator, or the cycle-accurate Verilator model of the
        HDL (built on first use, cached under build/sim/).
    config : ChipConfig, optional
    check : bool
        Also run everything on the emulator and raise :class:`CosimMismatch`
        at the first output word that differs.
    waves : str, optional
        Verilator only: write an FST waveform to this path.
    """
    from neurovm.config import DEFAULT_CONFIG

    config = config or DEFAULT_CONFIG
    if backend == "emulator":
        b = EmulatorBackend(config)
    elif backend == "verilator":
        from .verilator import VerilatorBackend

        b = VerilatorBackend(config, trace=waves, quiet=quiet)
    else:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if check:
        b = CheckedBackend(b, EmulatorBackend(config))
    return Chip(b)
