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
    (["convert", "{d}/x.npy", "--calibration", "{d}/calib.npy", "-o", "{d}/bad.nvm"], "unknown file type '.npy'"),
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


# ---- hardening (issue #13): every bad argument or file is one line and exit status 2 ----------------
def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit status, stdout, stderr); argparse exits count as statuses."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_refused(argv, capsys, *fragments):
    """Exit status 2, exactly one stderr line, no traceback, every fragment in it."""
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2, (argv, err)
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    for f in fragments:
        assert str(f) in err, (f, err)
    return err


@pytest.fixture(scope="module")
def model_files(files):
    """``files`` plus m.nvm, m.nvmap and small .npz/.npy variants of the data."""
    d = files
    if not (d / "m.nvm").exists():
        assert main(["convert", str(d / "m.onnx"), "--calibration", str(d / "calib.npy"), "-o", str(d / "m.nvm")]) == 0
    if not (d / "m.nvmap").exists():
        assert main(["map", str(d / "m.nvm"), "-o", str(d / "m.nvmap")]) == 0
    x, y = np.load(d / "x.npy")[:4], np.load(d / "y.npy")[:4]
    np.savez(d / "both.npz", x=x, y=y)
    np.savez(d / "only.npz", x)
    np.save(d / "x4.npy", x)
    nan = x.copy()
    nan[2, 5] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "y_float.npy", y.astype(np.float64))
    np.save(d / "y_big.npy", np.full(4, 10))
    (d / "folder").mkdir(exist_ok=True)
    (d / "empty.npy").write_bytes(b"")
    return d


def test_npz_inputs_select_the_only_array_or_one_by_name(model_files, capsys):
    d = model_files
    rc, out, err = run_cli(["run", d / "m.nvm", "--input", f"{d}/both.npz:x", "--labels", f"{d}/both.npz:y", "-q"],
                           capsys)
    assert rc == 0, err
    rc2, out2, err2 = run_cli(["run", d / "m.nvm", "--input", d / "only.npz", "--labels", f"{d}/both.npz:y", "--samples",
                               "4", "-q"], capsys)
    assert rc2 == 0, err2
    assert out.split("predictions:")[1].splitlines()[0] == out2.split("predictions:")[1].splitlines()[0]
    assert_refused(["run", d / "m.nvm", "--input", d / "both.npz"], capsys, "holds 2 arrays (x, y)", "NAME")
    assert_refused(["run", d / "m.nvm", "--input", f"{d}/both.npz:z"], capsys, "no array 'z'", "it holds x, y")
    assert_refused(["convert", d / "m.onnx", "--calibration", d / "both.npz", "-o", d / "c.nvm"], capsys,
                   "calibration data", "holds 2 arrays")
    assert not (d / "c.nvm").exists()


