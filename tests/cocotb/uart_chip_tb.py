"""cocotb testbench of the FPGA logic (:class:`neurovm.hdl.uart.UartChip`): bytes on the serial
line in, and the bytes coming back are exactly the emulator's output words, 4 bytes each."""

from __future__ import annotations

import json
import os
from collections import deque

import cocotb
import numpy as np

from agents import CycleLoop, InOrderScoreboard
from neurovm.config import ChipConfig
from neurovm.emulator import Chip
from neurovm.formats import ARCH_COUNTERS
from neurovm.host import protocol as P
from neurovm.host.serial_backend import windows
from tests.randnet import random_workload

CFG = ChipConfig.from_dict(json.loads(os.environ.get("NEUROVM_CFG", "{}")))
DIV = int(os.environ.get("NEUROVM_DIVISOR", "4"))
WINDOW = int(os.environ.get("NEUROVM_WINDOW", "48"))


class UartLineDriver:
    """Drives a UART line (8N1, ``divisor`` clocks per bit) from a queue of bytes."""

    def __init__(self, line, divisor: int):
        self.line, self.div = line, divisor
        self.bits: deque[int] = deque()
        self.left = 0

    def send(self, data: bytes):
        for byte in data:
            self.bits.extend([0] + [(byte >> k) & 1 for k in range(8)] + [1])

    @property
    def idle(self) -> bool:
        return not self.bits and self.left == 0

    def drive(self):
        if self.left == 0 and self.bits:
            self.line.value = self.bits.popleft()
            self.left = self.div
        if self.left:
            self.left -= 1

    def sample(self):
        pass


class UartLineMonitor:
    """Decodes a UART line into bytes, and bytes into little-endian words for ``on_word``."""

    def __init__(self, line, divisor: int, on_word):
        self.line, self.div, self.on_word = line, divisor, on_word
        self.state, self.count, self.bit, self.byte = "idle", 0, 0, 0
        self.word: list[int] = []
        self.errors = 0

    def drive(self):
        pass

    def sample(self):
        v = int(self.line.value)
        if self.state == "idle":
            if v == 0:
                self.state, self.count = "start", self.div // 2
            return
        self.count -= 1
        if self.count > 0:
            return
        if self.state == "start":
            self.state, self.count, self.bit, self.byte = ("data", self.div, 0, 0) if v == 0 else ("idle", 0, 0, 0)
        elif self.state == "data":
            self.byte |= v << self.bit
            self.bit += 1
            self.count = self.div
            if self.bit == 8:
                self.state = "stop"
        else:
            self.errors += v == 0
            self.state = "idle"
            self.word.append(self.byte)
            if len(self.word) == 4:
                self.on_word(int.from_bytes(bytes(self.word), "little"))
                self.word = []


@cocotb.test()
async def serial_bytes_match_emulator(dut):
    rng = np.random.default_rng(5)
    loop = CycleLoop(dut.clk)
    board = InOrderScoreboard("serial output")
    tx = UartLineDriver(dut.rx, DIV)
    rx = UartLineMonitor(dut.tx, DIV, board.got)
    loop.add(tx, rx)
    dut.rx.value = 1
    await loop.reset_and_start(dut.rst)
    golden = Chip(CFG)
    sent, tag = 0, 0
    for case in range(3):
        words = random_workload(rng, CFG, steps=3) + P.encode_read_counters(7, 0, 0, ARCH_COUNTERS)
        words += [0xF0000000]      # an unknown opcode: an ERROR message quoting its stream index
        # the host's side of the flow control (neurovm.host.serial_backend): windows that fit the
        # bridge's FIFO, each closed by a SYNC whose acknowledgement is awaited before the next
        for window in windows(np.asarray(words, dtype=np.int64), WINDOW):
            tag += 1
            chunk = window.tolist() + P.encode_sync(tag)
            board.expect(golden.feed(chunk).tolist(), f"case {case}")
            tx.send(np.asarray(chunk, dtype=np.int64).astype("<u4").tobytes())
            sent += len(chunk)
            await loop.wait_for(lambda: tx.idle and not board.expected, f"case {case} window {tag}", 3_000_000)
        board.check()
    assert rx.errors == 0
    dut._log.info("%d command words in, %d output words matched over the serial line", sent, board.matched)
    assert board.matched > 50
