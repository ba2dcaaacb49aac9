"""The batch harness of the Verilator model (sim/harness.cpp): a long stream pushed in chunks and clocked
in partial runs gives the emulator's words, in order, with nothing lost or repeated (its input queue drops
consumed words as it goes, spec §15)."""

from __future__ import annotations

import numpy as np
import pytest

from neurovm.config import ChipConfig
from neurovm.emulator import Chip
from neurovm.host.verilator import VerilatedChip
from tests.randnet import random_workload

pytestmark = pytest.mark.cosim

SMALL = ChipConfig(mesh_width=2, mesh_height=1, neurons_per_core=12, synapses_per_core=120, axons_per_core=20,
                   fanout_per_core=40, max_vms=2, vcores_per_vm=2)


def test_chunked_pushes_and_partial_runs_keep_every_word():
    rng = np.random.default_rng(5)
    words = np.concatenate([random_workload(rng, SMALL, steps=6) for _ in range(48)]).astype(np.uint32)
    assert words.size > 3 * 4096          # past the queue's compaction threshold several times
    expected = Chip(SMALL).feed(words)
    model = VerilatedChip(SMALL)
    try:
        got, at = [], 0
        while at < words.size:
            n = int(rng.integers(1, 6000))
            model.push(words[at:at + n])
            at += n
            model.run(max_cycles=int(rng.integers(1, 6000)), until_idle=False)   # leave words queued: the queue compacts
            assert model.pending >= 0
            got.append(model.pull())
        model.run()
        got.append(model.pull())
        assert model.pending == 0
    finally:
        model.close()
    np.testing.assert_array_equal(np.concatenate(got), expected)
