"""Build an Amaranth component with Verilator and run a cocotb test module on it.

One build folder per (top, configuration) under ``build/cocotb/``; the Verilog
is rewritten only when it changes, so the Verilator build is reused across
runs.  ``WAVES=1`` in the environment dumps an FST per test run, named after it.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from neurovm.hdl.toolchain import export_verilog, verilator_env

ROOT = Path(__file__).resolve().parents[1]
COCOTB_DIR = Path(__file__).resolve().parent / "cocotb"

# Warnings never stop a test build; lint cleanliness is its own test (tests/test_lint.py).
BUILD_ARGS = ["-Wno-fatal", "-O2", "--x-assign", "0", "--x-initial", "0"]


def run_cocotb(component, toplevel: str, build_name: str, test_module: str, env: dict[str, str],
               test_filter: str | None = None, run_name: str = "run") -> list[dict]:
    """Build ``component`` (cached) and run ``test_module`` on it; return per-test results.

    Raises AssertionError naming every failed cocotb test.
    """
    from cocotb_tools.runner import get_runner

    verilator_env()
    build_dir = ROOT / "build" / "cocotb" / build_name
    vfile, _ = export_verilog(component, toplevel, build_dir / f"{toplevel}.v")
    waves = os.environ.get("WAVES", "") not in ("", "0")
    runner = get_runner("verilator")
    runner.build(sources=[vfile], hdl_toplevel=toplevel, build_dir=build_dir,
                 build_args=BUILD_ARGS + (["--trace-fst"] if waves else []), waves=waves, always=False,
                 log_file=build_dir / "build.log")
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
