"""The NeuroVM host runtime: backends, the command protocol and the client API.

:class:`Backend` is the transport interface every chip implementation serves
(emulator now; Verilator model and FPGA later); :class:`ChipClient` is the
convenient API written against it.
"""

from .backend import Backend, EmulatorBackend
from .client import ChipClient, ChipError, RunResult

__all__ = ["Backend", "EmulatorBackend", "ChipClient", "ChipError", "RunResult", "open"]


def open(backend: str = "emulator", config=None) -> ChipClient:  # noqa: A001 - mirrors neurovm.open
    """Open a chip: ``"emulator"`` (the only backend until the Verilator model lands)."""
    from neurovm.config import DEFAULT_CONFIG

    config = config or DEFAULT_CONFIG
    if backend == "emulator":
        return ChipClient(EmulatorBackend(config))
    raise ValueError(f"unknown backend {backend!r}; available: 'emulator'")
