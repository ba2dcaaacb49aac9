"""The FPGA over a serial port: the same 32-bit word streams, 4 bytes per word, little-endian.

The bridge on the FPGA (:class:`neurovm.hdl.uart.UartBridge`) buffers
``window`` command words; it cannot stop the host when that buffer is full.
So :meth:`SerialBackend.exchange` cuts the command stream at command
boundaries into windows of at most ``window`` words, appends a SYNC to each
and waits for its acknowledgement before sending the next: the chip has then
drained everything, and the next window fits.  (A single command longer than
the window -- a long WRITE -- is sent alone: the chip consumes WRITE data at
clock speed, far faster than the line delivers it.)
"""

from __future__ import annotations

import time

import numpy as np

from neurovm.config import ChipConfig

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
    window : int
        Command words in flight at most (below the bridge's FIFO depth).
    timeout : float
        Seconds without any output before an exchange gives up.
    """

    name = "fpga"

    def __init__(self, port: str, config: ChipConfig, baud: int = 115200, window: int = 448,
                 timeout: float = 5.0):
        super().__init__()
        import serial

        self.config = config
        self.port_name = port
        self.window = int(window)
        self.timeout = float(timeout)
        try:
            self.port = serial.serial_for_url(port, baudrate=baud, timeout=0.02)
        except (serial.SerialException, OSError, ValueError) as e:
            raise BridgeError(f"{port}: cannot open the serial port ({e})") from None
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

    def close(self) -> None:
        self.port.close()
