"""Build an Amaranth component with a Verilog simulator and run a cocotb test module on it.

The simulator comes from ``SIM`` in the environment: ``verilator`` (the default) or
``icarus`` (Icarus Verilog, ``iverilog``/``vvp``; ``ICARUS_GEN=2005|2012`` picks the
language generation, 2005 by default, see ``ICARUS_GENERATIONS``).  One build folder per
(simulator, top, configuration): ``build/cocotb/<name>`` for Verilator,
``build/cocotb/icarus-g<gen>/<name>`` for Icarus.  The Verilog is rewritten only when it
changes, so a build is reused across runs.  ``WAVES=1`` in the environment dumps an FST
per test run, named after it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from neurovm.hdl.toolchain import export_verilog, verilator_env

ROOT = Path(__file__).resolve().parents[1]
COCOTB_DIR = Path(__file__).resolve().parent / "cocotb"

# Warnings never stop a test build; lint cleanliness is its own test (tests/test_lint.py).
BUILD_ARGS = ["-Wno-fatal", "-O2", "--x-assign", "0", "--x-initial", "0"]

SIMULATORS = ("verilator", "icarus")
# Icarus language generation: cocotb's runner always passes -g2012 (SystemVerilog); a later -g
# flag wins.  Under -g2012 Icarus runs `always @*` blocks only on a change of their inputs, so
# a combinational block whose inputs never change from their initial value is never evaluated
# and its outputs stay X; -g2005 evaluates every `always @*` once at time 0 (see the report
# of issue #18 item 1 and docs/architecture.md).
ICARUS_GENERATIONS = ("2005", "2012")
ICARUS_TIMESCALE = ("1ns", "1ps")   # Amaranth's Verilog has no `timescale; the clocks are in ns
ICARUS_INSTALL_HINT = "apt-get install iverilog (Debian/Ubuntu), brew install icarus-verilog (macOS)"


def selected_simulator() -> str:
    """The simulator named by ``SIM`` in the environment (``verilator`` when unset).

    Raises ValueError naming the value and the simulators allowed.
    """
    sim = os.environ.get("SIM", "").strip().lower() or "verilator"
    if sim not in SIMULATORS:
        raise ValueError(f"SIM={sim!r} in the environment: allowed simulators are {', '.join(SIMULATORS)}")
    return sim


def icarus_generation() -> str:
    """The Icarus language generation from ``ICARUS_GEN`` (``2005`` when unset).

    Raises ValueError naming the value and the generations allowed.
    """
    gen = os.environ.get("ICARUS_GEN", "").strip() or "2005"
    if gen not in ICARUS_GENERATIONS:
        raise ValueError(f"ICARUS_GEN={gen!r} in the environment: allowed generations are "
                         f"{', '.join(ICARUS_GENERATIONS)}")
    return gen


def require_icarus() -> None:
    """Stop (RuntimeError) with how to install Icarus when ``iverilog`` or ``vvp`` is not on PATH."""
    missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"SIM=icarus but {' and '.join(missing)} not found on PATH; install Icarus "
                           f"Verilog ({ICARUS_INSTALL_HINT}) or run without SIM=icarus for Verilator")


def build_folder(sim: str, build_name: str) -> Path:
    """The build folder of ``build_name`` for simulator ``sim`` (Verilator keeps its old place)."""
    if sim == "verilator":
        return ROOT / "build" / "cocotb" / build_name
    return ROOT / "build" / "cocotb" / f"icarus-g{icarus_generation()}" / build_name


def build_simulation(runner, sim: str, vfile: Path, toplevel: str, build_dir: Path, waves: bool) -> None:
    """Compile ``vfile`` for ``sim`` with the options that simulator needs (cached by timestamps)."""
    if sim == "verilator":
        runner.build(sources=[vfile], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=BUILD_ARGS + (["--trace-fst"] if waves else []), waves=waves, always=False,
                     log_file=build_dir / "build.log")
    else:
        runner.build(sources=[vfile], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=[f"-g{icarus_generation()}"], timescale=ICARUS_TIMESCALE, waves=waves,
                     always=False, log_file=build_dir / "build.log")


def run_cocotb(component, toplevel: str, build_name: str, test_module: str, env: dict[str, str],
               test_filter: str | None = None, run_name: str = "run") -> list[dict]:
    """Build ``component`` (cached) and run ``test_module`` on it; return per-test results.

    The simulator is ``SIM`` from the environment (see the module docstring).
    Raises AssertionError naming every failed cocotb test; RuntimeError when
    ``SIM=icarus`` and Icarus is not installed.
    """
    from cocotb_tools.runner import get_runner

    sim = selected_simulator()
    if sim == "icarus":
        require_icarus()
    else:
        verilator_env()
    build_dir = build_folder(sim, build_name)
    vfile, _ = export_verilog(component, toplevel, build_dir / f"{toplevel}.v")
    waves = os.environ.get("WAVES", "") not in ("", "0")
    runner = get_runner(sim)
    build_simulation(runner, sim, vfile, toplevel, build_dir, waves)
    xml = build_dir / f"results_{run_name}.xml"
    run_env = dict(env)
    for p in (str(ROOT), str(COCOTB_DIR)):   # the runner passes sys.path on as PYTHONPATH
        if p not in sys.path:
            sys.path.append(p)
    xml.unlink(missing_ok=True)
    try:   # the runner exits (SystemExit) when a test failed; the results file says which
        runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir, test_dir=build_dir,
                    extra_env=run_env, test_filter=test_filter, results_xml=str(xml), waves=waves,
                    log_file=build_dir / f"{run_name}.log")
    except SystemExit:
        if not xml.exists():
            raise AssertionError(f"simulation died; see {build_dir / (run_name + '.log')}") from None
    if waves and (build_dir / "dump.fst").exists():   # name the waveform after the run
        (build_dir / "dump.fst").replace(build_dir / f"{run_name}.fst")
    results = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        failure = case.find("failure")
        results.append({"name": case.get("name"), "failed": failure is not None,
                        "message": (failure.get("message") or "") if failure is not None else ""})
    if not results:
        raise AssertionError(f"no cocotb test ran; see {build_dir / (run_name + '.log')}")
    failed = [r for r in results if r["failed"]]
    if failed:
        lines = "\n".join(f"  {r['name']}: {r['message'][:2000]}" for r in failed[:10])
        raise AssertionError(f"{len(failed)} of {len(results)} cocotb tests failed "
                             f"(log {build_dir / (run_name + '.log')}):\n{lines}")
    return results


def config_env(config) -> dict[str, str]:
    return {"NEUROVM_CFG": json.dumps(config.to_dict())}
