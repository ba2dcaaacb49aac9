"""Block-level cocotb tests of the MMU and of the host interface (through the chip top, with
stalls on both streams), on Verilator.  Testbenches: tests/cocotb/mmu_tb.py, chip_tb.py."""

import pytest

from neurovm.config import ChipConfig
from neurovm.hdl.chip import NeuroChip
from neurovm.hdl.mmu import VirtMMU
from tests.hdl_runner import config_env, run_cocotb

pytestmark = pytest.mark.hdl   # the HDL tier: cocotb testbenches, Verilator lint, Amaranth simulations

MMU_CFG = ChipConfig(mesh_width=3, mesh_height=2, max_vms=3, vcores_per_vm=5)
# the malformed-command generators of tests/test_malformed_commands.py assume this configuration
CHIP_CFG = ChipConfig(mesh_width=2, mesh_height=1, neurons_per_core=8, synapses_per_core=32,
                      axons_per_core=8, fanout_per_core=16, max_vms=2, vcores_per_vm=2)


def test_mmu_against_emulator_tables():
    results = run_cocotb(VirtMMU(MMU_CFG), "virt_mmu", "mmu_3x2", "mmu_tb",
                         config_env(MMU_CFG) | {"NEUROVM_OPS": "4000"}, run_name="mmu")
    assert len(results) == 1


def test_host_interface_with_stalled_streams():
    results = run_cocotb(NeuroChip(CHIP_CFG), "neuro_chip", "chip_2x1", "chip_tb",
                         config_env(CHIP_CFG) | {"NEUROVM_CASES": "6"}, run_name="chip")
    assert len(results) == 1
