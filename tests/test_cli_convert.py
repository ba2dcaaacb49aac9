"""``neurovm convert`` for every model format, dispatched by the file's suffix; calibration optional
(a one-line note without it); --config auto; errors one line naming the file and what is wrong."""

import numpy as np
import onnx
import pytest

from neurovm.cli import main
from neurovm.host.model import load_model
from tests.test_import_cnn import _onnx_cnn
from tests.test_import_keras import _dense, seq_config, write_h5
from tests.test_import_tflite import ModelBuilder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("convert")
    rng = np.random.default_rng(0)
    onnx.save(_onnx_cnn(rng), d / "cnn.onnx")
    w1, w2 = rng.normal(0, 0.3, (64, 16)), rng.normal(0, 0.3, (16, 10))
    write_h5(d / "mlp.h5", seq_config([_dense("h", 16, "relu"), _dense("out", 10, "softmax")], [64]),
             {"h": [w1, np.zeros(16)], "out": [w2, np.zeros(10)]})
    m = ModelBuilder([64], int8=True)
    m.dense(w1.T, np.zeros(16), relu=True)
    m.dense(w2.T, np.zeros(10), relu=False)
    m.save(d / "mlp.tflite")
    np.save(d / "calib.npy", rng.random((40, 64)))
    np.save(d / "calib5.npy", rng.random((40, 5)))
    np.save(d / "calib4d.npy", rng.random((40, 1, 8, 8)).astype(np.float32))
    return d


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", ["cnn.onnx", "mlp.h5", "mlp.tflite"])
def test_each_format_converts_with_and_without_calibration(models, capsys, name):
    d = models
    code, out, err = run(["convert", d / name, "--calibration", d / "calib.npy", "-o", d / f"{name}.nvm",
                          "--steps", "8"], capsys)
    assert code == 0 and err == "", err
    kind = {"onnx": "ONNX", "h5": "Keras", "tflite": "TFLite"}[name.split(".")[1]]
    assert f"{kind} model, 64 -> " in out and "normalisation (data)" in out
    assert load_model(d / f"{name}.nvm").meta["normalisation_kind"] == "data"
    code, out, err = run(["convert", d / name, "-o", d / f"{name}.free.nvm", "--steps", "8"], capsys)
    assert code == 0 and "normalisation (data-free)" in out
    assert err.count("\n") == 1 and err.startswith("neurovm convert: note: no calibration data")


def test_config_auto_picks_the_smallest_mesh(models, capsys):
    d = models
    code, out, _ = run(["convert", d / "mlp.h5", "-o", d / "auto.nvm", "--config", "auto"], capsys)
    assert code == 0 and "on 1x1 cores" in out
    cfg = load_model(d / "auto.nvm").config
    assert (cfg.mesh_width, cfg.mesh_height) == (1, 1)


def test_pytorch_files_convert_and_a_state_dict_is_refused(models, capsys):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    d = models
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(48, 10)).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), d / "net.pt")
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 8, 8),)), d / "net.pt2")
    torch.save(net.state_dict(), d / "weights.pth")
    for argv in (["--input-shape", "1,8,8"], ["--calibration", d / "calib4d.npy"]):
        code, out, err = run(["convert", d / "net.pt", "-o", d / "pt.nvm", *argv], capsys)
        assert code == 0 and "PyTorch model, 64 -> 192 -> " in out, err
    code, out, err = run(["convert", d / "net.pt2", "-o", d / "pt2.nvm"], capsys)
    assert code == 0 and "PyTorch model" in out, err
    code, _, err = run(["convert", d / "net.pt", "-o", d / "x.nvm"], capsys)
    assert code == 2 and "net.pt: a TorchScript file needs --input-shape" in err
    code, _, err = run(["convert", d / "weights.pth", "-o", d / "x.nvm", "--input-shape", "1,8,8"], capsys)
    assert code == 2 and err.count("\n") == 1 and "weights.pth: a state_dict (weights only" in err \
        and "pass the module itself" in err


@pytest.mark.parametrize("argv,message", [
    (["convert", "{d}/calib.npy", "-o", "{d}/x.nvm"], "model {d}/calib.npy: unknown file type '.npy'; expected .onnx"),
    (["convert", "{d}/nothere.tflite", "-o", "{d}/x.nvm"], "model {d}/nothere.tflite: no such file"),
    (["convert", "{d}/mlp.h5", "-o", "{d}/x.nvm", "--input-shape", "1,8,8"],
     "--input-shape applies to PyTorch files (.pt, .pth, .pt2), not to Keras model {d}/mlp.h5"),
    (["convert", "{d}/mlp.h5", "-o", "{d}/x.nvm", "--config", "big"], "--config: invalid choice: 'big'"),
    (["convert", "{d}/mlp.h5", "-o", "{d}/x.nvm", "--input-shape", "1,0"], "1,0: one to four sizes, each at least 1"),
    (["convert", "{d}/mlp.tflite", "-o", "{d}/mlp.tflite"], "-o {d}/mlp.tflite: would overwrite the input file"),
    (["convert", "{d}/mlp.h5", "--calibration", "{d}/calib5.npy", "-o", "{d}/x.nvm"],
     "calibration data must have shape (samples, 64), not (40, 5)"),
])
def test_convert_errors_are_one_line_naming_the_file(models, capsys, argv, message):
    code, _, err = run([a.format(d=models) for a in argv], capsys)
    assert code == 2 and err.count("\n") == 1 and message.format(d=models) in err, err


def test_a_damaged_tflite_file_is_named(models, capsys, tmp_path):
    (tmp_path / "bad.tflite").write_bytes((models / "mlp.tflite").read_bytes()[:40])
    code, _, err = run(["convert", tmp_path / "bad.tflite", "-o", tmp_path / "x.nvm"], capsys)
    assert code == 2 and err.count("\n") == 1 and "bad.tflite: not a" in err, err
