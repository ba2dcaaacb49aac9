"""The cocotb runner's simulator choice (issue #18 item 1): SIM and ICARUS_GEN are checked by name,
and SIM=icarus without Icarus stops with how to install it (never a silent skip)."""

import pytest

from tests import hdl_runner


def test_simulator_and_generation_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("SIM", raising=False)
    monkeypatch.delenv("ICARUS_GEN", raising=False)
    assert hdl_runner.selected_simulator() == "verilator" and hdl_runner.icarus_generation() == "2012"
    monkeypatch.setenv("SIM", "Icarus")
    monkeypatch.setenv("ICARUS_GEN", "2005")
    assert hdl_runner.selected_simulator() == "icarus" and hdl_runner.icarus_generation() == "2005"
    assert hdl_runner.build_folder("icarus", "core_small").parts[-2:] == ("icarus-g2005", "core_small")
    assert hdl_runner.build_folder("verilator", "core_small").parts[-2:] == ("cocotb", "core_small")


@pytest.mark.parametrize("var, value, message", [
    ("SIM", "modelsim", r"SIM='modelsim' in the environment: allowed simulators are verilator, icarus"),
    ("ICARUS_GEN", "2001", r"ICARUS_GEN='2001' in the environment: allowed generations are 2005, 2012"),
])
def test_bad_choices_are_named(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=message):
        hdl_runner.selected_simulator() if var == "SIM" else hdl_runner.icarus_generation()


def test_missing_icarus_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))        # nothing on PATH
    with pytest.raises(RuntimeError, match=r"iverilog and vvp not found on PATH; install Icarus Verilog "
                                           r"\(apt-get install iverilog"):
        hdl_runner.require_icarus()


YOSYS_LIKE = """module top(a, b, y, z);
  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;
  input a; input b; output reg [1:0] y; output reg z;
  always @* begin
    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end
    z = a;
  end
  always @*
    y[1] = b;
endmodule
module \\top.sub (c, w);
  input c; output reg w;
  always @*
    w = c;
endmodule
module \\top.regs (clk, q);
  input clk; output reg q;
  always @(posedge clk) q <= 1'h1;
endmodule
"""


def test_time_zero_portable_gives_every_combinational_block_a_time0_event():
    """Every `always @*` block names a trigger that changes at #0, in every module (spec §22)."""
    from neurovm.hdl.toolchain import TIME_ZERO_TRIGGER, time_zero_portable

    text = time_zero_portable(YOSYS_LIKE)
    top, sub, regs = text.split("endmodule")[:3]
    yosys_trigger = "\\$auto$verilog_backend.cc:2355:dump_module$1 "
    assert f"  initial #0 {yosys_trigger} = 1;" in top
    assert f"always @* begin\n    if ({yosys_trigger}) begin end\n    y[1] = b;\n  end" in top
    assert f"  reg {TIME_ZERO_TRIGGER} = 0;\n  initial #0 {TIME_ZERO_TRIGGER} = 1;" in sub
    assert f"if ({TIME_ZERO_TRIGGER}) begin end\n    w = c;" in sub
    assert regs == YOSYS_LIKE.split("endmodule")[2]          # no combinational block: untouched
    assert all(block.startswith(" begin\n    if (") for block in text.split("always @*")[1:])
