"""The FPGA build's logic without a board: the chip behind the UART bridge, simulated with
Verilator under cocotb, bytes in and bytes out compared with the emulator word for word
(testbench: tests/cocotb/uart_chip_tb.py).  The board tops themselves are elaborated too."""

import pytest

from neurovm.fpga import BOARDS, FpgaTop
from neurovm.hdl.uart import UartChip
from tests.hdl_runner import config_env, run_cocotb
from tests.test_chip_blocks import CHIP_CFG


def test_uart_chip_serial_stream_matches_emulator():
    results = run_cocotb(UartChip(CHIP_CFG, divisor=4, fifo_depth=64), "uart_chip", "uart_chip_2x1", "uart_chip_tb",
                         config_env(CHIP_CFG) | {"NEUROVM_DIVISOR": "4", "NEUROVM_WINDOW": "48"}, run_name="uart_chip")
    assert len(results) == 1


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_tops_prepare_for_the_toolchain(board):
    """Every board's top elaborates against its real amaranth-boards platform and yields the
    build plan (netlist, pin constraints, toolchain script) that `neurovm fpga build` runs."""
    spec = BOARDS[board]
    plan = spec.make_platform().prepare(FpgaTop(spec), name="neurovm")
    files = set(plan.files)
    assert {"neurovm.il", "build_neurovm.sh"} <= files
    constraints = next(plan.files[f] for f in files if f.endswith((".pcf", ".lpf")))
    assert "uart_0__rx" in constraints and "uart_0__tx" in constraints
    netlist = plan.files["neurovm.il"]
    assert "uart_chip" in netlist and "bridge" in netlist


@pytest.mark.fpga
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_bitstream_builds_fits_and_meets_the_board_clock(board, tmp_path):
    """The real toolchain run (minutes; `make test-fpga`): a bitstream, within the device, timing met."""
    from pathlib import Path

    from neurovm.fpga import build

    report = build(board, tmp_path / board)
    assert Path(report.bitstream).stat().st_size > 10_000
    for bel, u in report.utilization.items():
        assert u["used"] <= u["available"], bel
    assert report.fmax_mhz is not None and report.fmax_mhz >= report.clock_mhz
