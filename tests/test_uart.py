"""The UART bridge at bit level in Amaranth's simulator: bytes in, words out, words back as
bytes; re-alignment after a lost byte; error counters.  (The bridge in front of the whole chip
runs under cocotb + Verilator in test_fpga_bridge.py.)"""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from neurovm.hdl.uart import UartBridge

pytestmark = pytest.mark.hdl   # the HDL tier: cocotb testbenches, Verilator lint, Amaranth simulations

DIV = 5


class Loopback(wiring.Component):
    """The bridge with ``cmd`` fed back into ``out`` (plus 1, so a stuck path shows)."""

    def __init__(self, **kw):
        self.bridge = UartBridge(DIV, **kw)
        super().__init__({"rx": wiring.In(1, init=1), "tx": wiring.Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = b = self.bridge
        m.d.comb += [b.rx.eq(self.rx), self.tx.eq(b.tx), b.out.payload.eq(b.cmd.payload + 1),
                     b.out.valid.eq(b.cmd.valid), b.cmd.ready.eq(b.out.ready)]
        return m


def to_bits(data: bytes, stop_bits=None) -> list[int]:
    bits = []
    for i, byte in enumerate(data):
        stop = 1 if stop_bits is None else stop_bits[i]
        bits += [0] + [(byte >> k) & 1 for k in range(8)] + [stop]
    return bits


def run_line(dut, bits: list[int], n_out_bytes: int, extra_cycles: int = 2000, gaps: dict | None = None):
    """Drive ``bits`` on rx (idle gaps in bit times before given bit indices); decode tx bytes."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got: list[int] = []
    gaps = gaps or {}

    async def drive(ctx):
        await ctx.tick().repeat(10)
        for i, b in enumerate(bits):
            if i in gaps:
                ctx.set(dut.rx, 1)
                await ctx.tick().repeat(gaps[i] * DIV)
            ctx.set(dut.rx, b)
            await ctx.tick().repeat(DIV)
        ctx.set(dut.rx, 1)

    async def monitor(ctx):
        while len(got) < n_out_bytes:
            await ctx.tick().until(dut.tx == 0)
            await ctx.tick().repeat(DIV // 2)
            assert ctx.get(dut.tx) == 0, "start bit too short"
            byte = 0
            for k in range(8):
                await ctx.tick().repeat(DIV)
                byte |= ctx.get(dut.tx) << k
            await ctx.tick().repeat(DIV)
            assert ctx.get(dut.tx) == 1, "stop bit missing"
            got.append(byte)

    sim.add_testbench(drive)
    sim.add_testbench(monitor)
    sim.run_until(1e-6 * (len(bits) * DIV + sum(gaps.values()) * DIV + n_out_bytes * 10 * DIV + extra_cycles))
    return bytes(got)


@pytest.mark.parametrize("seed", range(3))
def test_words_round_trip_through_the_line(seed):
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << 32, size=12, dtype=np.uint64).astype(np.uint32)
    words[0], words[1] = 0, 0xFFFFFFFF
    dut = Loopback()
    out = run_line(dut, to_bits(words.astype("<u4").tobytes()), 4 * words.size)
    back = np.frombuffer(out, dtype="<u4")
    assert np.array_equal(back, words + np.uint32(1))


def test_pause_realigns_after_a_lost_byte_and_errors_are_counted():
    words = np.array([0x11223344, 0xA5A5A5A5, 0x01020304], dtype="<u4")
    raw = words.tobytes()
    # the first word loses a byte (3 sent), the line pauses, then two whole words follow
    bits = to_bits(raw[:3]) + to_bits(raw[4:])
    dut = Loopback(gap_bits=20)
    out = run_line(dut, bits, 8, gaps={30: 30})
    assert np.array_equal(np.frombuffer(out, dtype="<u4"), words[1:] + np.uint32(1))
    # a bad stop bit drops that byte and counts a framing error
    dut = Loopback()
    stops = [1] * 8
    stops[2] = 0
    sim_bits = to_bits(words[:2].tobytes(), stop_bits=stops) + to_bits(b"\x00")
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(10)
        for b in sim_bits:
            ctx.set(dut.rx, b)
            await ctx.tick().repeat(DIV)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(20 * DIV)
        seen["framing"] = ctx.get(dut.bridge.framing_errors)

    sim.add_testbench(tb)
    sim.run()
    assert seen["framing"] == 1


def test_divisor_is_checked():
    with pytest.raises(ValueError, match="divisor must be an integer >= 4 clocks per bit, not 2"):
        UartBridge(2)
