"""The FPGA build's logic without a board: the chip behind the UART bridge, simulated with
Verilator under cocotb, bytes in and bytes out compared with the emulator word for word
(testbench: tests/cocotb/uart_chip_tb.py).  The board tops themselves are elaborated too."""

import pytest

from neurovm.fpga import BOARDS, FpgaTop
from neurovm.hdl.uart import UartChip
from tests.hdl_runner import config_env, run_cocotb
from tests.test_chip_blocks import CHIP_CFG

pytestmark = pytest.mark.hdl   # the HDL tier: cocotb testbenches, Verilator lint, Amaranth simulations


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


def test_build_progress_reports_stages_from_the_tool_logs(tmp_path):
    """The progress lines of a long build come from the logs as the tools write them: each
    stage once, the router's arcs left rate-limited, a line cut mid-write read only when whole."""
    from neurovm.fpga import BuildProgress

    prog = BuildProgress(tmp_path, every=10.0)
    assert prog.poll(0.0) == []
    (tmp_path / "neurovm.rpt").write_text("yosys\n")
    assert prog.poll(1.0) == ["yosys: synthesis"]
    tim = tmp_path / "neurovm.tim"
    tim.write_text("Info: Logic utilisation before packing:\n"
                   "Info: Running main analytical placer, max placement attempts per cell = 10.\n"
                   "Info: Running simulated annealing placer for refinement.\n"
                   "Info: Max frequency for clock '$glbnet$cd_sync.clk': 25.60 MHz (PASS at 25.00 MHz)\n"
                   "Info: Routing..\nInfo: Routing 1300 arcs.\n"
                   "Info:       1000 |      326        673 |  326   673 |    1035|       4.76       4.76|\n"
                   "Info:       2000 |      810       1189 |  484   516 |     865|       2.20       6.96|\n"
                   "Info: Running main analytical placer, max pla")
    assert prog.poll(2.0) == ["nextpnr: packing cells", "nextpnr: placing (analytical)",
                              "nextpnr: refining the placement", "Fmax 25.60 MHz for $glbnet$cd_sync.clk (PASS)",
                              "nextpnr: routing", "routing: 1035 arcs left of 1300 after 1000 iterations"]
    with open(tim, "a") as fh:
        fh.write("cement attempts per cell = 10.\nInfo: Packing constants..\n"
                 "Info:       3000 |      810       1189 |  484   516 |     365|       2.20       6.96|\n")
    assert prog.poll(5.0) == []                 # a stage already reported; the router only every 10 s
    with open(tim, "a") as fh:
        fh.write("Info:       4000 |      810       1189 |  484   516 |     100|       2.20       6.96|\n"
                 "Info: Max frequency for clock 'clk': 11.90 MHz (FAIL at 12.00 MHz)\n")
    (tmp_path / "neurovm.config").write_text("")
    assert prog.poll(12.0) == ["routing: 100 arcs left of 1300 after 4000 iterations",
                               "Fmax 11.90 MHz for clk (FAIL)", "packing the bitstream"]
    router2 = BuildProgress(tmp_path / "r2", every=0.0)
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "neurovm.tim").write_text(
        "Info: Running router2...\nInfo:     iter=1 wires=550079 overused=47599 overuse=58988 archfail=NA\n")
    assert router2.poll(1.0) == ["nextpnr: routing", "routing: pass 1, 47599 wires overused"]
