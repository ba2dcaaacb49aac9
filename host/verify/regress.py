"""``neurovm regress``: seeded random co-simulation of the blocks, in parallel, with JUnit XML,
the coverage report, a one-line reproduction per failure and shrinking (spec §22).

A *case* is one block (``core``, ``mesh``, ``chip``) and one seed, run by that block's cocotb
testbench (``tests/cocotb``) against the emulator on Verilator or Icarus.  Each block is built
once (in the parent, cached across runs by ``tests/hdl_runner.py``), then the cases run in a
``multiprocessing`` pool of ``jobs`` workers: every case is already a simulator subprocess of
its own, so a process pool is all the parallelism needed, with no extra dependency
(pytest-xdist would add one and hide the per-case results behind pytest's).

A failing case is shrunk: each of its block's knobs (core: steps and events per burst; mesh:
packets; chip: workload cases) is cut to the smallest value, tried from small to large, with
which the case still fails; the reproduction line carries the cut knobs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from neurovm.atomic import atomic_write
from neurovm.config import ChipConfig

from .coverage import CoverageDB

ROOT = Path(__file__).resolve().parents[2]
SIMULATORS = ("verilator", "icarus")
BLOCK_NAMES = ("core", "mesh", "chip")


@dataclass(frozen=True)
class Block:
    """How to build one block and run one seed of its random testbench.

    ``knobs`` maps each shrinkable knob to (environment variable, full value); ``seed_env``
    turns a seed into the testbench's environment.  ``component`` and ``seed_env`` are
    module-level functions, so that a block can be sent to a pool worker (pickled).
    """

    name: str
    toplevel: str
    build_name: str
    test_module: str
    test_filter: str
    config: ChipConfig
    component: Callable[[ChipConfig], object]
    seed_env: Callable[[int], dict]
    knobs: dict = field(default_factory=dict)


def _core(cfg):
    from neurovm.hdl.core import LifCore
    return LifCore(cfg)


def _mesh(cfg):
    from neurovm.hdl.router import MeshNoC
    return MeshNoC(cfg)


def _chip(cfg):
    from neurovm.hdl.chip import NeuroChip
    return NeuroChip(cfg)


def _seed_range_env(seed: int) -> dict:
    return {"NEUROVM_SEEDS": f"{seed}:{seed + 1}"}


def _seed_env(seed: int) -> dict:
    return {"NEUROVM_SEED": str(seed)}


# the configurations of the regular suite's testbenches (tests/test_core_hdl.py SMALL,
# tests/test_router_hdl.py 2x2, tests/test_chip_blocks.py CHIP_CFG), so the builds are shared
CORE_CFG = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=16, synapses_per_core=256,
                      axons_per_core=32, fanout_per_core=64)
MESH_CFG = ChipConfig(mesh_width=2, mesh_height=2)
CHIP_CFG = ChipConfig(mesh_width=2, mesh_height=1, neurons_per_core=8, synapses_per_core=32,
                      axons_per_core=8, fanout_per_core=16, max_vms=2, vcores_per_vm=2)

BLOCKS = {
    # threshold_equality: the one boundary random cores never reach (spec §22, coverage)
    "core": Block("core", "lif_core", "core_small", "core_tb", "random_core/|threshold_equality", CORE_CFG, _core,
                  _seed_range_env,
                  {"max_steps": ("NEUROVM_MAX_STEPS", 8), "max_events": ("NEUROVM_MAX_EVENTS", 1_000_000)}),
    "mesh": Block("mesh", "mesh_noc", "mesh_2x2", "mesh_tb", "traffic", MESH_CFG, _mesh,
                  _seed_env, {"packets": ("NEUROVM_PACKETS", 400)}),
    "chip": Block("chip", "neuro_chip", "chip_2x1", "chip_tb", "streams_with_stalls", CHIP_CFG, _chip,
                  _seed_env, {"cases": ("NEUROVM_CASES", 2)}),
}


@dataclass(frozen=True)
class Case:
    """One block and one seed, with the knobs cut by shrinking (empty: the full case)."""

    block: str
    seed: int
    knobs: tuple = ()   # ((knob, value), ...)

    @property
    def name(self) -> str:
        cut = "".join(f",{k}={v}" for k, v in self.knobs)
        return f"{self.block}/seed={self.seed}{cut}"

    @property
    def run_name(self) -> str:
        cut = "".join(f"_{k}{v}" for k, v in self.knobs)
        return f"regress_{self.block}_s{self.seed}{cut}"

    def env(self, blocks: dict, coverage_file: Path | None) -> dict:
        """The testbench environment of this case (configuration, seed, knobs, coverage file)."""
        block = blocks[self.block]
        env = {"NEUROVM_CFG": json.dumps(block.config.to_dict())} | block.seed_env(self.seed)
        knobs = dict(self.knobs)
        for knob, (var, full) in block.knobs.items():
            env[var] = str(knobs.get(knob, full))
        if coverage_file is not None:
            env["NEUROVM_COVERAGE"] = str(coverage_file)
        return env

    def command(self, sim: str) -> str:
        """The one-line reproduction of this case (``--waves`` dumps its waveform)."""
        knobs = "".join(f" --{k.replace('_', '-')} {v}" for k, v in self.knobs)
        return f"neurovm regress --block {self.block} --seed {self.seed} --sim {sim}{knobs} --waves"


@dataclass
class CaseResult:
    """What one case did: passed or not, the first failure message, simulated time, wall time, log."""

    case: Case
    passed: bool
    message: str
    sim_time_ns: float
    seconds: float
    log: str


def _hdl_runner():
    """``tests/hdl_runner.py`` of the source checkout (the testbenches live there)."""
    if not (ROOT / "tests" / "cocotb").is_dir():
        raise RuntimeError(f"neurovm regress needs the source checkout's testbenches: {ROOT / 'tests' / 'cocotb'} "
                           f"not found (run it from a clone of the repository, installed with pip install -e)")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests import hdl_runner
    return hdl_runner


def prepare_block(block: Block):
    """Export and build ``block`` for the simulator in ``SIM`` (cached); return (runner, build folder).

    Raises RuntimeError, before building anything, when the simulator is not installed.
    """
    hdl_runner = _hdl_runner()
    if hdl_runner.selected_simulator() == "icarus":
        hdl_runner.require_icarus()
    return hdl_runner.prepare(block.component(block.config), block.toplevel, block.build_name)


def run_case(case: Case, blocks: dict, coverage_dir: Path | None = None) -> CaseResult:
    """Run one case in its block's (already built) folder; never raises for a failing case."""
    hdl_runner = _hdl_runner()
    block = blocks[case.block]
    start = time.monotonic()
    runner, build_dir = prepare_block(block)
    log = build_dir / f"{case.run_name}.log"
    cov = coverage_dir / f"{case.run_name}.json" if coverage_dir is not None else None
    try:
        results = hdl_runner.run_tests(runner, build_dir, block.toplevel, block.test_module,
                                       case.env(blocks, cov), block.test_filter, case.run_name)
    except AssertionError as err:   # the simulation died or ran nothing
        return CaseResult(case, False, str(err), float("nan"), time.monotonic() - start, str(log))
    failed = [r for r in results if r["failed"]]
    message = f"{failed[0]['name']}: {failed[0]['message']}" if failed else ""
    return CaseResult(case, not failed, message, max(r["sim_time_ns"] for r in results),
                      time.monotonic() - start, str(log))


