"""LifCore (hdl/core.py) on Verilator under cocotb, against the golden emulator.

The regular suite runs 200+ seeded random cores and the directed corners; the
``slow`` marker adds a larger sweep.  The testbench is tests/cocotb/core_tb.py.
"""

import pytest

from neurovm.config import ChipConfig
from neurovm.hdl.core import LifCore
from tests.hdl_runner import config_env, run_cocotb

pytestmark = pytest.mark.hdl   # the HDL tier: cocotb testbenches, Verilator lint, Amaranth simulations

SMALL = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=16, synapses_per_core=256,
                   axons_per_core=32, fanout_per_core=64)
NARROW = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=23, synapses_per_core=100,
                    axons_per_core=9, fanout_per_core=40, weight_bits=3, vcores_per_vm=3)
DEFAULT_1x1 = ChipConfig(mesh_width=1, mesh_height=1)
TINY = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=1, synapses_per_core=1, axons_per_core=1,
                  fanout_per_core=1, weight_bits=2, vcores_per_vm=1)


def _run(config, name, seeds, test_filter=None, run_name="run", max_events=None):
    env = config_env(config) | {"NEUROVM_SEEDS": f"{seeds[0]}:{seeds[1]}"}
    if max_events is not None:
        env["NEUROVM_MAX_EVENTS"] = str(max_events)
    return run_cocotb(LifCore(config), "lif_core", f"core_{name}", "core_tb", env,
                      test_filter=test_filter, run_name=run_name)


@pytest.mark.parametrize("config,name,seeds,max_events", [
    (SMALL, "small", (0, 170), None),
    (NARROW, "narrow", (1000, 1040), None),
    (DEFAULT_1x1, "default", (2000, 2008), 40),   # the real core size; bursts capped to keep it quick
    (TINY, "tiny", (3000, 3020), None),           # every memory a single entry
], ids=["small-170", "narrow-40", "default-8", "tiny-20"])
def test_random_cores_match_golden_model(config, name, seeds, max_events):
    # 40+ cases also run random_core_coverage: every mechanism must have been hit
    flt = "random_core" if seeds[1] - seeds[0] >= 40 else "random_core/"
    results = _run(config, name, seeds, test_filter=flt, run_name="random", max_events=max_events)
    assert sum(r["name"].startswith("random_core/") for r in results) == seeds[1] - seeds[0]


@pytest.mark.slow
def test_random_cores_sweep():
    results = _run(SMALL, "small", (10_000, 12_000), test_filter="random_core", run_name="sweep")
    assert len(results) == 2000


DIRECTED = "empty_steps|all_neurons_fire|back_to_back_ops_on_one_neuron|every_weight_exponent|max_fanout|" \
           "refractory_period|config_readback_and_clear|stalls_do_not_change_results|threshold_equality"


@pytest.mark.parametrize("config,name", [(SMALL, "small"), (NARROW, "narrow"), (DEFAULT_1x1, "default")],
                         ids=["small", "narrow", "default"])
def test_directed_corners(config, name):
    results = _run(config, name, (0, 0), test_filter=DIRECTED, run_name="directed")
    assert len(results) == 9
