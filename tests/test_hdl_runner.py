"""The cocotb runner's simulator choice (issue #18 item 1): SIM and ICARUS_GEN are checked by name,
and SIM=icarus without Icarus stops with how to install it (never a silent skip)."""

import pytest

from tests import hdl_runner


def test_simulator_and_generation_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("SIM", raising=False)
    monkeypatch.delenv("ICARUS_GEN", raising=False)
    assert hdl_runner.selected_simulator() == "verilator" and hdl_runner.icarus_generation() == "2005"
    monkeypatch.setenv("SIM", "Icarus")
    monkeypatch.setenv("ICARUS_GEN", "2012")
    assert hdl_runner.selected_simulator() == "icarus" and hdl_runner.icarus_generation() == "2012"
    assert hdl_runner.build_folder("icarus", "core_small").parts[-2:] == ("icarus-g2012", "core_small")
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