def _run_case_star(args):
    return run_case(*args)


#: at most this many values of one knob are tried when shrinking (1, 2, 4, ... 128)
SHRINK_TRIES = 8


def shrink_candidates(full: int) -> list[int]:
    """The values a knob is tried at, smallest first: 1, 2, 4, ... below ``full``, at most
    :data:`SHRINK_TRIES` of them."""
    values, v = [], 1
    while v < full and len(values) < SHRINK_TRIES:
        values.append(v)
        v *= 2
    return values


def shrink(failing: CaseResult, blocks: dict, log: Callable[[str], None] = lambda s: None) -> CaseResult:
    """Cut each knob of a failing case to the smallest tried value that still fails; return the
    smallest failing case's result (``failing`` itself when no cut still fails)."""
    best = failing
    block = blocks[failing.case.block]
    for knob, (_, full) in block.knobs.items():
        for value in shrink_candidates(full):
            knobs = tuple(sorted(dict(best.case.knobs, **{knob: value}).items()))
            trial = run_case(Case(failing.case.block, failing.case.seed, knobs), blocks)
            log(f"  shrink {trial.case.name}: {'still fails' if not trial.passed else 'passes'}")
            if not trial.passed:
                best = trial
                break
    return best


def write_junit(results: list[CaseResult], path: Path, sim: str) -> None:
    """JUnit XML of the regression: one test suite per block, one test case per seed."""
    suites = ET.Element("testsuites", name=f"neurovm regress ({sim})")
    for block in sorted({r.case.block for r in results}):
        mine = [r for r in results if r.case.block == block]
        suite = ET.SubElement(suites, "testsuite", name=f"{block}", tests=str(len(mine)),
                              failures=str(sum(not r.passed for r in mine)),
                              time=f"{sum(r.seconds for r in mine):.3f}")
        for r in mine:
            case = ET.SubElement(suite, "testcase", classname=f"regress.{sim}.{block}", name=r.case.name,
                                 time=f"{r.seconds:.3f}")
            ET.SubElement(case, "properties").append(
                ET.Element("property", name="sim_time_ns", value=str(r.sim_time_ns)))
            if not r.passed:
                failure = ET.SubElement(case, "failure", message=r.message[:2000])
                failure.text = f"reproduce: {r.case.command(sim)}\nlog: {r.log}"
    atomic_write(Path(path), lambda fh: fh.write(ET.tostring(suites, encoding="utf-8", xml_declaration=True)))


