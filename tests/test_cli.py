"""The ``neurovm`` command line end to end: convert, run (model and network), map, vms, errors."""

import numpy as np
import pytest

from neurovm import __version__
from neurovm.cli import main
from neurovm.examples import digits_onnx


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    onx, data, _ = digits_onnx(hidden=(32,), seed=1)
    (d / "m.onnx").write_bytes(onx)
    np.save(d / "calib.npy", data.x_train[:300])
    np.save(d / "x.npy", data.x_test[:30])
    np.save(d / "y.npy", data.y_test[:30])
    return d


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"neurovm {__version__}"


def test_convert_run_map_vms(files, capsys):
    d = files
    assert main(["convert", str(d / "m.onnx"), "--calibration", str(d / "calib.npy"), "-o", str(d / "m.nvm")]) == 0
    assert "64 -> 32 -> 10 neurons" in capsys.readouterr().out
    assert main(["run", str(d / "m.nvm"), "--input", str(d / "x.npy"), "--labels", str(d / "y.npy"),
                 "--raster", str(d / "r.png"), "-o", str(d / "pred.npy")]) == 0
    out = capsys.readouterr()
    acc = float(out.out.split("accuracy: ")[1].split(" %")[0])
    pred = np.load(d / "pred.npy")
    assert acc == pytest.approx(100 * (pred == np.load(d / "y.npy")).mean()) and acc > 80
    assert "predict [" in out.err and (d / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["map", str(d / "m.nvm"), "-o", str(d / "m.nvmap")]) == 0
    out = capsys.readouterr().out
    assert "106 neurons" in out and "synapses  max" in out and (d / "m.nvmap").exists()
    assert main(["run", str(d / "m.nvmap"), "--steps", "60", "--rate", "0.3", "--input-population", "input",
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert "60 steps on the emulator backend" in out and " run " in out
    assert main(["vms", str(d / "m.nvm"), str(d / "m.nvm"), "--input", str(d / "x.npy"), "--samples", "2", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [r[1] for r in rows] == ["m", "m'"] and rows[0][5:] == rows[1][5:]   # same work, separate books
    assert int(rows[0][6]) > 0


@pytest.mark.parametrize("argv, message", [
    (["run", "missing.nvm"], "missing.nvm: no such file"),
    (["run", "{d}/m.onnx"], "unknown file type '.onnx'"),
    (["run", "{d}/m.nvm"], "run MODEL.nvm needs --input X.npy"),
    (["run", "{d}/m.nvm", "--input", "{d}/y.npy"], r"inputs must have shape (samples, 64), not (30,)"),
    (["convert", "{d}/x.npy", "--calibration", "{d}/calib.npy", "-o", "{d}/bad.nvm"], "not a readable ONNX model"),
    (["convert", "{d}/m.onnx", "--calibration", "{d}/nothere.npy", "-o", "{d}/bad.nvm"],
     "calibration data {d}/nothere.npy: no such file"),
])
def test_errors_are_one_line_with_exit_status_2(files, capsys, argv, message):
    if "m.nvm" in " ".join(argv) and not (files / "m.nvm").exists():
        main(["convert", str(files / "m.onnx"), "--calibration", str(files / "calib.npy"), "-o", str(files / "m.nvm")])
    capsys.readouterr()
    assert main([a.format(d=files) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(d=files) in err


def test_fpga_commands_name_what_is_missing(tmp_path, capsys, monkeypatch):
    assert main(["fpga", "boards"]) == 0
    out = capsys.readouterr().out
    assert "icebreaker" in out and "ulx3s" in out
    # no bitstream yet
    monkeypatch.setattr("neurovm.fpga.flow.ROOT", tmp_path)
    assert main(["fpga", "flash", "--board", "ulx3s"]) == 2
    assert "no bitstream for ulx3s; run `neurovm fpga build --board ulx3s` first" in capsys.readouterr().err
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"\xff" * 16)
    # no programmer on PATH
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    assert main(["fpga", "flash", "--board", "ulx3s", "--bitstream", str(bit)]) == 2
    assert "no flashing tool found (looked for openFPGALoader on PATH)" in capsys.readouterr().err
    # a programmer that finds no board
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "openFPGALoader"
    fake.write_text("#!/bin/sh\necho 'unable to open ftdi device: -3 (device not found)' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    assert main(["fpga", "flash", "--board", "ulx3s", "--bitstream", str(bit)]) == 2
    err = capsys.readouterr().err
    assert "openFPGALoader could not program the ULX3S 85F" in err and "device not found" in err
    assert "is the board connected?" in err
