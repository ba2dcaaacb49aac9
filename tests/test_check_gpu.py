"""benchmarks/check_gpu.py: its comparison runs here with numpy on both sides, detects a
differing word, and without a GPU the script says so and exits with status 2."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from neurovm.emulator.xp import DeviceUnavailableError, namespace

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "check_gpu.py"


@pytest.fixture(scope="module")
def check_gpu():
    spec = importlib.util.spec_from_file_location("check_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_comparison_logic_with_numpy_on_both_sides(check_gpu):
    lines = []
    report = check_gpu.compare_engines("cpu", range(3), log=lines.append)
    assert report["mismatches"] == []
    assert report["cases"] == 3 and report["words"] > 100 and report["spikes"] > 0 and report["state_values"] > 0
    assert "compared 3 random cases" in lines[0] and "mismatches: 0" in lines[0]


def test_comparison_reports_a_differing_word(check_gpu, monkeypatch):
    made = []

    class Corrupting(check_gpu.Chip):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def feed_each(self, streams):
            out = super().feed_each(streams)
            if self is made[0] and len(out[0]):
                out[0] = out[0] ^ np.uint32(1)
            return out

    monkeypatch.setattr(check_gpu, "Chip", Corrupting)
    report = check_gpu.compare_engines("cpu", [0, 1], log=lambda line: None)
    assert (0, 0, "output words") in report["mismatches"]
    assert all(seed == 0 for seed, _, _ in report["mismatches"])


def test_without_a_gpu_the_script_says_so(check_gpu, capsys):
    try:
        namespace("cuda")
    except DeviceUnavailableError:
        assert check_gpu.main(["--cases", "1"]) == 2
        assert "nothing compared" in capsys.readouterr().out
    else:  # pragma: no cover - on a GPU machine, `make check-gpu` is the check
        pytest.skip("a GPU is present: run make check-gpu")
