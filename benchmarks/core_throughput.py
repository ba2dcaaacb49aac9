"""LifCore throughput in clock cycles: synaptic ops per clock under saturating input,
and cycles per timestep versus activity.  Runs the Verilator model under cocotb.

    .venv/bin/python benchmarks/core_throughput.py

Prints Markdown tables (pasted into BENCHMARKS.md).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurovm.config import ChipConfig  # noqa: E402
from neurovm.hdl.core import LifCore  # noqa: E402
from tests.hdl_runner import config_env, run_cocotb  # noqa: E402


def core_bench(cfg: ChipConfig, build: str) -> dict:
    """tests/cocotb/core_bench.py on a LifCore of ``cfg`` (built as ``build``): its JSON results,
    ``synops`` (per list length) and ``steps`` (per activity)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        run_cocotb(LifCore(cfg), "lif_core", build, "core_bench",
                   config_env(cfg) | {"NEUROVM_BENCH_OUT": str(out)}, run_name="bench")
        return json.loads(out.read_text())


def main():
    cfg = ChipConfig(mesh_width=1, mesh_height=1)   # the default core: N=256, S=16384, A=1024, F=1024
    res = core_bench(cfg, "core_default")
    print(f"LifCore, default core (N={cfg.neurons_per_core}, S={cfg.synapses_per_core}, "
          f"A={cfg.axons_per_core}, F={cfg.fanout_per_core})\n")
    print("| synapses per axon | events | synaptic ops | cycles | synops / clock |")
    print("|---:|---:|---:|---:|---:|")
    for r in res["synops"]:
        print(f"| {r['syn_len']} | {r['events']} | {r['synops']} | {r['cycles']} | {r['synops_per_clock']:.3f} |")
    print("\n| neurons | firing | fan-out each | cycles start→done |")
    print("|---:|---:|---:|---:|")
    for r in res["steps"]:
        print(f"| {r['neurons']} | {r['firing']} | {r['fanout']} | {r['cycles']} |")


if __name__ == "__main__":
    main()
