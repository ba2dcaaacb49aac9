"""Build an Amaranth component with a Verilog simulator and run a cocotb test module on it.

The simulator comes from ``SIM`` in the environment: ``verilator`` (the default) or
``icarus`` (Icarus Verilog, ``iverilog``/``vvp``; ``ICARUS_GEN=2005|2012`` picks the
language generation, 2012 -- SystemVerilog, cocotb's own choice -- by default, see
``ICARUS_GENERATIONS``).  One build folder per (simulator, top, configuration):
``build/cocotb/<name>`` for Verilator, ``build/cocotb/icarus-g<gen>/<name>`` for Icarus.
The Verilog is rewritten only when it changes, so a build is reused across runs.
``WAVES=1`` in the environment dumps an FST per test run, named after it.

:func:`prepare` (export and build) and :func:`run_tests` (one cocotb run in a built
folder) are the two halves of :func:`run_cocotb`; the regression runner
(``neurovm.host.verify.regress``) builds once and runs many seeds in parallel.
"""

from __future__ import annotations

import fcntl
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
# --no-timing: the one delay in the exported text is the `initial #0` time-0 trigger of
# neurovm.hdl.toolchain.time_zero_portable, which a two-state model evaluating every block at
# start does not need (Verilator 5 asks for --timing or --no-timing when it sees a delay).
BUILD_ARGS = ["-Wno-fatal", "-O2", "--x-assign", "0", "--x-initial", "0", "--no-timing"]

SIMULATORS = ("verilator", "icarus")
# Icarus language generation: cocotb's runner always passes -g2012 (SystemVerilog); a later -g
# flag wins.  Both pass since the exported Verilog no longer depends on the Verilog-2005 reading
# of variable initialisers (neurovm.hdl.toolchain.time_zero_portable, spec §22); 2012 is the
# default, 2005 stays selectable to show that the results do not depend on it.
ICARUS_GENERATIONS = ("2005", "2012")
DEFAULT_ICARUS_GENERATION = "2012"
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
    """The Icarus language generation from ``ICARUS_GEN`` (``2012`` when unset).

    Raises ValueError naming the value and the generations allowed.
    """
    gen = os.environ.get("ICARUS_GEN", "").strip() or DEFAULT_ICARUS_GENERATION
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


def waves_requested() -> bool:
    """``WAVES`` in the environment asks for a waveform dump (anything but empty or ``0``)."""
    return os.environ.get("WAVES", "") not in ("", "0")


def prepare(component, toplevel: str, build_name: str):
    """Export ``component`` and build it for the selected simulator (cached); return (runner, build folder).

    Raises RuntimeError when ``SIM=icarus`` and Icarus is not installed.
    """
    from cocotb_tools.runner import get_runner

    sim = selected_simulator()
    if sim == "icarus":
        require_icarus()
    else:
        verilator_env()
    waves = waves_requested()
    # a build with waveform dumping is a different build (Icarus: the dump module; Verilator:
    # --trace-fst), and the runners reuse a build by timestamps only: keep it in a folder of its own
    build_dir = build_folder(sim, build_name + ("-waves" if waves else ""))
    build_dir.mkdir(parents=True, exist_ok=True)
    # one build at a time per folder: cocotb's Verilator runner re-runs verilator and make on every
    # build() call, and the regression's workers (or two pytest sessions) share the folder
    with open(build_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        vfile, _ = export_verilog(component, toplevel, build_dir / f"{toplevel}.v")
        runner = get_runner(sim)
        build_simulation(runner, sim, vfile, toplevel, build_dir, waves)
    return runner, build_dir


def read_results(xml: Path) -> list[dict]:
    """The per-test results of a cocotb results file: name, failed, message, sim_time_ns (end of the test)."""
    results = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        failure = case.find("failure")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        results.append({"name": case.get("name"), "failed": failure is not None,
                        "message": (failure.get("message") or "") if failure is not None else "",
                        "sim_time_ns": float(props.get("sim_time_stop", "nan"))})
    return results


def run_tests(runner, build_dir: Path, toplevel: str, test_module: str, env: dict[str, str],
              test_filter: str | None = None, run_name: str = "run") -> list[dict]:
    """Run ``test_module`` once in the built folder ``build_dir``; return its per-test results
    (:func:`read_results`), failed ones included.

    Raises AssertionError when the simulation died without a results file or ran no test.
    """
    waves = waves_requested()
    xml = build_dir / f"results_{run_name}.xml"
    for p in (str(ROOT), str(COCOTB_DIR)):   # the runner passes sys.path on as PYTHONPATH
        if p not in sys.path:
            sys.path.append(p)
    xml.unlink(missing_ok=True)
    try:   # the runner exits (SystemExit) when a test failed; the results file says which
        runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir, test_dir=build_dir,
                    extra_env=dict(env), test_filter=test_filter, results_xml=str(xml), waves=waves,
                    log_file=build_dir / f"{run_name}.log")
    except SystemExit:
        if not xml.exists():
            raise AssertionError(f"simulation died; see {build_dir / (run_name + '.log')}") from None
    if waves:   # name the waveform after the run
        for dump in (build_dir / "dump.fst", build_dir / f"{toplevel}.fst"):
            if dump.exists() and dump.name != f"{run_name}.fst":
                dump.replace(build_dir / f"{run_name}.fst")
    results = read_results(xml)
    if not results:
        raise AssertionError(f"no cocotb test ran; see {build_dir / (run_name + '.log')}")
    return results


def run_cocotb(component, toplevel: str, build_name: str, test_module: str, env: dict[str, str],
               test_filter: str | None = None, run_name: str = "run") -> list[dict]:
    """Build ``component`` (cached) and run ``test_module`` on it; return per-test results.

    The simulator is ``SIM`` from the environment (see the module docstring).
    Raises AssertionError naming every failed cocotb test; RuntimeError when
    ``SIM=icarus`` and Icarus is not installed.
    """
    runner, build_dir = prepare(component, toplevel, build_name)
    results = run_tests(runner, build_dir, toplevel, test_module, env, test_filter, run_name)
    failed = [r for r in results if r["failed"]]
    if failed:
        lines = "\n".join(f"  {r['name']}: {r['message'][:2000]}" for r in failed[:10])
        raise AssertionError(f"{len(failed)} of {len(results)} cocotb tests failed "
                             f"(log {build_dir / (run_name + '.log')}):\n{lines}")
    return results


def config_env(config) -> dict[str, str]:
    return {"NEUROVM_CFG": json.dumps(config.to_dict())}
