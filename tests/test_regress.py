"""`neurovm regress` (neurovm.host.verify.regress, spec §22): cases, reproduction lines, JUnit XML,
and, on Icarus, a bug planted in a copy of the core found, shrunk and reproduced."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pickle
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from neurovm.host.verify import regress as R

ROOT = Path(__file__).resolve().parents[1]


def test_a_case_names_its_seed_and_cut_knobs_and_reproduces_with_one_line():
    case = R.Case("core", 17, (("max_events", 4), ("max_steps", 2)))
    assert case.name == "core/seed=17,max_events=4,max_steps=2"
    assert case.command("icarus") == ("neurovm regress --block core --seed 17 --sim icarus "
                                      "--max-events 4 --max-steps 2 --waves")
    env = case.env(R.BLOCKS, Path("/tmp/cov.json"))
    assert env["NEUROVM_SEEDS"] == "17:18" and env["NEUROVM_MAX_STEPS"] == "2"
    assert env["NEUROVM_MAX_EVENTS"] == "4" and env["NEUROVM_COVERAGE"] == "/tmp/cov.json"
    full = R.Case("chip", 5).env(R.BLOCKS, None)
    assert full["NEUROVM_SEED"] == "5" and full["NEUROVM_CASES"] == str(R.BLOCKS["chip"].knobs["cases"][1])
    assert "NEUROVM_COVERAGE" not in full


def test_the_reproduction_line_parses_back_to_the_same_case():
    from neurovm.cli import build_parser

    case = R.Case("core", 3, (("max_steps", 2),))
    args = build_parser().parse_args(case.command("verilator").split()[1:])
    assert (args.block, args.seed, args.sim, args.max_steps, args.waves) == ("core", 3, "verilator", 2, True)


def test_shrink_tries_small_values_first_and_at_most_eight():
    assert R.shrink_candidates(8) == [1, 2, 4]
    assert R.shrink_candidates(1) == []
    assert R.shrink_candidates(1_000_000) == [1, 2, 4, 8, 16, 32, 64, 128]


def test_work_items_can_be_sent_to_pool_workers():
    """--jobs > 1 pickles (case, blocks, folder) for each worker: no lambdas in the blocks."""
    work = [(R.Case(b, 0), R.BLOCKS, Path("/tmp")) for b in R.BLOCKS]
    case, blocks, _ = pickle.loads(pickle.dumps(work))[0]
    assert case == work[0][0] and set(blocks) == set(R.BLOCKS)


def test_junit_xml_has_a_suite_per_block_and_the_reproduction_of_each_failure(tmp_path):
    results = [R.CaseResult(R.Case("core", 0), True, "", 100.0, 1.0, "a.log"),
               R.CaseResult(R.Case("core", 1, (("max_steps", 1),)), False, "random_core/seed=1: v mismatch",
                            50.0, 2.0, "b.log"),
               R.CaseResult(R.Case("mesh", 0), True, "", 10.0, 0.5, "c.log")]
    R.write_junit(results, tmp_path / "junit.xml", "icarus")
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"core", "mesh"}
    assert suites["core"].get("tests") == "2" and suites["core"].get("failures") == "1"
    failure = next(suites["core"].iter("failure"))
    assert failure.get("message") == "random_core/seed=1: v mismatch"
    assert "neurovm regress --block core --seed 1 --sim icarus --max-steps 1 --waves" in failure.text


@pytest.mark.parametrize("blocks, seeds, sim, jobs, message", [
    (["cpu"], [0], "icarus", 1, r"block 'cpu': allowed blocks are core, mesh, chip"),
    (["core"], [0], "questa", 1, r"simulator 'questa': allowed simulators are verilator, icarus"),
    (["core"], [0], "icarus", 0, r"jobs=0: at least 1 worker"),
])
def test_bad_choices_are_named(blocks, seeds, sim, jobs, message):
    with pytest.raises(ValueError, match=message):
        R.regress(blocks, seeds, jobs=jobs, sim=sim, log=lambda s: None)


def test_a_missing_simulator_is_one_line_with_status_2(monkeypatch, tmp_path, capsys):
    from neurovm.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))   # no iverilog, no vvp
    monkeypatch.delenv("SIM", raising=False)
    assert main(["regress", "--block", "core", "--seed", "0", "--sim", "icarus", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("neurovm regress: error: building block 'core' for icarus failed: SIM=icarus but "
                          "iverilog and vvp not found on PATH") and "\n" not in err


# ------------------------------------------------------------------ a planted bug, found and shrunk
# the refractory hold of v dropped: a neuron in its refractory period integrates again (spec §4)
PLANT = ("v_new = Mux(refractory | fire, 0, v_sat)", "v_new = Mux(fire, 0, v_sat)")


def planted_core(cfg):
    """LifCore from a copy of hdl/core.py with :data:`PLANT` applied (module-level: picklable)."""
    return sys.modules["neurovm.hdl._planted_core"].LifCore(cfg)


def _load_planted_copy(folder: Path):
    text = (ROOT / "hdl" / "core.py").read_text()
    assert text.count(PLANT[0]) == 1, "the planted mutation no longer applies to hdl/core.py"
    copy = folder / "_planted_core.py"
    copy.write_text(text.replace(*PLANT))
    spec = importlib.util.spec_from_file_location("neurovm.hdl._planted_core", copy)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


@pytest.mark.hdl
def test_a_planted_bug_is_found_shrunk_and_reproduced(tmp_path, monkeypatch):
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog (iverilog) not installed: apt-get install iverilog")
    _load_planted_copy(tmp_path)
    core = R.BLOCKS["core"]
    planted = dataclasses.replace(core, component=planted_core, build_name="core_small_planted",
                                  knobs={"max_steps": core.knobs["max_steps"]})
    monkeypatch.setenv("SIM", "verilator")
    out = R.regress(["core"], [PLANTED_SEED], sim="icarus", out_dir=tmp_path / "out",
                    blocks={"core": planted}, log=lambda s: None)
    assert os.environ["SIM"] == "verilator"                 # the session's simulator choice, as it was
    assert len(out.failures) == 1
    found, small = out.failures[0]
    assert "random_core" in found.message
    assert dict(small.case.knobs)["max_steps"] < core.knobs["max_steps"][1]   # fewer steps still fail
    assert small.case.command("icarus").startswith(f"neurovm regress --block core --seed {PLANTED_SEED} "
                                                   f"--sim icarus --max-steps ")
    failure = next(ET.parse(out.junit).getroot().iter("failure"))
    assert f"--seed {PLANTED_SEED}" in failure.text
    monkeypatch.setenv("SIM", "icarus")
    assert R.run_case(small.case, R.BLOCKS).passed      # the same short case passes on the real core


PLANTED_SEED = 0   # fails at step 1 of its 8 with the plant, passes without it
