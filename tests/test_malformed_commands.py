"""Malformed command streams: every malformed command gets its error word, nothing raises or
hangs, the error names the offending word by stream index, and the chip keeps working."""

import numpy as np
import pytest

from neurovm.config import HV_VM, ChipConfig
from neurovm.emulator import Chip
from neurovm.formats import COMMAND_FORMATS, GUEST_COUNTERS, MMU_ENTRY, ErrorCode, FaultCause, Opcode, Region
from neurovm.host import protocol as P
from tests.randnet import random_image

CFG = ChipConfig(mesh_width=2, mesh_height=1, neurons_per_core=8, synapses_per_core=32,
                 axons_per_core=8, fanout_per_core=16, max_vms=2, vcores_per_vm=2)


def workload() -> list[int]:
    """A small valid workload: two VMs, random images, injections, 6 steps, state and counter reads."""
    rng = np.random.default_rng(99)
    w = P.encode_reset() + P.encode_mmu_map(0, 0, 0) + P.encode_mmu_map(1, 1, 1)
    for vm, vc in ((0, 0), (1, 1)):
        for region, data in random_image(rng, CFG).region_words(CFG).items():
            w += P.encode_write(vm, vc, region, 0, data)
        w += P.encode_inject(vm, vc, 0) + P.encode_inject(vm, vc, 1)
    w += P.encode_run(6)
    for vm, vc in ((0, 0), (1, 1)):
        w += P.encode_read(vm, vc, Region.STATE_V, 0, 8) + P.encode_read_counters(vm, vc, 0, GUEST_COUNTERS)
    return w


REFERENCE_OUTPUT = Chip(CFG).feed(workload())


def check_messages_name_their_words(fed: list[int], out) -> list:
    """Decode ``out``; every error/host fault must quote the word found at its stream index."""
    msgs = P.decode_output(out)
    for m in msgs:
        if isinstance(m, P.ErrorMsg) or (isinstance(m, P.Fault) and m.origin == P.FaultOrigin.HOST):
            assert fed[m.index] == m.word, m
    return msgs


def malformed(rng, kind: str) -> tuple[list[int], object]:
    """A malformed command of the given kind, and the code/cause it must produce."""
    def hdr(op, **f):
        return COMMAND_FORMATS[op].pack(op=op, **f)
    vm = int(rng.integers(0, 2))
    if kind == "unknown_opcode":
        return [int(rng.integers(9, 16)) << 28 | int(rng.integers(0, 1 << 28))], ErrorCode.UNKNOWN_OPCODE
    if kind == "reserved":
        op = Opcode(int(rng.choice([1, 2, 3, 4, 6, 7, 8, 0])))
        fmt = COMMAND_FORMATS[op]
        bits = [b for b in range(32) if fmt.reserved_mask >> b & 1]
        word = hdr(op, vm=HV_VM) if "vm" in fmt.fields else hdr(op)
        word |= 1 << int(rng.choice(bits))
        extra = [0] * ((word & 0xFFF) + 1) if op == Opcode.WRITE else [0] if op == Opcode.READ else []
        return [word] + extra, ErrorCode.RESERVED_BITS
    if kind == "bad_vm":
        return [hdr(Opcode.READ, vm=int(rng.integers(2, 7)), vcore=0, region=0, count=1), 0], ErrorCode.BAD_VM
    if kind == "bad_length":
        choice = int(rng.integers(0, 4))
        if choice == 0:
            return [hdr(Opcode.WRITE, vm=vm, vcore=0, region=1, count=0), 0], ErrorCode.BAD_LENGTH
        if choice == 1:
            return [hdr(Opcode.RUN, vm=HV_VM, steps=0)], ErrorCode.BAD_LENGTH
        if choice == 2:
            return [hdr(Opcode.READ, vm=vm, vcore=0, region=1, count=0), 0], ErrorCode.BAD_LENGTH
        first = int(rng.integers(0, 16))
        return [hdr(Opcode.READ_COUNTERS, vm=vm, vcore=0, first=first, count=int(rng.integers(9 - min(first, 8), 16)))], \
            ErrorCode.BAD_LENGTH
    if kind == "bad_region":
        return [hdr(Opcode.READ, vm=vm, vcore=0, region=int(rng.integers(12, 16)), count=1), 0], ErrorCode.BAD_REGION
    if kind == "bad_address":
        choice = int(rng.integers(0, 4))
        if choice == 0:  # past the end of the synapse memory
            n = int(rng.integers(1, 5))
            return ([hdr(Opcode.WRITE, vm=vm, vcore=0, region=1, count=n), int(rng.integers(33 - n, 1 << 32))]
                    + [0] * n), ErrorCode.BAD_ADDRESS
        if choice == 1:
            return [hdr(Opcode.INJECT, vm=vm, vcore=0, axon=int(rng.integers(8, 1 << 16)))], ErrorCode.BAD_ADDRESS
        if choice == 2:  # hypervisor naming a physical core that does not exist
            return [hdr(Opcode.READ, vm=HV_VM, vcore=int(rng.integers(2, 256)), region=0, count=1), 0], \
                ErrorCode.BAD_ADDRESS
        return [hdr(Opcode.MMU_MAP, vm=HV_VM), MMU_ENTRY.pack(tvm=0, vcore=0, valid=1, perms=7,
                                                              pcore=int(rng.integers(2, 256)))], ErrorCode.BAD_ADDRESS
    if kind == "bad_field":
        return [hdr(Opcode.WRITE, vm=vm, vcore=0, region=int(Region.SYN), count=1), 3,
                int(rng.integers(8, 1 << 16))], ErrorCode.BAD_FIELD  # target >= neurons_per_core
    if kind == "privilege":
        return [hdr(Opcode.RUN, vm=vm, steps=1)], FaultCause.PRIVILEGE
    raise AssertionError(kind)


