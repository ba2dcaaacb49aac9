"""The Verilator model (sim/) of two commits side by side: cycles per second of process CPU time.

    .venv/bin/python benchmarks/verilator_speed.py [--baseline HEAD] [--steps 300] [--repeats 3]

The baseline is the model exactly as commit ``--baseline`` builds it (its HDL, its
``sim/harness.cpp``, its build flags): the commit's tree is extracted with
``git archive`` into a temporary folder and imported from there in a child process,
which builds (or finds, in the shared ``build/sim`` cache) its library.  The new
model is the working tree's.  Every measurement runs in its own child process,
the two models alternating, and the best of ``--repeats`` is reported (process
CPU time, so other load on a shared machine matters less than for wall time).

Workloads, all on the default 2x2 chip after the ``make sim`` demo's set-up
(two tenant VMs, 256 neurons, 4,700 synapses):

* ``busy``: one-step RUNs, 8 injected spikes each (benchmarks/chip_speed.py);
* ``quiet``: one-step RUNs with no input (every core still sweeps its neurons);
* ``one-tenant``: one-step RUNs of VM 0's domain only (2 of the 4 cores step).

Every run's output words are hashed; the two models and the emulator must give
identical words on every workload, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

WORKLOADS = ("busy", "quiet", "one-tenant")
# the package folders of the editable install (pyproject's package list): neurovm.<name> -> <name>/
SUBPACKAGES = ("emulator", "fpga", "hdl", "host", "mapper")


def workload_words(name: str, steps: int) -> tuple[list[int], list[list[int]]]:
    """(set-up words, per-step words) of workload ``name`` (see the module docstring)."""
    from chip_speed import workload

    from neurovm.formats import domain_bit
    from neurovm.host import protocol as P

    setup, busy = workload(steps)
    if name == "busy":
        return setup, busy
    if name == "quiet":
        return setup, [P.encode_run(1)] * steps
    if name == "one-tenant":
        return setup, [P.encode_run(1, domains=domain_bit(0))] * steps
    raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")


def digest(words: np.ndarray) -> str:
    """A short hash of a sequence of output words."""
    return hashlib.sha256(np.asarray(words, dtype=np.uint32).tobytes()).hexdigest()[:16]


def measure(library: str, name: str, steps: int) -> dict:
    """Clock ``library`` through workload ``name``; its cycles, CPU seconds and output digest."""
    from neurovm.config import DEFAULT_CONFIG
    from neurovm.host.verilator import VerilatedChip

    setup, per_step = workload_words(name, steps)
    chip = VerilatedChip(DEFAULT_CONFIG, library=library)
    out = [chip.feed(setup)]
    c0, t0 = chip.cycles, time.process_time()
    for words in per_step:
        chip.push(words)
        chip.run()
    cpu = time.process_time() - t0
    out.append(chip.pull())
    return {"cycles": chip.cycles - c0, "cpu_s": cpu, "digest": digest(np.concatenate(out))}


def emulator_digest(name: str, steps: int) -> str:
    """The output digest of the emulator on workload ``name`` (the reference)."""
    from neurovm.config import DEFAULT_CONFIG
    from neurovm.emulator import Chip

    setup, per_step = workload_words(name, steps)
    chip = Chip(DEFAULT_CONFIG)
    return digest(np.concatenate([chip.feed(setup)] + [chip.feed(w) for w in per_step]))


_BUILD_SCRIPT = """
import sys
from neurovm.config import DEFAULT_CONFIG
from neurovm.host.verilator import build_model
print(build_model(DEFAULT_CONFIG, quiet=False, cache_root=sys.argv[1]))
"""


def baseline_tree(rev: str, into: Path) -> Path:
    """Extract commit ``rev`` into ``into/tree`` and lay out ``into/pkg/neurovm`` as its package.

    Returns the folder to put first on ``PYTHONPATH`` so that ``import neurovm`` (and
    ``neurovm.host`` ...) load the commit's code instead of the working tree's.
    """
    tree, pkg = into / "tree", into / "pkg" / "neurovm"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shutil.copytree(tree / "neurovm", pkg, symlinks=True)
    for sub in SUBPACKAGES:
        if (tree / sub).is_dir():
            (pkg / sub).symlink_to(tree / sub, target_is_directory=True)
    return pkg.parent


def build_library(pythonpath: Path | None, cache_root: Path) -> str:
    """Build (or find) the default chip's model with the code on ``pythonpath``; its path."""
    env = dict(os.environ)
    if pythonpath is not None:   # the commit's model as committed: no build overrides
        env["PYTHONPATH"] = str(pythonpath)
        for var in ("NEUROVM_OPT_FAST", "NEUROVM_VERILATOR_OPT", "NEUROVM_VERILATOR_PGO"):
            env.pop(var, None)
    # run outside the repository: '' on sys.path must not find the working tree's neurovm/
    res = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, str(cache_root)], env=env,
                         cwd=str(pythonpath or ROOT),
                         capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"building the model ({'baseline' if pythonpath else 'working tree'}) failed:\n"
                           f"{res.stderr[-3000:]}")
    return res.stdout.strip().splitlines()[-1]


