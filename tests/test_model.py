"""ANN -> SNN conversion: accuracy on real data, identical predictions on every backend,
the .nvm file, and clear errors for bad models and files."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import neurovm
from neurovm.examples import digits_onnx, mlp_to_onnx
from neurovm.host.model import ModelError, SnnModel, convert_onnx, load_model, rate_code


@pytest.fixture(scope="module")
def digits():
    onx, data, ann_acc = digits_onnx(hidden=(64,), seed=0)
    model = convert_onnx(onx, data.x_train[:500], steps=32)
    return onx, data, ann_acc, model


def test_converted_snn_is_within_two_points_of_the_ann_on_digits(digits):
    """The whole digits test set (360 images) on the golden emulator; the chip's predictions
    equal an independent layer-by-layer numpy simulation of the same integer SNN."""
    _, data, ann_acc, model = digits
    assert ann_acc > 0.93
    pred = model.predict(data.x_test)
    snn_acc = float((pred == data.y_test).mean())
    assert snn_acc >= ann_acc - 0.02, (snn_acc, ann_acc)
    assert np.array_equal(pred, model.predict_reference(data.x_test))


@pytest.mark.cosim
def test_verilator_predicts_exactly_what_the_emulator_predicts(digits):
    _, data, _, model = digits
    x = data.x_test[:48]
    p_emu, s_emu = model.predict(x, backend="emulator", return_scores=True)
    p_ver, s_ver = model.predict(x, backend="verilator", return_scores=True)
    assert np.array_equal(p_emu, p_ver) and np.array_equal(s_emu, s_ver)


def test_model_shares_the_chip_with_another_tenant_and_leaves(digits):
    _, data, _, model = digits
    chip = neurovm.open("emulator")
    other = chip.create_vm("other", cores=1)
    before = model.predict(data.x_test[:10])
    assert np.array_equal(model.predict(data.x_test[:10], chip=chip), before)
    assert [v.name for v in chip.vms] == ["other"] and other.pcores[0] not in chip.free_cores


def test_nvm_round_trip_and_damaged_files(digits, tmp_path):
    _, data, _, model = digits
    path = tmp_path / "digits.nvm"
    model.save(path)
    back = load_model(path)
    assert back.sizes == model.sizes and back.vth_mant == model.vth_mant and back.steps == model.steps
    assert all(np.array_equal(a, b) for a, b in zip(back.weights, model.weights))
    assert np.array_equal(back.predict_reference(data.x_test[:20]), model.predict_reference(data.x_test[:20]))
    raw = path.read_bytes()
    (tmp_path / "trunc.nvm").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelError, match="trunc.nvm: not a readable NeuroVM model file"):
        load_model(tmp_path / "trunc.nvm")
    (tmp_path / "junk.nvm").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="junk.nvm: not a readable NeuroVM model file"):
        load_model(tmp_path / "junk.nvm")
    with pytest.raises(ModelError, match="missing.nvm: no such file"):
        load_model(tmp_path / "missing.nvm")
    # a file whose arrays were tampered with is refused by the same checks as a fresh model
    z = dict(np.load(path))
    z["weight1"] = z["weight1"].astype(np.int16) * 4
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(ModelError, match=r"bad.npz: layer 2: weights outside -128..127"):
        load_model(tmp_path / "bad.npz")
    del z["bias_exp0"]
    np.savez(tmp_path / "short.npz", **z)
    with pytest.raises(ModelError, match="short.npz: truncated model file, array 'bias_exp0' is missing"):
        load_model(tmp_path / "short.npz")


def _graph(nodes, inits, n_in=4, out="y"):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "K"])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_onnx_import_refuses_what_it_cannot_convert_and_names_it():
    calib = np.random.default_rng(0).random((20, 4))
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    w2 = numpy_helper.from_array(np.ones((2, 3), np.float32), "W2")
    conv = _graph([helper.make_node("Conv", ["x", "W"], ["y"], name="conv1")], [w])
    with pytest.raises(ModelError, match=r"node 0 'conv1': Conv weight shape \(3, 4\) -- only 2-D convolution"):
        convert_onnx(conv, calib)
    lstm = _graph([helper.make_node("Sigmoid", ["x"], ["y"], name="rnn")], [])
    with pytest.raises(ModelError, match=r"node 0 'rnn': unsupported operator 'Sigmoid'; supported: Conv, AveragePool"):
        convert_onnx(lstm, calib)
    # two dense layers without a Relu between them compose into one (exactly the same function)
    no_relu = _graph([helper.make_node("Gemm", ["x", "W"], ["h"], transB=1, name="fc1"),
                      helper.make_node("Gemm", ["h", "W2"], ["y"], transB=1, name="fc2")], [w, w2])
    assert convert_onnx(no_relu, calib).sizes == [4, 2]
    relu_last = _graph([helper.make_node("Gemm", ["x", "W"], ["h"], transB=1, name="fc1"),
                        helper.make_node("Relu", ["h"], ["y"], name="r")], [w])
    with pytest.raises(ModelError, match="the model must end with a linear layer"):
        convert_onnx(relu_last, calib)
    branch = _graph([helper.make_node("Gemm", ["x", "W"], ["h"], transB=1, name="fc1"),
                     helper.make_node("Relu", ["x"], ["y"], name="r")], [w])
    with pytest.raises(ModelError, match=r"node 1 'r' \(Relu\): the graph must be a single chain"):
        convert_onnx(branch, calib)
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        convert_onnx(b"\x08\x01garbage-not-protobuf", calib)
    good = mlp_to_onnx([np.ones((4, 3)), np.ones((3, 2))], [np.zeros(3), np.zeros(2)], 4)
    with pytest.raises(ModelError, match=r"calibration data must have shape \(samples, 4\), not \(20, 5\)"):
        convert_onnx(good, np.zeros((20, 5)))
    # MatMul + Add, Flatten and a final Softmax are understood
    mm = _graph([helper.make_node("Flatten", ["x"], ["f"]),
                 helper.make_node("MatMul", ["f", "M"], ["m"]), helper.make_node("Add", ["m", "B"], ["a"]),
                 helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "M2"], ["z"]),
                 helper.make_node("Softmax", ["z"], ["y"])],
                [numpy_helper.from_array(np.full((4, 3), 0.5, np.float32), "M"),
                 numpy_helper.from_array(np.full(3, 0.1, np.float32), "B"),
                 numpy_helper.from_array(np.eye(3, 2, dtype=np.float32), "M2")])
    m = convert_onnx(onnx.ModelProto.FromString(mm.SerializeToString()), calib)
    assert m.sizes == [4, 3, 2] and (m.bias_mant[0] > 0).all()


def test_models_that_do_not_fit_leave_no_vm_behind():
    big = SnnModel([np.ones((300, 4000), np.int64), np.ones((2, 300), np.int64)],
                   [np.zeros(300, np.int64), np.zeros(2, np.int64)], [np.zeros(300, np.int64), np.zeros(2, np.int64)],
                   [10, 10], 1.0)
    chip = neurovm.open("emulator")
    with pytest.raises(ModelError, match=r"the model does not fit this chip: axons_per_core: neuron 4000 "
                                          r"\(population 'layer1'\) receives from 4000 distinct neurons, over the "
                                          r"limit of 1024 by 2976"):
        big.predict(np.zeros((1, 4000)), chip=chip)
    assert chip.vms == [] and chip.free_cores == [0, 1, 2, 3]
    with pytest.raises(ModelError, match=r"inputs must have shape \(samples, 4000\), not \(1, 3\)"):
        big.predict(np.zeros((1, 3)), chip=chip)


def test_rate_code_spreads_round_x_times_steps_spikes():
    x = np.array([0.0, 0.1, 0.5, 0.77, 1.0, 1.7, -0.2])
    r = rate_code(x, 50)
    assert np.array_equal(r.sum(axis=0), np.floor(np.clip(x, 0, 1) * 50 + 0.5))
    gaps = np.diff(np.flatnonzero(r[:, 2]))
    assert set(gaps.tolist()) == {2}


def test_convert_pytorch_exports_through_onnx_or_says_what_is_missing(digits):
    """With PyTorch installed, a torch MLP with the digits weights converts to the same model as
    its ONNX twin; without it (the default install), the error says what to install."""
    import importlib.util

    _, data, _, _ = digits
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ModelError, match=r"convert_pytorch needs PyTorch \(pip install torch\)"):
            neurovm.convert_pytorch(object(), None, data.x_train[:50])
        return
    import torch

    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(0, 0.1, (16, 64)), rng.normal(0, 0.3, (10, 16))
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1)), net[0].bias.zero_(), net[2].weight.copy_(torch.tensor(w2))
        net[2].bias.zero_()
    m_torch = neurovm.convert_pytorch(net.float(), torch.zeros(1, 64), data.x_train[:200])
    m_onnx = convert_onnx(mlp_to_onnx([w1.T, w2.T], [np.zeros(16), np.zeros(10)], 64), data.x_train[:200])
    assert all(np.array_equal(a, b) for a, b in zip(m_torch.weights, m_onnx.weights))
