"""Co-simulation: the Verilator model of the whole chip against the golden emulator.

The same command words go to both backends; the output streams must be
identical word for word.  Counters are read as 0..6 (BUSY_CYCLES, counter 7,
is implementation-defined, §9.1).
"""

import numpy as np
import pytest

from neurovm.config import ChipConfig
from neurovm.host.backend import EmulatorBackend
from neurovm.host.verilator import VerilatorBackend
from tests.randnet import random_workload

pytestmark = pytest.mark.cosim   # the co-simulation tier: the Verilator model of the chip against the emulator

CONFIGS = {
    "default-2x2": ChipConfig(),
    "3x2-small": ChipConfig(mesh_width=3, mesh_height=2, neurons_per_core=12, synapses_per_core=120,
                            axons_per_core=20, fanout_per_core=40, weight_bits=5, max_vms=3, vcores_per_vm=4),
    "1x3-narrow": ChipConfig(mesh_width=1, mesh_height=3, neurons_per_core=5, synapses_per_core=30,
                             axons_per_core=6, fanout_per_core=10, weight_bits=2, max_vms=1, vcores_per_vm=2),
}
CASES = {"default-2x2": 35, "3x2-small": 45, "1x3-narrow": 25}   # 105 in the regular suite


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:   # both live across cases: stream indices keep counting on both
            cache[name] = (VerilatorBackend(CONFIGS[name]), EmulatorBackend(CONFIGS[name]))
        return cache[name]

    yield get
    for vb, _ in cache.values():
        vb.close()


def _compare(name, seed, pair, steps):
    vb, eb = pair
    cfg = CONFIGS[name]
    rng = np.random.default_rng(seed)
    words = random_workload(rng, cfg, steps=steps)
    want = eb.exchange(words)
    got = vb.exchange(words)
    if not np.array_equal(got, want):
        n = min(len(got), len(want))
        i = next((j for j in range(n) if got[j] != want[j]), n)
        raise AssertionError(f"{name} seed {seed}: outputs differ at word {i} of {len(want)} "
                             f"(verilator {len(got)} words): got {[hex(x) for x in got[i:i + 4]]}, "
                             f"golden {[hex(x) for x in want[i:i + 4]]}")
    return want


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_chips_identical_to_emulator(name, models):
    vb = models(name)
    spikes = 0
    for seed in range(CASES[name]):
        out = _compare(name, 10_000 * (list(CONFIGS).index(name) + 1) + seed, vb, steps=8)
        spikes += int(np.sum((out >> 28) == 2))
    assert spikes > 0, "the random workloads never spiked"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_chips_identical_to_emulator_long(name, models):
    vb = models(name)
    for seed in range(400):
        _compare(name, 900_000 + seed, vb, steps=25)
