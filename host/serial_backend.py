"""The FPGA over a serial port: the same 32-bit word streams, 4 bytes per word, little-endian.

The bridge on the FPGA (:class:`neurovm.hdl.uart.UartBridge`) buffers
``window`` command words; it cannot stop the host when that buffer is full.
So :meth:`SerialBackend.exchange` cuts the command stream at command
boundaries into windows of at most ``window`` words, appends a SYNC to each
and waits for its acknowledgement before sending the next: the chip has then
drained everything, and the next window fits.  (A single command longer than
the window -- a long WRITE -- is sent alone: the chip consumes WRITE data at
clock speed, far faster than the line delivers it.)

The window comes from the bridge's FIFO depth (:func:`neurovm.fpga.boards.host_window`,
docs/architecture.md §21); a window the FIFO cannot hold is refused.  A device
path is opened exclusively (POSIX ``flock``): a second process gets a
"port busy" :class:`BridgeError` instead of interleaving its words with ours.
"""

from __future__ import annotations

import time

import numpy as np

from neurovm.config import ChipConfig
from neurovm.fpga.boards import DEFAULT_FIFO_DEPTH, host_window

from .backend import Backend
from .protocol import command_starts

__all__ = ["SerialBackend", "BridgeError", "windows"]


class BridgeError(ConnectionError):
    """The serial link failed: no port, or no answer in time; the message names the port."""


def windows(words: np.ndarray, window: int) -> list[np.ndarray]:
    """Cut a command stream at command boundaries into pieces of at most ``window`` words
    (a single longer command is a piece of its own).  Each piece is one exchange: the
    chip's stream index then also counts the SYNC after each piece."""
    starts = command_starts(words)
    ends = np.append(starts[1:], words.size)
    out, lo = [], 0
    while lo < starts.size:
        hi = lo + 1
        while hi < starts.size and ends[hi] - starts[lo] <= window:
            hi += 1
        out.append(words[starts[lo]:ends[hi - 1]])
        lo = hi
    return out


class SerialBackend(Backend):
    """A chip behind a UART bridge, on ``port`` (a device path or any pyserial URL).

    Parameters
    ----------
    port : str
        ``/dev/ttyUSB0``, ``/dev/pts/3``, ``socket://host:port``, ``loop://`` ...
    config : ChipConfig
        The configuration the bitstream was built with (the bridge cannot report it).
    baud : int
    window : int, optional
        Command words in flight at most; default :func:`~neurovm.fpga.boards.host_window`
        of ``fifo_depth``.  A window of ``fifo_depth`` words or more is refused.
    timeout : float
        Seconds without any output before an exchange gives up.
    fifo_depth : int
        Command words the bridge's FIFO holds (the board's ``BoardSpec.fifo_depth``).
    board : str, optional
        The board's name, for messages.
    """

    name = "fpga"

    def __init__(self, port: str, config: ChipConfig, baud: int = 115200, window: int | None = None,
                 timeout: float = 5.0, fifo_depth: int = DEFAULT_FIFO_DEPTH, board: str | None = None):
        super().__init__()
        self.config = config
        self.port_name = port
        self.fifo_depth = fifo_depth
        self.baud = baud
        self.window = _checked_window(window, fifo_depth, board)
        self.timeout = float(timeout)
        self.port = _open_port(port, baud)
        self._rx = bytearray()

    def send(self, words: np.ndarray) -> None:
        self.port.write(np.asarray(words, dtype=np.int64).astype("<u4").tobytes())

    def receive(self) -> np.ndarray:
        deadline = time.monotonic() + self.timeout
        while True:
            chunk = self.port.read(max(1, self.port.in_waiting))
            if chunk:
                self._rx += chunk
                n = len(self._rx) // 4 * 4
                if n:
                    out = np.frombuffer(bytes(self._rx[:n]), dtype="<u4").astype(np.int64)
                    del self._rx[:n]
                    return out
            if time.monotonic() > deadline:
                raise BridgeError(f"{self.port_name}: no answer from the chip for {self.timeout:.1f} s "
                                  "(is the board programmed with a NeuroVM bitstream, and the baud rate right?)")

    def exchange(self, words) -> np.ndarray:
        words = np.asarray(words, dtype=np.int64).ravel()
        if words.size == 0:
            return super().exchange(words)
        return np.concatenate([super(SerialBackend, self).exchange(w) for w in windows(words, self.window)]) \
            .astype(np.uint32)

    def resync(self) -> int:
        """Drop buffered input, pause so the bridge drops a partly received word
        (§21: ``gap_bits`` of idle line), then resynchronise the parser (§8.1)."""
        self._rx.clear()
        self.port.reset_input_buffer()
        time.sleep(max(0.01, 80.0 / self.baud))   # twice the bridge's 40-bit gap
        return super().resync()

    def close(self) -> None:
        self.port.close()


def _checked_window(window, fifo_depth: int, board: str | None) -> int:
    """The window to use: ``host_window(fifo_depth)`` by default; ValueError naming the board,
    the FIFO and the window if an explicit one is not an integer in ``1 .. fifo_depth - 1``."""
    of = f"board {board!r}'s bridge FIFO" if board else "the bridge FIFO"
    safe = host_window(fifo_depth)
    if window is None:
        return safe
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"serial window must be a positive integer, not {window!r}")
    if window >= fifo_depth:
        raise ValueError(f"serial window {window} words does not fit {of} of {fifo_depth} words "
                         f"(a window and its SYNC must fit; the safe window is {safe})")
    return int(window)


def _open_port(port: str, baud: int):
    """Open ``port`` (exclusively if it is a device path on POSIX); BridgeError naming it otherwise."""
    import os

    import serial

    exclusive = os.name == "posix" and "://" not in port
    try:
        if exclusive:
            return serial.serial_for_url(port, baudrate=baud, timeout=0.02, exclusive=True)
        return serial.serial_for_url(port, baudrate=baud, timeout=0.02)
    except (serial.SerialException, OSError, ValueError) as e:
        if "exclusively lock" in str(e):
            raise BridgeError(f"port busy: {port} is open in another process or handle (close it first; "
                              f"{e})") from None
        raise BridgeError(f"{port}: cannot open the serial port ({e})") from None
