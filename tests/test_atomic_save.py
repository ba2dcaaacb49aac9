"""Saves are atomic: an exception in the middle of writing, or a SIGKILL of the saving process at a
random moment, leaves the previous .nvm / .nvmap intact (old or new content, never a broken file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import neurovm.npzfile
from neurovm.atomic import SaveError
from neurovm.host.model import ModelError, SnnModel, load_model
from neurovm.mapper import MapError, MappedNetwork, map_network

ROOT = Path(__file__).resolve().parents[1]


def model(seed: int) -> SnnModel:
    rng = np.random.default_rng(seed)
    return SnnModel([rng.integers(-127, 128, (12, 10)), rng.integers(-127, 128, (4, 12))],
                    [rng.integers(-4000, 4000, 12), np.zeros(4, np.int64)], [np.zeros(12, np.int64), np.zeros(4, np.int64)], [90, 40], 0.5, 16)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("kind", ["nvm", "nvmap"])
def test_an_exception_mid_write_leaves_the_old_file(tmp_path, monkeypatch, kind):
    old, new = model(0), model(1)
    path = tmp_path / f"target.{kind}"
    save = (lambda m: m.save(path)) if kind == "nvm" else (lambda m: map_network(m.network()).save(path))
    save(old)
    before = path.read_bytes()
    real = np.savez_compressed

    def half_then_fail(fh, **arrays):
        real(fh, **arrays)
        fh.seek(len(before) // 2)
        fh.truncate()
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(neurovm.npzfile.np, "savez_compressed", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save(new)
    assert path.read_bytes() == before and leftovers(tmp_path) == []
    monkeypatch.undo()
    save(new)
    assert path.read_bytes() != before
    loaded = load_model(path) if kind == "nvm" else MappedNetwork.load(path)
    assert loaded is not None


def test_refused_saves_touch_nothing(tmp_path):
    path = tmp_path / "m.nvm"
    model(0).save(path)
    before = path.read_bytes()
    bad = model(1)
    bad.meta["x"] = float("inf")
    with pytest.raises(ModelError, match="m.nvm: cannot save: meta cannot be saved as strict JSON"):
        bad.save(path)
    mapped = map_network(model(0).network())
    mpath = tmp_path / "m.nvmap"
    mapped.save(mpath)
    mbefore = mpath.read_bytes()
    mapped.report["mean_hops"] = float("nan")
    with pytest.raises(MapError, match="m.nvmap: cannot save: the header is not strict JSON"):
        mapped.save(mpath)
    with pytest.raises(SaveError, match="no-such-folder"):
        model(0).save(tmp_path / "no-such-folder" / "m.nvm")
    assert path.read_bytes() == before and mpath.read_bytes() == mbefore and leftovers(tmp_path) == []


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from neurovm.config import ChipConfig
    from neurovm.host.model import SnnModel
    cfg = ChipConfig(mesh_width=4, mesh_height=4, neurons_per_core=1024, synapses_per_core=32768)
    def make(seed):
        rng = np.random.default_rng(seed)
        return SnnModel([rng.integers(-127, 128, (600, 600))], [rng.integers(-4000, 4000, 600)],
                        [np.zeros(600, np.int64)], [seed + 1], 1.0, 8, cfg)
    models = [make(0), make(1)]
    path = sys.argv[1]
    models[0].save(path)
    print("ready", flush=True)
    i = 1
    while True:
        models[i % 2].save(path)
        i += 1
""")


def check_kills(tmp_path: Path, kills: int, seed: int) -> dict:
    """Kill a process that saves two models in turn, ``kills`` times at random moments; each time
    the target must load as one of the two, never broken."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "target.nvm"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    seen = {}
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env)
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.0, 0.4)))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        loaded = load_model(path)          # raises if broken
        assert loaded.sizes == [600, 600] and loaded.vth_mant[0] in (1, 2)
        seen[loaded.vth_mant[0]] = seen.get(loaded.vth_mant[0], 0) + 1
        for p in tmp_path.glob(".target.nvm.*.tmp"):   # a killed save may leave its temporary file
            p.unlink()
    return seen


def test_sigkill_during_saves_leaves_old_or_new_content(tmp_path):
    seen = check_kills(tmp_path, 4, seed=0)
    assert sum(seen.values()) == 4


@pytest.mark.slow
def test_sigkill_during_saves_sweep(tmp_path):
    seen = check_kills(tmp_path, 40, seed=1)
    assert set(seen) == {1, 2}, seen
