"""`verilator --lint-only -Wall` on the generated Verilog is clean, with only the
waivers of hdl/lint.vlt, each of which docs/architecture.md justifies."""

import re
import subprocess
from pathlib import Path

import pytest

from neurovm.config import ChipConfig
from neurovm.hdl.core import LifCore
from neurovm.hdl.router import MeshNoC
from neurovm.hdl.chip import ChipPins
from neurovm.hdl.mmu import VirtMMU
from neurovm.hdl.toolchain import export_verilog, verilator_env
from neurovm.hdl.uart import UartChip
from neurovm.fpga import BOARDS

pytestmark = pytest.mark.hdl   # the HDL tier: cocotb testbenches, Verilator lint, Amaranth simulations

ROOT = Path(__file__).resolve().parents[1]
WAIVERS = ROOT / "hdl" / "lint.vlt"

BLOCKS = {
    "lif_core-default": (LifCore, ChipConfig()),
    "lif_core-tiny": (LifCore, ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=1, synapses_per_core=1,
                                          axons_per_core=1, fanout_per_core=1, weight_bits=2)),
    "mesh_noc-4x4": (MeshNoC, ChipConfig(mesh_width=4, mesh_height=4)),
    "mesh_noc-1x1": (MeshNoC, ChipConfig(mesh_width=1, mesh_height=1)),
    "mesh_noc-1x3": (MeshNoC, ChipConfig(mesh_width=1, mesh_height=3)),
    "virt_mmu-default": (VirtMMU, ChipConfig()),
    "chip_pins-default": (ChipPins, ChipConfig()),
    "chip_pins-1x1": (ChipPins, ChipConfig(mesh_width=1, mesh_height=1, max_vms=1, vcores_per_vm=1)),
    "chip_pins-sim": (lambda cfg: ChipPins(cfg, reset_less=True), ChipConfig()),   # what sim/ verilates
    # what the FPGA builds carry (neurovm.fpga.BOARDS), clock/baud as on the iCEBreaker
    "uart_chip-icebreaker": (lambda cfg: UartChip(cfg, divisor=104, fifo_depth=256), BOARDS["icebreaker"].config),
}


def waived_rules() -> set[str]:
    return set(re.findall(r"^lint_off -rule (\w+)", WAIVERS.read_text(), re.M))


@pytest.mark.parametrize("name", list(BLOCKS))
def test_verilator_lint_clean(name, tmp_path):
    cls, cfg = BLOCKS[name]
    top = name.split("-")[0]
    vfile, _ = export_verilog(cls(cfg), top, tmp_path / f"{top}.v")
    env = verilator_env()
    res = subprocess.run(["verilator", "--lint-only", "-Wall", str(WAIVERS), str(vfile)],
                         capture_output=True, text=True, env=env)
    warnings = [l for l in res.stderr.splitlines() if l.startswith("%")]
    assert res.returncode == 0 and not warnings, "\n".join(warnings[:30])


def test_every_waiver_is_justified_in_the_spec():
    spec = (ROOT / "docs" / "architecture.md").read_text()
    missing = [r for r in waived_rules() if f"`{r}`" not in spec]
    assert not missing, f"waived lint rules without a reason in docs/architecture.md: {missing}"
