"""cocotb testbench of the host interface, through the chip top (:class:`neurovm.hdl.chip.NeuroChip`).

The Verilator harness of ``sim/`` never stalls the output stream; here the
command stream has random gaps and the output stream random backpressure, and
the words must still be exactly the emulator's: random multi-VM workloads,
malformed commands and random word streams, each followed by a resync.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from agents import CycleLoop, InOrderScoreboard, StreamSink, StreamSource, random_pauses, value_of
from neurovm.config import ChipConfig
from neurovm.emulator import Chip
from neurovm.host import protocol as P
from tests.randnet import random_workload
from tests.test_malformed_commands import KINDS, malformed, random_stream

CFG = ChipConfig.from_dict(json.loads(os.environ.get("NEUROVM_CFG", "{}")))
CASES = int(os.environ.get("NEUROVM_CASES", "6"))


@cocotb.test()
async def streams_with_stalls_match_emulator(dut):
    rng = np.random.default_rng(3)
    loop = CycleLoop(dut.clk)
    cmd = StreamSource(dut, "cmd", random_pauses(rng, 0.3))
    board = InOrderScoreboard("chip output")
    out = StreamSink(dut, "out", random_pauses(rng, 0.5), on_item=board.got)
    loop.add(out, cmd)
    await loop.reset_and_start(dut.rst)
    golden = Chip(CFG)
    total = 0
    for case in range(CASES):
        pieces = [random_workload(rng, CFG, steps=4)]
        for _ in range(20):
            pieces.append(malformed(rng, KINDS[int(rng.integers(len(KINDS)))])[0] if CFG.num_cores >= 2
                          else random_stream(rng))
        pieces.append(random_stream(rng))
        pieces.append(P.resync_words())
        for words in pieces:
            board.expect(golden.feed(words).tolist(), f"case {case}")
            cmd.extend(words)
            total += len(words)
        await loop.wait_for(lambda: cmd.idle and not board.expected and value_of(dut.idle), f"case {case}",
                            2_000_000)
        board.check()
    dut._log.info("%d command words, %d output words matched", total, board.matched)
    assert board.matched > 1000
