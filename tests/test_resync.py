"""The client keeps command framing and recovers it by itself (issue #13, item 5; spec §8.1).

A word list that ends inside a command is refused before anything is sent.  If
framing is lost anyway -- the backend fails half-way through a send, or an
exchange times out -- the next call resynchronises (NOP run, SYNC, drain to its
acknowledgement) first and works at once.
"""

import numpy as np
import pytest

import neurovm
from neurovm.config import HV_VM
from neurovm.formats import Region
from neurovm.host import EmulatorBackend, FramingError
from neurovm.host import protocol as P


class FlakyBackend(EmulatorBackend):
    """The emulator behind a link that fails on command: ``cut`` sends only the first
    ``cut`` words of the next send and raises; ``mute`` swallows the next output."""

    def __init__(self, config=neurovm.DEFAULT_CONFIG):
        super().__init__(config)
        self.cut: int | None = None
        self.mute = False
        self.max_polls = 50

    def send(self, words) -> None:
        words = np.asarray(words, dtype=np.int64)
        if self.cut is not None:
            n, self.cut = self.cut, None
            super().send(words[:n])
            raise ConnectionError(f"link dropped after {n} words")
        super().send(words)
        if self.mute:
            self.mute = False
            self._pending.clear()


def chip_with(backend):
    chip = neurovm.open("emulator")
    chip.backend = backend
    return chip


def test_a_stream_ending_inside_a_command_is_refused_by_name():
    chip = neurovm.open("emulator")
    words = P.encode_inject(HV_VM, 0, 1) + P.encode_write(HV_VM, 0, Region.SYN, 0, [1, 2, 3, 4])
    with pytest.raises(FramingError, match=r"ends inside command 1 \(WRITE header 0x17\w+ at word 1\): it has 6 "
                                           r"words, 4 given, 2 missing; nothing was sent"):
        chip.exchange(words[:-2])
    with pytest.raises(FramingError, match=r"command 0 \(MMU_MAP header 0x57000000 at word 0\): it has 2 words, "
                                           r"1 given, 1 missing"):
        chip.exchange(P.encode_mmu_map(0, 0, 0)[:1])
    assert chip.backend.chip.stream_index == 0          # nothing reached the chip
    assert chip.exchange(words) == []                     # whole commands pass


def test_a_send_that_fails_half_way_is_recovered_before_the_next_call():
    backend = FlakyBackend()
    chip = chip_with(backend)
    chip.write(HV_VM, 0, Region.NRN_VTH, 0, [7, 8, 9])
    backend.cut = 2                        # the header and address of a WRITE, then the link drops
    with pytest.raises(ConnectionError, match="link dropped after 2 words"):
        chip.write(HV_VM, 1, Region.NRN_VTH, 0, [5] * 10)
    assert backend.chip.pending_words > 0  # the chip's parser is inside the WRITE
    # the very next call works, and sees exactly the chip's state
    assert chip.read(HV_VM, 0, Region.NRN_VTH, 0, 3).tolist() == [7, 8, 9]
    assert chip.resyncs == 1 and backend.chip.pending_words == 0
    assert chip.run(3).steps == [1, 2, 3]
    assert chip.read(HV_VM, 0, Region.NRN_VTH, 0, 3).tolist() == [7, 8, 9]   # no second resync needed
    assert chip.resyncs == 1


def test_a_timeout_is_recovered_and_stale_output_dropped():
    backend = FlakyBackend()
    chip = chip_with(backend)
    chip.write(HV_VM, 2, Region.NRN_VTH, 0, [11, 12])
    backend.mute = True                    # the answer (and its SYNC_ACK) is lost
    with pytest.raises(TimeoutError, match="no SYNC acknowledgement"):
        chip.read(HV_VM, 2, Region.NRN_VTH, 0, 2)
    assert chip.read(HV_VM, 2, Region.NRN_VTH, 0, 2).tolist() == [11, 12]
    assert chip.resyncs == 1


def test_words_sent_behind_the_clients_back_are_recovered_by_resync():
    """The issue's case: a truncated WRITE reached the chip; without resync every later
    call times out (its SYNC is eaten as WRITE data) until ~4,097 words have passed."""
    backend = FlakyBackend()
    chip = chip_with(backend)
    backend.send(P.encode_write(HV_VM, 0, Region.SYN, 0, [1] * 100)[:10])
    with pytest.raises(TimeoutError):
        chip.run(1)                        # this call fails ...
    assert chip.run(1).steps == [1]        # ... and the next one resynchronises and works at once
    backend.send(P.encode_write(HV_VM, 0, Region.SYN, 0, [1] * 100)[:10])
    chip.resync()                          # asked for explicitly: the next call works first time
    assert chip.run(2).steps == [2, 3] and chip.resyncs == 2


def test_resync_on_a_clean_chip_changes_nothing():
    chip = neurovm.open("emulator")
    chip.write(HV_VM, 1, Region.STATE_U, 0, [-3, 4])
    before = {r: chip.read(HV_VM, 1, r, 0, 8).tolist() for r in Region if r != Region.CORE_CFG}
    assert chip.resync() == 0
    assert {r: chip.read(HV_VM, 1, r, 0, 8).tolist() for r in Region if r != Region.CORE_CFG} == before
