"""LifCore (hdl/core.py) on Verilator under cocotb, against the golden emulator.

The regular suite runs 200+ seeded random cores and the directed corners; the
``slow`` marker adds a larger sweep.  The testbench is tests/cocotb/core_tb.py.
"""

import pytest

from neurovm.config import ChipConfig
from neurovm.hdl.core import LifCore
from tests.hdl_runner import config_env, run_cocotb

SMALL = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=16, synapses_per_core=256,
                   axons_per_core=32, fanout_per_core=64)
NARROW = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=23, synapses_per_core=100,
                    axons_per_core=9, fanout_per_core=40, weight_bits=3, vcores_per_vm=3)
DEFAULT_1x1 = ChipConfig(mesh_width=1, mesh_height=1)


def _run(config, name, seeds, test_filter=None, run_name="run"):
    env = config_env(config) | {"NEUROVM_SEEDS": f"{seeds[0]}:{seeds[1]}"}
    return run_cocotb(LifCore(config), "lif_core", f"core_{name}", "core_tb", env,
                      test_filter=test_filter, run_name=run_name)


@pytest.mark.parametrize("config,name,seeds", [
    (SMALL, "small", (0, 170)),
    (NARROW, "narrow", (1000, 1040)),
], ids=["small-170", "narrow-40"])
def test_random_cores_match_golden_model(config, name, seeds):
    results = _run(config, name, seeds, test_filter="random_core", run_name="random")
    assert sum(r["name"].startswith("random_core") for r in results) == seeds[1] - seeds[0]


@pytest.mark.slow
def test_random_cores_sweep():
    results = _run(SMALL, "small", (10_000, 12_000), test_filter="random_core", run_name="sweep")
    assert len(results) == 2000
