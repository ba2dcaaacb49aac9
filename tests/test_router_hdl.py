"""MeshNoC / RouterNode (hdl/router.py) on Verilator under cocotb, against the XY routing model.

Regular suite: 100,000+ packets over 2x2, 4x4, 1x1, 1x4 and 4x1 meshes with
random source gaps and sink stalls, plus directed corners; ``slow`` adds
1,000,000+.  The testbench is tests/cocotb/mesh_tb.py.
"""

import pytest

from neurovm.config import ChipConfig
from neurovm.hdl.router import MeshNoC
from tests.hdl_runner import config_env, run_cocotb

pytestmark = pytest.mark.hdl   # the HDL tier: cocotb testbenches, Verilator lint, Amaranth simulations

MESHES = {"2x2": (2, 2), "4x4": (4, 4), "1x1": (1, 1), "1x4": (1, 4), "4x1": (4, 1)}
# packets per traffic pattern (4 patterns per mesh): 4 * (12k + 12k + 1.5k + 1.5k + 1.5k) = 114k
REGULAR = {"2x2": 12_000, "4x4": 12_000, "1x1": 1_500, "1x4": 1_500, "4x1": 1_500}


def _run(mesh: str, packets: int, test_filter: str, run_name: str):
    w, h = MESHES[mesh]
    cfg = ChipConfig(mesh_width=w, mesh_height=h)
    return run_cocotb(MeshNoC(cfg), "mesh_noc", f"mesh_{mesh}", "mesh_tb",
                      config_env(cfg) | {"NEUROVM_PACKETS": str(packets)}, test_filter=test_filter,
                      run_name=run_name)


@pytest.mark.parametrize("mesh", list(MESHES))
def test_mesh_lossless_in_order(mesh):
    results = _run(mesh, REGULAR[mesh], "traffic|full_fifos_everywhere|long_stall_then_drain|counters_clear",
                   "regular")
    assert len(results) == 7


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["2x2", "4x4"])
def test_mesh_million_packets(mesh):
    results = _run(mesh, 125_000, "traffic", "slow")   # 2 meshes x 4 patterns x 125k = 1M
    assert len(results) == 4
