"""The load benchmark's logic (benchmarks/service_load.py) on a small scale: a real server process, two
tenant processes x 10 mixed requests, every result checked against the same request in-process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("service_load_bench", ROOT / "benchmarks" / "service_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_two_tenant_processes_lose_and_misroute_nothing(bench, tmp_path):
    s = bench.run_load(tenants=2, requests=10, seed=5, solo=False, progress=False, folder=tmp_path)
    assert s["requests"] == s["checked"] == 20
    assert (s["lost"], s["wrong"]) == (0, 0)
    assert sum(len(d["load"]) for d in s["per_kind"].values()) == 20
    assert all(len(d["load"]) == len(d["local"]) for d in s["per_kind"].values())
    assert s["throughput"] > 0 and "| run |" in bench.table(s)


def test_plans_are_seeded_valid_and_mixed(bench):
    plan = bench.make_plan(0, 3, 200)
    assert plan == bench.make_plan(0, 3, 200) and plan != bench.make_plan(0, 4, 200)
    assert {op.kind for op in plan} == set(bench.KINDS)
    held, loaded = set(), set()
    for op in plan:                      # every request names a VM the plan holds (loaded, where it must be)
        if op.kind == "create_vm":
            assert op.vm not in held and len(held) < bench.MAX_VMS
            held.add(op.vm)
        elif op.kind == "load":
            assert op.vm in held
            loaded.add(op.vm)
        elif op.kind in ("run", "state"):
            assert op.vm in loaded
        elif op.kind == "destroy":
            held.discard(op.vm)
            loaded.discard(op.vm)


def test_the_check_counts_lost_and_differing_results(bench):
    local = [("run", 0.01, "aa"), ("state", 0.01, "bb"), ("load", 0.01, "cc")]
    remote = [("run", 0.02, "aa"), ("state", 0.02, None), ("load", 0.02, "xx")]
    s = bench.summarize({0: (remote, local), 1: (local[:2], local)}, [], 1.0, {})
    assert (s["checked"], s["lost"], s["wrong"]) == (5, 2, 1)      # tenant 1 lost its third answer