KINDS = ["unknown_opcode", "reserved", "bad_vm", "bad_length", "bad_region", "bad_address", "bad_field", "privilege"]


def test_each_malformed_command_gets_exactly_its_error_and_the_chip_keeps_working(new_feed_chip):
    rng = np.random.default_rng(1)
    chip = new_feed_chip()
    fed = P.encode_mmu_map(0, 0, 0) + P.encode_mmu_map(1, 0, 1)
    chip.feed(fed)
    for i in range(2000):
        kind = KINDS[i % len(KINDS)]
        words, expected = malformed(rng, kind)
        out = chip.feed(words)
        fed += words
        msgs = check_messages_name_their_words(fed, out)
        assert len(msgs) == 1, (kind, [hex(w) for w in words], msgs)
        got = msgs[0].code if isinstance(msgs[0], P.ErrorMsg) else msgs[0].cause
        assert got == expected, (kind, [hex(w) for w in words], msgs)
    assert chip.pending_words == 0
    np.testing.assert_array_equal(chip.feed(workload()), REFERENCE_OUTPUT)


def test_bad_field_write_keeps_the_good_words_and_names_the_bad_one(new_feed_chip):
    chip = new_feed_chip()
    words = P.encode_write(HV_VM, 0, Region.SYN, 4, [1, 1 << 16 | 2, 99, 3])  # word 2: target 99 > 7
    msgs = P.decode_output(chip.feed(words))
    assert [(m.code, m.detail, m.word, m.index) for m in msgs] == [(ErrorCode.BAD_FIELD, 6, 99, 4)]
    data = P.decode_output(chip.feed(P.encode_read(HV_VM, 0, Region.SYN, 4, 4)))[0].data
    assert data.tolist() == [1, 1 << 16 | 2, 0, 3]


def random_stream(rng) -> list[int]:
    """Random words, half of them shaped like commands with random fields."""
    out = []
    for _ in range(int(rng.integers(1, 48))):
        r = rng.random()
        if r < 0.4:
            out.append(int(rng.integers(0, 1 << 32)))
        elif r < 0.9:
            op = int(rng.integers(0, 9))
            w = op << 28 | int(rng.integers(0, 8)) << 24 | int(rng.integers(0, 1 << 24))
            if op == Opcode.RUN:
                w = (w & ~0xFFF) | int(rng.integers(0, 20))  # keep random runs short
            if op == Opcode.WRITE:
                w = (w & ~0xFFF) | int(rng.integers(0, 6))
            out.append(w)
        else:
            out.append(0)
    return out


def test_random_word_streams_never_break_the_chip(new_feed_chip):
    rng = np.random.default_rng(12345)
    chip = new_feed_chip()
    fed: list[int] = []  # every word ever fed, so stream indices can be checked
    n_errors = 0
    for i in range(3000):
        stream = random_stream(rng)
        fed += stream
        msgs = check_messages_name_their_words(fed, chip.feed(stream))
        n_errors += sum(isinstance(m, (P.ErrorMsg, P.Fault)) for m in msgs)
        if i % 100 == 99:  # resynchronise, then the valid workload must give the golden output
            fed += P.resync_words()
            chip.feed(P.resync_words())
            assert chip.pending_words == 0
            fed += workload()
            np.testing.assert_array_equal(chip.feed(workload()), REFERENCE_OUTPUT)
    assert n_errors > 1000  # the streams really were malformed


@pytest.mark.slow
def test_random_word_streams_long():
    rng = np.random.default_rng(777)
    chip = Chip(CFG)
    for i in range(100_000):
        chip.feed(random_stream(rng))
        if i % 1000 == 999:
            chip.feed(P.resync_words())
            np.testing.assert_array_equal(chip.feed(workload()), REFERENCE_OUTPUT)
