"""Every code block of README.md runs as written, and the quickstart gets what it claims.

The README is cut into sections at its ``## `` headings. Each section's
```` ```python ```` and ```` ```sh ```` blocks run in document order in one fresh
Python interpreter (python blocks share its namespace), in a temporary folder
that starts empty: every file a block uses must be made by an earlier block of
the same section. ``sh`` blocks run under ``bash -e`` with this interpreter's
``bin`` folder (the venv, with the ``neurovm`` script) first on ``PATH``.

A block that cannot run here is preceded by ``<!-- not-run: REASON -->``;
such blocks are few and each gives its reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
RUNNABLE = ("python", "sh")
MAX_NOT_RUN = 1
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->\s*$")

# Runs in the section's own interpreter: argv[1] is a JSON list of {"lang", "code", "line"}.
DRIVER = r"""
import json, os, subprocess, sys
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for b in blocks:
    where = f"README.md line {b['line']} ({b['lang']} block)"
    print(f"=== {where}", flush=True)
    if b["lang"] == "python":
        exec(compile(b["code"], where, "exec"), namespace)
        sys.stdout.flush()
    else:
        rc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", b["code"]]).returncode
        if rc:
            sys.exit(f"{where} failed with exit status {rc}")
"""


def readme_blocks(text: str) -> list[dict]:
    """Every fenced block: section heading, language, code, first line number, not-run reason."""
    blocks, section, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            end = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
            before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            reason = NOT_RUN.match(before.strip())
            blocks.append({"section": section, "lang": fence.group(1), "code": "\n".join(lines[i + 1:end]) + "\n",
                           "line": i + 2, "not_run": reason.group(1) if reason else None})
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())
SECTIONS = list(dict.fromkeys(b["section"] for b in BLOCKS if b["lang"] in RUNNABLE and not b["not_run"]))


def run_section(section: str, folder: Path) -> subprocess.CompletedProcess:
    """Run the section's runnable blocks in order in a fresh interpreter inside ``folder``."""
    blocks = [b for b in BLOCKS if b["section"] == section and b["lang"] in RUNNABLE and not b["not_run"]]
    spec = folder.parent / f"{folder.name}.blocks.json"
    spec.write_text(json.dumps(blocks))
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", DRIVER, str(spec)], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.fixture(scope="module")
def section_runs(tmp_path_factory) -> dict:
    """Each section run once: {section: (completed process, its folder)}."""
    assert (Path(sys.executable).parent / "neurovm").exists(), "the neurovm script is not beside this interpreter"
    runs = {}
    for section in SECTIONS:
        folder = tmp_path_factory.mktemp("readme")
        runs[section] = (run_section(section, folder), folder)
    return runs


def test_the_readme_has_runnable_blocks_of_every_kind_and_few_skipped():
    langs = {b["lang"] for b in BLOCKS}
    assert langs <= set(RUNNABLE), f"blocks of a language the test cannot run: {langs - set(RUNNABLE)}"
    runnable = [b for b in BLOCKS if not b["not_run"]]
    assert {b["lang"] for b in runnable} == set(RUNNABLE)
    skipped = [b for b in BLOCKS if b["not_run"]]
    assert len(skipped) <= MAX_NOT_RUN and all(len(b["not_run"]) > 20 for b in skipped), skipped
    assert "Tenants: VMs sharing one chip" in SECTIONS and len(SECTIONS) >= 3


@pytest.mark.parametrize("section", SECTIONS)
def test_section_runs_as_written(section_runs, section):
    proc, _ = section_runs[section]
    assert proc.returncode == 0, f"README section {section!r} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr[-3000:]


def test_quickstart_gets_what_it_claims(section_runs):
    section = next(s for s in SECTIONS if s.startswith("Quickstart"))
    proc, folder = section_runs[section]
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.split("=== ")[1].splitlines()[1:]     # the first python block's output
    snn, ann = map(float, first[0].split())
    assert snn >= ann - 0.02                                   # the SNN keeps the ANN's accuracy
    accuracy = float(re.search(r"accuracy: ([\d.]+) %", proc.stdout).group(1))
    assert accuracy > 80
    for name in ("digits.nvm", "model.nvm", "fast.nvm", "model.nvmap", "spikes.png"):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "spikes.png").read_bytes()[:4] == b"\x89PNG"
    assert "2 tenant VMs on one" in proc.stdout


def test_tenants_block_shows_two_isolated_tenants(section_runs):
    proc, _ = section_runs["Tenants: VMs sharing one chip"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = proc.stdout.split("=== ")[1].splitlines()[1:]
    spikes_alice, spikes_bob = map(int, body[0].split())
    telemetry = eval(body[1], {})                             # the printed dict
    assert spikes_alice > 0 and spikes_bob > 0 and telemetry["steps"] == 100 and telemetry["syn_ops"] > 0
