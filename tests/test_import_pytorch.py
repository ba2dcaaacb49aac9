"""PyTorch import: a module, a TorchScript file and a torch.export (.pt2) file convert to the same
model; a bare state_dict is refused saying what is needed.  Skipped when PyTorch is absent."""

import warnings

import numpy as np
import pytest

import neurovm
from neurovm.host.importers.convert import CalibrationWarning
from neurovm.host.model import ModelError

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")


def lenet(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AvgPool2d(2), torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(6 * 2 * 2, 10)).eval()


@pytest.fixture(scope="module")
def net_and_data():
    net = lenet()
    with torch.no_grad():   # a non-trivial batch norm
        net[1].running_mean.uniform_(-0.1, 0.1)
        net[1].running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).random((30, 1, 8, 8)).astype(np.float32)
    return net, x


def _same(a, b) -> bool:
    return len(a.weights) == len(b.weights) and all(abs(p - q).max() == 0 for p, q in zip(a.weights, b.weights)) \
        and list(a.vth_mant) == list(b.vth_mant)


def test_module_torchscript_and_export_files_convert_to_the_same_model(net_and_data, tmp_path):
    net, x = net_and_data
    example = torch.zeros(1, 1, 8, 8)
    from_module = neurovm.convert_pytorch(net, example, x, steps=16)
    torch.jit.save(torch.jit.trace(net, example), tmp_path / "net.pt")
    torch.export.save(torch.export.export(net, (example,)), tmp_path / "net.pt2")
    from_script = neurovm.convert_pytorch(tmp_path / "net.pt", example, x, steps=16)
    from_export = neurovm.convert_pytorch(str(tmp_path / "net.pt2"), calibration=x, steps=16)   # its own example
    assert _same(from_module, from_script) and _same(from_module, from_export)
    assert from_script.meta["source"] == "pytorch:net.pt" and from_export.meta["source"] == "pytorch:net.pt2"
    flat = x[:10].reshape(10, -1)
    assert np.array_equal(from_export.predict(flat), from_module.predict_reference(flat))


def test_calibration_is_optional_and_serves_as_example_input(net_and_data, tmp_path):
    net, x = net_and_data
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), tmp_path / "net.pt")
    with pytest.warns(CalibrationWarning, match="calibration data"):
        model = neurovm.convert_pytorch(tmp_path / "net.pt", torch.zeros(1, 1, 8, 8), steps=8)
    assert model.meta["normalisation_kind"] == "data-free"
    assert _same(neurovm.convert_pytorch(tmp_path / "net.pt", None, x, steps=8),
                 neurovm.convert_pytorch(tmp_path / "net.pt", torch.zeros(1, 1, 8, 8), x, steps=8))
    with pytest.raises(ModelError, match=r"net.pt: example_input is needed to trace the model"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            neurovm.convert_pytorch(tmp_path / "net.pt")


def test_state_dict_and_other_files_are_refused_saying_what_is_needed(net_and_data, tmp_path):
    net, x = net_and_data
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(ModelError, match=r"weights.pth: a state_dict \(weights only: \d+ entries such as '0.weight'"
                                         r".*pass the module itself.*TorchScript.*torch.export"):
        neurovm.convert_pytorch(tmp_path / "weights.pth", torch.zeros(1, 1, 8, 8), x)
    torch.save(net, tmp_path / "pickled.pth")
    with pytest.raises(ModelError, match=r"pickled.pth: not a TorchScript or torch.export file \(a pickled module"):
        neurovm.convert_pytorch(tmp_path / "pickled.pth", torch.zeros(1, 1, 8, 8), x)
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(ModelError, match=r"junk.pt2: not a readable torch.export file"):
        neurovm.convert_pytorch(tmp_path / "junk.pt2", None, x)
    with pytest.raises(ModelError, match=r"missing.pt: no such file"):
        neurovm.convert_pytorch(tmp_path / "missing.pt", None, x)
    with pytest.raises(ModelError, match=r"takes a torch.nn.Module or the path .* not int"):
        neurovm.convert_pytorch(3, None, x)
    mp = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                             torch.nn.Linear(18, 3)).eval()
    with pytest.raises(ModelError, match=r"unsupported operator 'MaxPool'"):
        neurovm.convert_pytorch(mp, torch.zeros(1, 1, 8, 8), x)
