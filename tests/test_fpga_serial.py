"""The serial (FPGA) backend against a simulated bridge on a pseudo-terminal pair.

The far end of the pty is a thread that behaves like the UART bridge in front of
the chip: it assembles little-endian words, keeps a FIFO of ``DEPTH`` words
(and records an overflow if the host ever has more in flight), feeds them to the
golden emulator and writes the output words back.  Workloads, the runtime and
model prediction then run through ``neurovm.open("fpga:/dev/pts/N")`` exactly
as on the other backends.
"""

import os
import threading
import tty

import numpy as np
import pytest

import neurovm
from neurovm.config import DEFAULT_CONFIG
from neurovm.emulator import Chip
from neurovm.formats import OUTPUT_FORMATS, OutType
from neurovm.host import EmulatorBackend, protocol as P
from neurovm.host.serial_backend import BridgeError, windows

DEPTH = 64


class FakeBridge(threading.Thread):
    """The board: a pty master, a bounded command FIFO, the emulator behind it."""

    def __init__(self, config=DEFAULT_CONFIG):
        super().__init__(daemon=True)
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self.chip = Chip(config)
        self.overflows: list[int] = []   # sizes of windows that would not have fit the FIFO
        self.words_seen = 0
        self.stop = False

    def run(self):
        buf = bytearray()
        window: list[np.ndarray] = []
        while not self.stop:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            buf += data
            n = len(buf) // 4 * 4
            if not n:
                continue
            words = np.frombuffer(bytes(buf[:n]), dtype="<u4").astype(np.int64)
            del buf[:n]
            self.words_seen += words.size
            window.append(words)
            out = self.chip.feed(words)
            if out.size and (int(out[-1]) >> 28) == int(OutType.SYNC_ACK):
                # one window is over: it must fit the FIFO, unless it is a single command (+ its SYNC)
                w = np.concatenate(window)
                window = []
                if w.size > DEPTH + 1 and P.command_starts(w).size > 2:
                    self.overflows.append(int(w.size))
            os.write(self.master, np.asarray(out, dtype=np.int64).astype("<u4").tobytes())

    def close(self):
        self.stop = True
        os.close(self._slave)
        os.close(self.master)


@pytest.fixture
def bridge():
    b = FakeBridge()
    b.start()
    yield b
    b.close()


def test_random_workload_matches_the_emulator_word_for_word(bridge):
    from tests.randnet import random_workload

    rng = np.random.default_rng(4)
    words = random_workload(rng, DEFAULT_CONFIG)
    chip = neurovm.open(f"fpga:{bridge.path}", window=DEPTH)
    got = chip.backend.exchange(words)
    emu = EmulatorBackend(DEFAULT_CONFIG)   # the same windows (error messages quote stream indices, SYNCs count)
    ref = np.concatenate([emu.exchange(w) for w in windows(np.asarray(words, dtype=np.int64), DEPTH)])
    assert got.size > 100 and np.array_equal(got, ref)
    assert bridge.overflows == [], f"windows of {bridge.overflows} words; the FIFO holds {DEPTH}"
    assert bridge.words_seen > 2 * DEPTH    # several windows were needed


def test_runtime_and_long_writes_over_the_serial_line(bridge):
    from tests.test_runtime import trains, two_layer

    chip = neurovm.open(f"fpga:{bridge.path}", window=DEPTH)
    vm = chip.create_vm("a", cores=2).load(two_layer(1))      # images are WRITE bursts longer than the window
    out = vm.run(30, {"in": trains(3, 30, 12)})
    ref_chip = neurovm.open("emulator")
    ref = ref_chip.create_vm("a", cores=2).load(two_layer(1)).run(30, {"in": trains(3, 30, 12)})
    assert len(out) > 50 and out == ref
    assert bridge.overflows == []


def test_missing_port_and_silent_board_are_named(tmp_path):
    with pytest.raises(BridgeError, match="/dev/ttyNOPE: cannot open the serial port"):
        neurovm.open("fpga:/dev/ttyNOPE")
    silent = FakeBridge()          # never started: nobody answers
    try:
        chip = neurovm.open(f"fpga:{silent.path}", timeout=0.3)
        with pytest.raises(BridgeError, match=r"no answer from the chip for 0.3 s"):
            chip.run(1)
    finally:
        silent.close()
    with pytest.raises(ValueError, match=r"unknown backend 'fpgaa:x'; available: emulator, verilator, fpga:PORT"):
        neurovm.open("fpgaa:x")


def test_sync_ack_word_is_what_the_bridge_thread_expects():
    assert (OUTPUT_FORMATS[OutType.SYNC_ACK].pack(type=OutType.SYNC_ACK, tag=5) >> 28) == int(OutType.SYNC_ACK)
