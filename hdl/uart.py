"""A UART bridge that carries the chip's 32-bit command and output streams over a serial line.

Line format: 8N1, LSB first, ``divisor`` clocks per bit.  Words travel as 4
bytes, least significant first, in both directions (docs/architecture.md §21).

* :class:`UartRx` / :class:`UartTx`: one byte stream each.
* :class:`UartBridge`: bytes from ``rx`` are assembled into words and queued
  in a FIFO of ``fifo_depth`` words towards ``cmd``; words from ``out`` are
  sent as 4 bytes on ``tx``.  If the line stays idle for ``gap_bits`` bit
  times in the middle of a word, the partial word is dropped, so a host that
  lost byte alignment re-aligns by pausing.  The host keeps at most
  ``fifo_depth`` words in flight (it waits for a SYNC acknowledgement after
  each window), so the FIFO never overflows; ``overruns`` and ``framing_errors``
  count what went wrong anyway.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "UartBridge", "UartChip"]


def _check_divisor(component, divisor: int):
    if not isinstance(divisor, int) or divisor < 4:
        component._MustUse__used = True   # refused, not forgotten: no UnusedElaboratable warning
        raise ValueError(f"divisor must be an integer >= 4 clocks per bit, not {divisor!r}")


class UartRx(wiring.Component):
    """UART receiver (8N1).

    Attributes
    ----------
    rx : In(1), init 1
        The serial line (idle high); synchronised internally.
    data : Out(stream.Signature(8))
        Received bytes.  A byte not taken before the next one completes is lost
        (counted in ``overruns``).
    framing_errors : Out(16)
        Bytes whose stop bit was 0 (dropped), wrapping.
    overruns : Out(16)
        Bytes lost because ``data`` was not ready, wrapping.
    idle_bits : Out(8)
        Bit times the line has been idle since the last byte (saturates at 255).
    """

    def __init__(self, divisor: int):
        _check_divisor(self, divisor)
        self.divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "framing_errors": Out(16),
            "overruns": Out(16),
            "idle_bits": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(d * 2))
        bit = Signal(range(9))
        shreg = Signal(8)
        idle_timer = Signal(range(d))

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(idle_timer == d - 1):
                    m.d.sync += idle_timer.eq(0)
                    with m.If(self.idle_bits != 255):
                        m.d.sync += self.idle_bits.eq(self.idle_bits + 1)
                with m.Else():
                    m.d.sync += idle_timer.eq(idle_timer + 1)
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(rx):           # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    m.d.sync += [self.idle_bits.eq(0), idle_timer.eq(0)]
                    with m.If(~rx):
                        m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
                    with m.Elif(self.data.valid & ~self.data.ready):
                        m.d.sync += self.overruns.eq(self.overruns + 1)
                    with m.Else():
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
        return m


class UartTx(wiring.Component):
    """UART transmitter (8N1).

    Attributes
    ----------
    data : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1, init 1)
        The serial line.
    """

    def __init__(self, divisor: int):
        _check_divisor(self, divisor)
        self.divisor = divisor
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        shreg = Signal(10)   # stop, 8 data, start -- shifted out LSB first
        bits = Signal(range(11))
        m.d.comb += self.data.ready.eq(bits == 0)
        with m.If(bits == 0):
            with m.If(self.data.valid):
                m.d.sync += [shreg.eq((1 << 9) | (self.data.payload << 1)), bits.eq(10), timer.eq(d - 1),
                             self.tx.eq(0)]
        with m.Elif(timer == 0):
            m.d.sync += [timer.eq(d - 1), bits.eq(bits - 1), shreg.eq(shreg >> 1)]
            m.d.sync += self.tx.eq(1)
            with m.If(bits != 1):
                m.d.sync += self.tx.eq(shreg.bit_select(1, 1))
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class UartBridge(wiring.Component):
    """Serial line <-> the chip's 32-bit ``cmd`` / ``out`` streams.

    Parameters
    ----------
    divisor : int
        Clocks per bit (``clock_hz // baud``).
    fifo_depth : int
        Command words buffered between the line and the chip.
    gap_bits : int
        Idle bit times after which a partial word is dropped (re-alignment).

    Attributes
    ----------
    rx : In(1, init 1), tx : Out(1, init 1)
        The serial line.
    cmd : Out(stream.Signature(32))
        Command words towards the chip.
    out : In(stream.Signature(32))
        Output words from the chip.
    overruns, framing_errors, dropped_partial : Out(16)
        Error counters (wrapping).
    """

    def __init__(self, divisor: int, fifo_depth: int = 512, gap_bits: int = 40):
        _check_divisor(self, divisor)
        if not 2 <= gap_bits <= 255:
            self._MustUse__used = True
            raise ValueError(f"gap_bits must be 2..255, not {gap_bits}")
        self.divisor, self.fifo_depth, self.gap_bits = divisor, fifo_depth, gap_bits
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "cmd": Out(stream.Signature(32)), "out": In(stream.Signature(32)),
            "overruns": Out(16), "framing_errors": Out(16), "dropped_partial": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UartRx(self.divisor)
        m.submodules.utx = utx = UartTx(self.divisor)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=32, depth=self.fifo_depth)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), self.framing_errors.eq(urx.framing_errors)]

        # bytes -> words, little-endian; a full FIFO loses the word (counted)
        word = Signal(24)
        nbytes = Signal(range(4))
        m.d.comb += urx.data.ready.eq(1)
        m.d.comb += fifo.w_data.eq(urx.data.payload << 24 | word)
        with m.If(urx.data.valid):
            with m.If(nbytes == 3):
                m.d.comb += fifo.w_en.eq(1)
                m.d.sync += nbytes.eq(0)
                with m.If(~fifo.w_rdy):
                    m.d.sync += self.overruns.eq(self.overruns + 1)
            with m.Else():
                m.d.sync += [word.eq(urx.data.payload << 16 | word >> 8), nbytes.eq(nbytes + 1)]
        with m.Elif((nbytes != 0) & (urx.idle_bits >= self.gap_bits)):
            m.d.sync += [nbytes.eq(0), self.dropped_partial.eq(self.dropped_partial + 1)]
        wiring.connect(m, fifo.r_stream, wiring.flipped(self.cmd))

        # words -> bytes
        out_word = Signal(32)
        left = Signal(range(5))
        m.d.comb += [self.out.ready.eq(left == 0), utx.data.payload.eq(out_word[:8]), utx.data.valid.eq(left != 0)]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += [out_word.eq(self.out.payload), left.eq(4)]
        with m.If(utx.data.valid & utx.data.ready):
            m.d.sync += [out_word.eq(out_word >> 8), left.eq(left - 1)]
        return m


class UartChip(wiring.Component):
    """:class:`~neurovm.hdl.chip.NeuroChip` behind a :class:`UartBridge`: the logic of an FPGA build
    (the board top only adds pins and LEDs), and the top the bridge tests simulate.

    Attributes
    ----------
    rx : In(1, init 1), tx : Out(1, init 1)
        The serial line.
    idle : Out(1)
        The chip has nothing to do.
    timestep : Out(32)
        The chip's timestep counter.
    """

    def __init__(self, config, divisor: int, fifo_depth: int = 512):
        self.config, self.divisor, self.fifo_depth = config, divisor, fifo_depth
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "idle": Out(1), "timestep": Out(32)})

    def elaborate(self, platform):
        from .chip import NeuroChip

        m = Module()
        m.submodules.chip = chip = NeuroChip(self.config)
        m.submodules.bridge = bridge = UartBridge(self.divisor, self.fifo_depth)
        wiring.connect(m, bridge.cmd, chip.cmd)
        wiring.connect(m, chip.out, bridge.out)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx), self.idle.eq(chip.idle),
                     self.timestep.eq(chip.timestep)]
        return m
