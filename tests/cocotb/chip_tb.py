"""cocotb testbench of the host interface, through the chip top (:class:`neurovm.hdl.chip.NeuroChip`).

The Verilator harness of ``sim/`` never stalls the output stream; here the
command stream has random gaps and the output stream random backpressure, and
the words must still be exactly the emulator's: random multi-VM workloads,
malformed commands and random word streams, each followed by a resync.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import cocotb
import numpy as np

from agents import CycleLoop, InOrderScoreboard, StreamSink, StreamSource, random_pauses, record_coverage, value_of
from neurovm.config import ChipConfig
from neurovm.emulator import Chip
from neurovm.formats import FaultCause, Perm, Region
from neurovm.host import protocol as P
from neurovm.host.verify.coverage import chip_stream_hits
from tests.randnet import random_workload
from tests.test_malformed_commands import KINDS, malformed, random_stream

CFG = ChipConfig.from_dict(json.loads(os.environ.get("NEUROVM_CFG", "{}")))
CASES = int(os.environ.get("NEUROVM_CASES", "6"))
SEED = int(os.environ.get("NEUROVM_SEED", "3"))   # the regression runner's seed; 3: the regular suite's


def fault_corners(cfg: ChipConfig) -> list[int]:
    """Commands for the fault corners random streams rarely reach (cover points chip.fault.*, chip.run_one_guest):
    a read-only mapping written to (PERMISSION), a core mapped twice (CORE_OWNED), a RUN of one guest alone.
    Whatever the chip's state, the emulator's answer is the reference, word for word."""
    if cfg.num_cores < 2 or cfg.max_vms < 2 or cfg.vcores_per_vm < 2:
        return P.encode_run(1, domains=1)
    return (P.encode_mmu_map(0, 1, 1, perms=Perm.R) + P.encode_write(0, 1, Region.NRN_VTH, 0, [1])
            + P.encode_mmu_map(1, 0, 1) + P.encode_run(1, domains=1))


@cocotb.test()
async def streams_with_stalls_match_emulator(dut):
    rng = np.random.default_rng(SEED)
    loop = CycleLoop(dut.clk)
    cmd = StreamSource(dut, "cmd", random_pauses(rng, 0.3))
    board = InOrderScoreboard("chip output")
    out = StreamSink(dut, "out", random_pauses(rng, 0.5), on_item=board.got)
    loop.add(out, cmd)
    await loop.reset_and_start(dut.rst)
    golden = Chip(CFG)
    total = 0
    answered = Counter()   # error code -> malformed commands answered; model-side stream points (coverage)
    for case in range(CASES):
        pieces = [random_workload(rng, CFG, steps=4)]
        for _ in range(20):
            if CFG.num_cores >= 2:
                words, code = malformed(rng, KINDS[int(rng.integers(len(KINDS)))])
                pieces.append(words)
                if not isinstance(code, FaultCause):   # faults are counted from the answers, by origin
                    answered[f"chip.error.{code.name}"] += 1   # the emulator's answer is checked word for word
            else:
                pieces.append(random_stream(rng))
        pieces.append(random_stream(rng))
        pieces.append(fault_corners(CFG))
        pieces.append(P.resync_words())
        for words in pieces:
            expected = golden.feed(words)
            answered.update(chip_stream_hits(words, expected))
            board.expect(expected.tolist(), f"case {case}")
            cmd.extend(words)
            total += len(words)
        await loop.wait_for(lambda: cmd.idle and not board.expected and value_of(dut.idle), f"case {case}",
                            2_000_000)
        board.check()
    dut._log.info("%d command words, %d output words matched", total, board.matched)
    record_coverage({"chip.resync": CASES, "chip.cmd_backpressure": cmd.stalled,
                     "chip.out_backpressure": out.stalled, **answered})
    assert board.matched > 100 * CASES, f"only {board.matched} output words in {CASES} cases"