@dataclass
class Regression:
    """The outcome of :func:`regress`: every case, the failures (shrunk), files written."""

    results: list
    failures: list          # (CaseResult as found, CaseResult shrunk)
    junit: Path
    coverage: CoverageDB | None
    summary: Path


def regress(blocks_selected: list[str], seeds: list[int], jobs: int = 1, sim: str = "verilator",
            out_dir: Path | None = None, knobs: dict | None = None, do_shrink: bool = True,
            blocks: dict | None = None, log: Callable[[str], None] = print) -> Regression:
    """Run ``seeds`` on every block of ``blocks_selected`` with ``jobs`` workers on ``sim``.

    Writes ``junit.xml``, ``summary.json`` (per case: passed, simulated time, wall time) and the
    merged coverage (``coverage.json``) under ``out_dir`` (default ``build/regress/<sim>``).
    ``knobs`` (e.g. ``{"max_steps": 2}``) cuts every case, as a reproduction line does.
    Raises ValueError naming a block or simulator that does not exist.
    """
    blocks = BLOCKS if blocks is None else blocks
    unknown = [b for b in blocks_selected if b not in blocks]
    if unknown:
        raise ValueError(f"block {unknown[0]!r}: allowed blocks are {', '.join(blocks)}")
    if sim not in SIMULATORS:
        raise ValueError(f"simulator {sim!r}: allowed simulators are {', '.join(SIMULATORS)}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: at least 1 worker is needed")
    before = os.environ.get("SIM")
    os.environ["SIM"] = sim   # tests/hdl_runner.py reads it, here and in the workers
    try:
        return _regress(blocks_selected, seeds, jobs, sim, out_dir, knobs, do_shrink, blocks, log)
    finally:   # the caller's environment as it was (a test session goes on with its own SIM)
        if before is None:
            os.environ.pop("SIM", None)
        else:
            os.environ["SIM"] = before


def _regress(blocks_selected, seeds, jobs, sim, out_dir, knobs, do_shrink, blocks, log) -> Regression:
    """:func:`regress` once its choices are checked and ``SIM`` is set."""
    # absolute: every testbench runs in its block's build folder
    out_dir = Path(out_dir).resolve() if out_dir is not None else ROOT / "build" / "regress" / sim
    cov_dir = out_dir / "coverage"
    cov_dir.mkdir(parents=True, exist_ok=True)
    for stale in cov_dir.glob("*.json"):
        stale.unlink()
    for name in blocks_selected:
        log(f"building {name} ({blocks[name].build_name}) for {sim}")
        try:
            prepare_block(blocks[name])
        except RuntimeError as err:   # the simulator's build failed, or the simulator is missing
            where = (f" (build log: build/cocotb/{'' if sim == 'verilator' else 'icarus-g*/'}"
                     f"{blocks[name].build_name}/build.log)" if "Command failed" in str(err) else "")
            raise RuntimeError(f"building block {name!r} for {sim} failed: {err}{where}") from None
    cut = tuple(sorted((knobs or {}).items()))
    cases = [Case(b, s, tuple((k, v) for k, v in cut if k in blocks[b].knobs)) for b in blocks_selected for s in seeds]
    work = [(c, blocks, cov_dir) for c in cases]
    if jobs == 1:
        results = [_run_case_star(w) for w in work]
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            results = pool.map(_run_case_star, work, chunksize=1)
    for r in results:
        log(f"{'PASS' if r.passed else 'FAIL'} {r.case.name}  {r.sim_time_ns:.0f} ns simulated, {r.seconds:.1f} s")
    failures = []
    for r in (r for r in results if not r.passed):
        small = shrink(r, blocks, log) if do_shrink and blocks[r.case.block].knobs else r
        failures.append((r, small))
    junit = out_dir / "junit.xml"
    write_junit(results, junit, sim)
    summary = out_dir / "summary.json"
    atomic_write(summary, lambda fh: fh.write(json.dumps(
        {"sim": sim, "cases": [{"case": r.case.name, "passed": r.passed, "sim_time_ns": r.sim_time_ns,
                                "seconds": round(r.seconds, 3), "message": r.message[:500]} for r in results],
         "failures": [{"case": r.case.name, "shrunk": s.case.name, "reproduce": s.case.command(sim)}
                      for r, s in failures]}, indent=1).encode()))
    coverage = CoverageDB.merge_files(sorted(cov_dir.glob("*.json"))) if any(cov_dir.glob("*.json")) else None
    if coverage is not None:
        coverage.save(out_dir / "coverage.json")
    return Regression(results, failures, junit, coverage, summary)