@pytest.mark.parametrize("argv, fragments", [
    (["convert", "{d}/m.onnx", "--calibration", "{d}/calib.npy", "-o", "{d}/nowhere/m.nvm"],
     ["-o {d}/nowhere/m.nvm", "does not exist"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "-o", "{d}/nowhere/p.npy"], ["does not exist"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--raster", "{d}/nowhere/r.png"], ["--raster", "does not exist"]),
    (["map", "{d}/m.nvm", "-o", "{d}/nowhere/m.nvmap"], ["does not exist"]),
    (["map", "{d}/m.nvm", "-o", "{d}/folder"], ["is a folder"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "-o", "{d}/folder"], ["is a folder"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "-o", "{d}/x4.npy"], ["would overwrite the input"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--raster", "{d}/r.pdf"], ["must end in .png"]),
    (["convert", "{d}/m.onnx", "--calibration", "{d}/calib.npy", "-o", "{d}/m2.nvm", "--percentile", "200"],
     ["--percentile", "200", "(0, 100]"]),
    (["convert", "{d}/m.onnx", "--calibration", "{d}/calib.npy", "-o", "{d}/m2.nvm", "--percentile", "0"],
     ["(0, 100]"]),
    (["convert", "{d}/m.onnx", "--calibration", "{d}/calib.npy", "-o", "{d}/m2.nvm", "--percentile", "nan"],
     ["(0, 100]"]),
    (["convert", "{d}/m.onnx", "--calibration", "{d}/calib.npy", "-o", "{d}/m2.nvm", "--steps", "-5"], ["--steps"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--steps", "0"], ["--steps", "0: must be 1.."]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--steps", "-5"], ["--steps"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--samples", "0"], ["--samples", "at least 1"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--samples", "-2"], ["--samples"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--samples", "5"], ["--samples 5", "only 4 samples"]),
    (["vms", "{d}/m.nvm", "--input", "{d}/x4.npy", "--samples", "0"], ["--samples"]),
    (["vms", "{d}/m.nvm", "--samples", "2"], ["--samples needs --input"]),
    (["demo", "--steps", "0"], ["--steps"]),
    (["demo", "--steps", "9"], ["--steps", "9: must be 10.."]),
    (["demo", "--seed", "-1"], ["--seed"]),
    (["demo", "--waves", "{d}/w.vcd"], ["--waves needs --backend verilator"]),
    (["run", "{d}/m.nvmap", "--steps", "5", "--rate", "0.5", "--input-population", "nosuch"],
     ["--input-population 'nosuch'", "input, layer1, output"]),
    (["run", "{d}/m.nvmap", "--steps", "5", "--rate", "1.5"], ["--rate", "[0, 1]"]),
    (["run", "{d}/m.nvmap", "--rate", "0.5"], ["needs --steps N"]),
    (["run", "{d}/m.nvmap", "--steps", "5", "--input-population", "input"], ["--input-population needs --rate"]),
    (["run", "{d}/m.nvmap", "--steps", "5", "--input", "{d}/x4.npy"], ["--input applies to models"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--rate", "0.1"], ["--rate applies to networks"]),
    (["run", "{d}/m.nvm", "--input", "{d}/nan.npy"], ["input {d}/nan.npy", "nan at index (2, 5)"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--labels", "{d}/y_float.npy"], ["labels must be integers"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--labels", "{d}/y_big.npy"], ["label 10 at index 0", "0..9"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--labels", "{d}/y.npy"], ["does not match the 4 input samples"]),
    (["run", "{d}/m.nvm", "--input", "{d}/empty.npy"], ["empty file"]),
    (["run", "{d}/m.nvm", "--input", "{d}/folder"], ["is a folder"]),
    (["run", "{d}/folder"], ["is a folder"]),
    (["run", "{d}/m.nvm", "--input", "{d}/x4.npy", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["run", "{d}/m.nvm", "--inp", "{d}/x4.npy"], ["unrecognized arguments"]),      # no silent abbreviations
    (["convert", "{d}/m.onnx"], ["required: -o/--output"]),
    (["demo", "--backend", "silicon"], ["invalid choice: 'silicon'"]),
    (["fpga"], ["required: fpga_command"]),
    (["fpga", "flash", "--board", "ulx3s", "--bitstream", "{d}/folder"], ["--bitstream", "is a folder"]),
    (["nosuchcommand"], ["invalid choice"]),
])
def test_bad_arguments_are_refused_in_one_line(model_files, capsys, argv, fragments):
    d = model_files
    before = sorted(p.name for p in d.iterdir())
    assert_refused([a.format(d=d) for a in argv], capsys, *[f.format(d=d) for f in fragments])
    assert sorted(p.name for p in d.iterdir()) == before      # nothing written, not even a temporary file


def test_tampered_mapped_network_is_one_line(model_files, capsys):
    """Needs the .nvmap loader's named errors (mapper/compile.py); see the report of issue #13."""
    d = model_files
    data = bytearray((d / "m.nvmap").read_bytes())
    (d / "cut.nvmap").write_bytes(bytes(data[: len(data) // 2]))
    data[len(data) // 3] ^= 0xFF
    (d / "flip.nvmap").write_bytes(bytes(data))
    assert_refused(["run", d / "cut.nvmap", "--steps", "3"], capsys, "cut.nvmap")
    assert_refused(["map", d / "flip.nvmap"], capsys, "flip.nvmap")


def test_outputs_are_written_exactly_where_asked_and_atomically(model_files, capsys, monkeypatch):
    d = model_files
    rc, _, err = run_cli(["run", d / "m.nvm", "--input", d / "x4.npy", "-o", d / "pred_raw", "-q"], capsys)
    assert rc == 0, err
    assert np.load(d / "pred_raw").shape == (4,) and not (d / "pred_raw.npy").exists()   # no '.npy' appended
    calls = []
    import neurovm.cli as cli

    real = cli.atomic_write
    monkeypatch.setattr(cli, "atomic_write", lambda path, fn: calls.append(path) or real(path, fn))
    rc, _, err = run_cli(["run", d / "m.nvmap", "--steps", "5", "--raster", d / "net.png", "-q"], capsys)
    assert rc == 0, err
    assert calls == [d / "net.png"] and (d / "net.png").read_bytes()[:4] == b"\x89PNG"


def test_network_run_feeds_the_named_population_reproducibly(model_files, capsys):
    d = model_files
    argv = ["run", d / "m.nvmap", "--steps", "60", "--rate", "0.3", "--input-population", "input", "--seed", "3",
            "-q"]
    first, second = run_cli(argv, capsys), run_cli(argv, capsys)
    assert first[0] == 0 and first[1] == second[1] and "60 steps on the emulator backend" in first[1]
    silent = run_cli(["run", d / "m.nvmap", "--steps", "60", "--rate", "0", "-q"], capsys)
    unfed = run_cli(["run", d / "m.nvmap", "--steps", "60", "-q"], capsys)
    assert silent[0] == 0 and silent[1] == unfed[1] != first[1]        # --rate 0 feeds nothing, it is no error


def test_load_array_checks_the_header_before_reading(tmp_path):
    from neurovm.arrays import ArrayError, load_array

    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (1 << 40, 64)                     # 2^46 float64: refused from the header alone
    with open(tmp_path / "huge.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
    with pytest.raises(ArrayError, match=r"huge.npy: shape \(1099511627776, 64\) has .* more than the limit"):
        load_array(tmp_path / "huge.npy", "input")
    np.save(tmp_path / "small.npy", np.arange(12.0).reshape(3, 4))
    with pytest.raises(ArrayError, match="more than the limit of 11"):
        load_array(tmp_path / "small.npy", "input", max_elements=11)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "small.npy").read_bytes()[:-8])
    with pytest.raises(ArrayError, match="cut.npy: truncated"):
        load_array(tmp_path / "cut.npy", "input")
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ArrayError, match="dtype object is not a real number type"):
        load_array(tmp_path / "obj.npy", "input")
    np.save(tmp_path / "c.npy", np.ones(3, np.complex64))
    with pytest.raises(ArrayError, match="dtype complex64"):
        load_array(tmp_path / "c.npy", "input")
    fortran = np.asfortranarray(np.arange(12).reshape(3, 4))
    np.save(tmp_path / "f.npy", fortran)
    assert np.array_equal(load_array(tmp_path / "f.npy", "input"), fortran)
    with pytest.raises(ArrayError, match=r"':x' selects arrays of a .npz only"):
        load_array(tmp_path / "f.npy", "input", name="x")
