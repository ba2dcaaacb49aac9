"""MeshNoC: accepted throughput versus offered load, and latency versus hop count,
for uniform traffic on 2x2 and 4x4 meshes (Verilator under cocotb).

    .venv/bin/python benchmarks/router_throughput.py

Prints Markdown tables (pasted into BENCHMARKS.md) and writes
docs/router_throughput.png.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurovm.config import ChipConfig  # noqa: E402
from neurovm.hdl.router import ROUTER_FIFO_DEPTH, MeshNoC  # noqa: E402
from tests.hdl_runner import config_env, run_cocotb  # noqa: E402


def measure(w: int, h: int) -> dict:
    cfg = ChipConfig(mesh_width=w, mesh_height=h)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        run_cocotb(MeshNoC(cfg), "mesh_noc", f"mesh_{w}x{h}", "mesh_bench",
                   config_env(cfg) | {"NEUROVM_BENCH_OUT": str(out)}, run_name="bench")
        return json.loads(out.read_text())


def main():
    res = {f"{w}x{h}": measure(w, h) for w, h in ((2, 2), (4, 4))}
    print(f"Uniform traffic, input FIFOs of {ROUTER_FIFO_DEPTH}, sinks never stall; "
          "packets per cycle per node; latency in cycles from generation (includes source queueing).\n")
    print("| offered | " + " | ".join(f"{m} accepted | {m} mean latency" for m in res) + " |")
    print("|---:|" + "---:|---:|" * len(res))
    for i, row in enumerate(res["2x2"]["sweep"]):
        cells = []
        for m in res:
            r = res[m]["sweep"][i]
            cells += [f"{r['accepted']:.3f}", f"{r['mean_latency']:.1f}" if r["mean_latency"] is not None else "-"]
        print(f"| {row['offered']:.2f} | " + " | ".join(cells) + " |")
    print("\nLatency versus hop count at offered load 0.05:\n")
    print("| hops | " + " | ".join(res) + " |")
    print("|---:|" + "---:|" * len(res))
    all_h = sorted({int(h) for m in res for h in res[m]["latency_by_hops"]})
    for hcount in all_h:
        cells = [f"{res[m]['latency_by_hops'].get(str(hcount), float('nan')):.2f}" for m in res]
        print(f"| {hcount} | " + " | ".join(cells) + " |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, r in res.items():
        ax.plot([s["offered"] for s in r["sweep"]], [s["accepted"] for s in r["sweep"]], "o-", label=f"{m} mesh")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="accepted = offered")
    ax.set_xlabel("offered load (packets / cycle / node)")
    ax.set_ylabel("accepted throughput (packets / cycle / node)")
    ax.set_title("MeshNoC, uniform random traffic")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = ROOT / "docs" / "router_throughput.png"
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
