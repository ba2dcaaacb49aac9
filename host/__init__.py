"""The NeuroVM host runtime: backends, the command protocol and the client API.

:class:`Backend` is the transport interface every chip implementation serves
(emulator now; Verilator model and FPGA later); :class:`ChipClient` is the
convenient API written against it.
"""

from .backend import Backend, CheckedBackend, CosimMismatch, EmulatorBackend
from .client import ChipClient, ChipError, RequestError, RunResult
from .protocol import FramingError
from .runtime import VM, Chip, SpikeTrains, VMError

__all__ = ["Backend", "EmulatorBackend", "CheckedBackend", "CosimMismatch", "ChipClient", "ChipError",
           "RequestError", "FramingError", "RunResult", "Chip", "VM", "VMError", "SpikeTrains", "open"]

BACKENDS = ("emulator", "verilator", "fpga:PORT")


def open(backend: str = "emulator", config=None, check: bool = False, waves: str | None = None,
         quiet: bool = True, device: str | None = None, **serial_options) -> Chip:  # noqa: A001 - mirrors neurovm.open
    """Open a chip.

    Parameters
    ----------
    backend : {"emulator", "verilator", "fpga:PORT"}
        The golden numpy emulator; the cycle-accurate Verilator model of the HDL
        (built on first use, cached under build/sim/); or an FPGA running a NeuroVM
        bitstream behind the UART bridge on serial port ``PORT`` (a device path or a
        pyserial URL).
    config : ChipConfig, optional
        For ``fpga:`` the configuration the bitstream was built with; default: that
        of ``board=`` (see ``neurovm.fpga.BOARDS``), else the default configuration.
    check : bool
        Also run everything on the emulator and raise :class:`CosimMismatch`
        at the first output word that differs.
    waves : str, optional
        Verilator only: write a VCD waveform to this path.
    device : str, optional
        Emulator only: ``"cpu"`` (default, numpy) or ``"cuda"`` / ``"cuda:N"`` (CuPy on an
        NVIDIA GPU); :class:`~neurovm.emulator.DeviceUnavailableError` when CuPy or the
        device is absent (docs/architecture.md §6.4, §15).
    serial_options
        ``fpga:`` only: ``board``, ``baud``, ``window``, ``timeout`` (see
        :class:`~neurovm.host.serial_backend.SerialBackend`).  With ``board`` the
        baud rate and the bridge's FIFO depth are the board's, and the window
        defaults to ``host_window(fifo_depth)`` (§21); a larger window than the
        FIFO holds is refused.
    """
    from neurovm.config import DEFAULT_CONFIG

    if device is not None and backend != "emulator":
        raise ValueError(f"device={device!r}: only the emulator backend runs on a chosen device; "
                         f"backend {backend!r} is a chip of its own")
    if backend.startswith("fpga:"):
        from .serial_backend import SerialBackend

        board = serial_options.pop("board", None)
        if board is not None:
            from neurovm.fpga.boards import board_spec

            spec = board_spec(board)
            config = config or spec.config
            serial_options.setdefault("baud", spec.baud)
            serial_options.update(fifo_depth=spec.fifo_depth, board=spec.name)
        b = SerialBackend(backend[len("fpga:"):], config or DEFAULT_CONFIG, **serial_options)
    elif serial_options:
        raise TypeError(f"{', '.join(serial_options)}: options of the fpga: backend only")
    elif backend == "emulator":
        b = EmulatorBackend(config or DEFAULT_CONFIG, device=device or "cpu")
    elif backend == "verilator":
        from .verilator import VerilatorBackend

        b = VerilatorBackend(config or DEFAULT_CONFIG, trace=waves, quiet=quiet)
    else:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if check:
        b = CheckedBackend(b, EmulatorBackend(b.config))
    return Chip(b)
