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
from neurovm.config import HV_VM, ChipConfig
from neurovm.emulator import Chip
from neurovm.formats import COMMAND_FORMATS, MMU_ENTRY, Opcode, Perm, Region, command_length
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


def error_corners(cfg: ChipConfig) -> list[int]:
    """One malformed command for every opcode x error code of spec §8.3 (coverage.ERROR_CROSS), in the order
    of the cross; the emulator's answers are the reference, word for word."""
    def hdr(op, **f):
        return COMMAND_FORMATS[op].pack(op=op, **f)

    def framed(word):   # the header with the payload words its own length asks for
        return [word] + [0] * (command_length(word) - 1)

    bad_vm = cfg.max_vms if cfg.max_vms < HV_VM else None
    words: list[int] = []
    for op in Opcode:   # RESERVED_BITS: the lowest reserved bit of each header
        fmt = COMMAND_FORMATS[op]
        low = (fmt.reserved_mask & -fmt.reserved_mask)
        words += framed((hdr(op, vm=HV_VM) if "vm" in fmt.fields else hdr(op)) | low)
    if bad_vm is not None:
        words += [w for op in Opcode if "vm" in COMMAND_FORMATS[op].fields
                  for w in framed(hdr(op, vm=bad_vm, **({"count": 1} if op in (Opcode.WRITE, Opcode.READ) else {})))]
    words += framed(hdr(Opcode.WRITE, vm=HV_VM, vcore=0, region=1, count=0))
    words += framed(hdr(Opcode.READ, vm=HV_VM, vcore=0, region=1, count=0))
    words += hdr(Opcode.RUN, vm=HV_VM, steps=1, domains=0), hdr(Opcode.READ_COUNTERS, vm=HV_VM, vcore=0, first=7, count=2)
    words += [hdr(Opcode.WRITE, vm=HV_VM, vcore=0, region=12, count=1), 0, 0]            # BAD_REGION
    words += [hdr(Opcode.READ, vm=HV_VM, vcore=0, region=13, count=1), 0]
    size = cfg.synapses_per_core
    words += [hdr(Opcode.WRITE, vm=HV_VM, vcore=0, region=int(Region.SYN), count=1), size, 0]   # BAD_ADDRESS
    words += [hdr(Opcode.READ, vm=HV_VM, vcore=0, region=int(Region.SYN), count=2), size - 1]
    words += [hdr(Opcode.INJECT, vm=HV_VM, vcore=0, axon=cfg.axons_per_core)]
    words += [hdr(Opcode.MMU_MAP, vm=HV_VM), MMU_ENTRY.pack(tvm=0, vcore=0, valid=1, perms=7, pcore=cfg.num_cores)]
    words += [hdr(Opcode.READ_COUNTERS, vm=HV_VM, vcore=cfg.num_cores, first=0, count=1)]
    words += [hdr(Opcode.RESET, vm=HV_VM, scope=1, pcore=cfg.num_cores)]
    words += [hdr(Opcode.WRITE, vm=HV_VM, vcore=0, region=int(Region.SYN), count=1), 0,
              cfg.neurons_per_core]                                                          # BAD_FIELD: target
    return words


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
    answered = Counter()   # model-side stream points (coverage): errors and faults counted from the answers
    for case in range(CASES):
        pieces = [random_workload(rng, CFG, steps=4)]
        for _ in range(20):
            if CFG.num_cores >= 2:
                pieces.append(malformed(rng, KINDS[int(rng.integers(len(KINDS)))])[0])
            else:
                pieces.append(random_stream(rng))
        pieces.append(random_stream(rng))
        pieces.append(fault_corners(CFG))
        if case == 0:
            pieces.append(error_corners(CFG))
        pieces.append(P.resync_words())
        for words in pieces:
            first = golden.stream_index
            expected = golden.feed(words)
            answered.update(chip_stream_hits(words, expected, first))
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