def measure_in_child(library: str, name: str, steps: int) -> dict:
    """:func:`measure` in a fresh process (one model library per process)."""
    res = subprocess.run([sys.executable, __file__, "--measure", library, "--workload", name, "--steps", str(steps)],
                         capture_output=True, text=True, cwd=str(ROOT))
    if res.returncode:
        raise RuntimeError(f"measuring {library} on {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare(libraries: dict[str, str], steps: int, repeats: int) -> list[dict]:
    """Best-of-``repeats`` cycles/s of every library on every workload, checked against the emulator."""
    rows = []
    for name in WORKLOADS:
        gold = emulator_digest(name, steps)
        best: dict[str, dict] = {}
        for _ in range(repeats):
            for label, lib in libraries.items():    # alternate the models: same load for both
                r = measure_in_child(lib, name, steps)
                if r["digest"] != gold:
                    raise AssertionError(f"{label} model's output on workload {name!r} differs from the "
                                         f"emulator's ({r['digest']} != {gold})")
                if label not in best or r["cpu_s"] < best[label]["cpu_s"]:
                    best[label] = r
        cycles = {r["cycles"] for r in best.values()}
        if len(cycles) != 1:
            raise AssertionError(f"the models ran different cycle counts on workload {name!r}: {best}")
        rows.append({"workload": name, "cycles": cycles.pop(),
                     **{label: r["cycles"] / r["cpu_s"] for label, r in best.items()}})
    return rows


def report(rows: list[dict], labels: list[str], steps: int, baseline: str) -> str:
    """The comparison as a markdown table."""
    old, new = labels
    lines = [f"default 2x2 chip, {steps} steps a workload, cycles/s of process CPU time (best of the repeats); "
             f"old = commit {baseline}'s model, new = the working tree's\n",
             "| workload | cycles/step | old cycles/s | new cycles/s | speed-up |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['cycles'] / steps:,.0f} | {r[old]:,.0f} | {r[new]:,.0f} | "
                     f"{r[new] / r[old]:.2f}x |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="HEAD", help="commit whose model is the 'old' one (default HEAD)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--measure", help=argparse.SUPPRESS)       # child mode: one library, one workload
    ap.add_argument("--workload", default="busy", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.workload, args.steps)))
        return
    cache = ROOT / "build" / "sim"
    with tempfile.TemporaryDirectory(prefix="neurovm-baseline-") as tmp:
        old = build_library(baseline_tree(args.baseline, Path(tmp)), cache)
    new = build_library(None, cache)
    print(f"old model: {old}\nnew model: {new}\n", file=sys.stderr)
    rows = compare({"old": old, "new": new}, args.steps, args.repeats)
    print(report(rows, ["old", "new"], args.steps, args.baseline))


if __name__ == "__main__":
    main()
