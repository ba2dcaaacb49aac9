"""The backend interface: a transport for the chip's 32-bit word streams.

Every way of reaching a NeuroVM chip -- the emulator, the Verilator model,
an FPGA over serial -- is a :class:`Backend`: it accepts command words and
returns output words.  Everything above it (:class:`~neurovm.host.client.ChipClient`,
the runtime, the CLI) is written against this interface only, so a workload
runs unchanged on any backend.
"""

from __future__ import annotations

import abc
import itertools

import numpy as np

from neurovm.config import DEFAULT_CONFIG, ChipConfig

from neurovm.formats import OUTPUT_FORMATS, OutType

from .protocol import ProtocolError, encode_sync, resync_words, split_messages

__all__ = ["Backend", "EmulatorBackend", "CheckedBackend", "CosimMismatch"]


class Backend(abc.ABC):
    """A transport to one chip.

    Subclasses implement :meth:`send` and :meth:`receive`; :meth:`exchange`
    (send, then collect output up to a SYNC acknowledgement) works on top of
    them for any transport.
    """

    config: ChipConfig
    name: str = "backend"

    def __init__(self):
        self._tags = itertools.count(1)

    @abc.abstractmethod
    def send(self, words: np.ndarray) -> None:
        """Queue command words to the chip."""

    @abc.abstractmethod
    def receive(self) -> np.ndarray:
        """Return the output words available now (possibly none)."""

    def exchange(self, words) -> np.ndarray:
        """Send ``words`` and return all output they produce.

        A SYNC command with a fresh tag is appended; output is collected until
        its acknowledgement, which is removed from the returned words.
        """
        tag = next(self._tags) & 0xFF_FFFF
        ack = OUTPUT_FORMATS[OutType.SYNC_ACK].pack(type=OutType.SYNC_ACK, tag=tag)
        self.send(np.concatenate([np.asarray(words, dtype=np.int64).ravel(), encode_sync(tag)]))
        got: list[np.ndarray] = []
        for _ in range(self.max_polls):
            chunk = self.receive()
            if chunk.size:
                got.append(chunk)
                if int(chunk[-1]) != ack:
                    continue
                out = np.concatenate(got)
                got = [out]
                try:  # the last word could be payload that happens to equal the ack
                    pos, _, _ = split_messages(out)
                except ProtocolError:
                    continue
                if pos[-1] == len(out) - 1:
                    return out[:-1].astype(np.uint32)
        raise TimeoutError(f"{self.name}: no SYNC acknowledgement (tag {tag}) from the chip")

    max_polls = 1_000_000

    def resync(self) -> int:
        """Return the chip's command parser to a command boundary and drop stale output (§8.1).

        Sends the NOP run (:func:`~neurovm.host.protocol.resync_words`) and a SYNC with a
        fresh tag, then discards output up to and including its acknowledgement.  Used
        after framing may have been lost (a send that failed half-way, a timeout).  A
        WRITE that was cut short consumes some of the NOPs as data (zeros).

        Returns
        -------
        int
            Output words discarded before the acknowledgement.
        """
        tag = next(self._tags) & 0xFF_FFFF
        ack = OUTPUT_FORMATS[OutType.SYNC_ACK].pack(type=OutType.SYNC_ACK, tag=tag)
        self.send(np.asarray(resync_words() + encode_sync(tag), dtype=np.int64))
        dropped = 0
        for _ in range(self.max_polls):
            chunk = self.receive()
            hits = np.flatnonzero(chunk == ack)
            if hits.size:
                return dropped + int(hits[-1])
            dropped += chunk.size
        raise TimeoutError(f"{self.name}: no SYNC acknowledgement (tag {tag}) to the resynchronisation")

    def close(self) -> None:
        """Release the transport."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EmulatorBackend(Backend):
    """The golden emulator (:class:`neurovm.emulator.Chip`) as a backend.

    Parameters
    ----------
    config : ChipConfig
        The chip's sizes.
    device : str
        ``"cpu"`` (numpy) or ``"cuda"`` / ``"cuda:N"`` (CuPy): where the emulator's state
        lives and its timestep runs.  Raises
        :class:`~neurovm.emulator.DeviceUnavailableError` when CuPy or a CUDA device is absent.
    batch : int, optional
        None (default): one chip.  ``B``: ``B`` copies (``Chip(config, batch=B)``); then
        :meth:`exchange_each` sends one stream per copy, and :meth:`send` / :meth:`exchange`
        send the same words to every copy and return copy 0's output.
    """

    name = "emulator"

    def __init__(self, config: ChipConfig = DEFAULT_CONFIG, device: str = "cpu", batch: int | None = None):
        super().__init__()
        from neurovm.emulator import Chip

        self.config = config
        self.device = device
        self.batch = batch
        self.chip = Chip(config, batch=batch, device=device)
        self._pending: list[np.ndarray] = []

    def send(self, words) -> None:
        out = self.chip.feed(words)
        self._pending.append(out if self.batch is None else out[0])

    def receive(self) -> np.ndarray:
        if not self._pending:
            return np.zeros(0, dtype=np.uint32)
        out = np.concatenate(self._pending)
        self._pending.clear()
        return out

    def exchange_each(self, streams) -> list[np.ndarray]:
        """Feed stream ``b`` to copy ``b`` of a batch backend; return every copy's output words.

        Unlike :meth:`exchange` no SYNC is needed: the emulator answers at once.  Words
        queued by :meth:`send` and not yet received are dropped first.

        Raises
        ------
        ValueError
            The backend is not a batch (``batch=None``), or the number of streams is not ``B``.
        """
        if self.batch is None:
            raise ValueError("EmulatorBackend.exchange_each needs a batch backend (EmulatorBackend(config, "
                             "batch=B)); use exchange()")
        self._pending.clear()
        return self.chip.feed_each(streams)


class CosimMismatch(AssertionError):
    """The checked backend's output differs from the reference backend's."""


class CheckedBackend(Backend):
    """Runs every command on ``primary`` and on ``reference`` (normally the emulator)
    and raises :class:`CosimMismatch` at the first output word that differs.

    The words returned are the primary's.  Used by ``make sim`` to check the
    Verilator model against the golden model word for word.
    """

    def __init__(self, primary: Backend, reference: Backend):
        super().__init__()
        self.primary, self.reference = primary, reference
        self.config = primary.config
        self.name = f"{primary.name} (checked against {reference.name})"
        self._ref: list[int] = []
        self._pos = 0       # words of output compared so far
        self.compared = 0

    def send(self, words) -> None:
        self.primary.send(words)
        self.reference.send(words)
        self._ref.extend(int(w) for w in self.reference.receive())

    def receive(self) -> np.ndarray:
        got = self.primary.receive()
        for i, w in enumerate(got.tolist()):
            at = self._pos + i
            want = self._ref[at] if at < len(self._ref) else None
            if w != want:
                exp = "nothing" if want is None else f"0x{want:08x}"
                raise CosimMismatch(f"output word {at}: {self.primary.name} gave 0x{w:08x}, "
                                    f"{self.reference.name} {exp}")
        self._pos += got.size
        self.compared += got.size
        return got

    def resync(self) -> int:
        """Resynchronise both backends and restart the comparison at their next output."""
        dropped = self.primary.resync()
        self.reference.resync()
        self._ref.clear()
        self._pos = 0
        return dropped

    def close(self) -> None:
        self.primary.close()
        self.reference.close()
