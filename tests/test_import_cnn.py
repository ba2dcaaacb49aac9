"""CNN import: the layer IR's lowering is the ANN exactly, convolutions become sparse layers that
map over several cores, the .nvm file keeps them, ONNX converts without calibration (with a warning),
and what cannot convert is refused naming the layer."""

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from neurovm.config import DEFAULT_CONFIG
from neurovm.host.importers import layers as ir
from neurovm.host.importers.convert import CalibrationWarning, check_forward
from neurovm.host.model import ModelError, SnnModel, convert_onnx, load_model


def conv_reference(x, w, b, stride, pad):
    """Direct NCHW convolution (zero padding), the definition the lowering must match."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    return out


def test_lowered_cnn_computes_the_same_function_as_the_ann():
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    w2, b2 = rng.normal(size=(5, 3 * 3 * 3)), rng.normal(size=5)
    bn_scale, bn_shift = rng.random(3) + 0.5, rng.normal(size=3)
    ops = [ir.Conv2d(w1, b1, (2, 2), (1, 1, 1, 1)), ir.Affine(bn_scale, bn_shift, per_channel=True), ir.ReLU(),
           ir.AvgPool2d((2, 2), (1, 1)), ir.flatten(), ir.Dense(w2, b2)]
    x = rng.random((6, 2, 7, 7))
    h = conv_reference(x, w1, b1, 2, 1) * bn_scale[:, None, None] + bn_shift[:, None, None]
    h = np.maximum(h, 0)
    pooled = (h[:, :, :-1, :-1] + h[:, :, 1:, :-1] + h[:, :, :-1, 1:] + h[:, :, 1:, 1:]) / 4
    want = pooled.reshape(6, -1) @ w2.T + b2
    np.testing.assert_allclose(check_forward(ops, (2, 7, 7), x), want, rtol=1e-10, atol=1e-10)


def _onnx_cnn(rng, maxpool=False, group=1):
    """A LeNet-style ONNX CNN on 1x8x8 inputs: Conv(4, pad 1)+BN, Relu, AvgPool 2, Conv(8), Relu, Flatten, Gemm."""
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("W1", rng.normal(0, 0.5, (4, 1, 3, 3))), ("B1", rng.normal(0, 0.1, 4)),
        ("g", rng.random(4) + 0.5), ("beta", rng.normal(0, 0.1, 4)), ("mean", rng.normal(0, 0.1, 4)),
        ("var", rng.random(4) + 0.5),
        ("W2", rng.normal(0, 0.3, (8, 4, 3, 3))), ("W3", rng.normal(0, 0.3, (10, 8 * 2 * 2)))]]
    pool = helper.make_node("MaxPool" if maxpool else "AveragePool", ["r1"], ["p1"], kernel_shape=[2, 2],
                            strides=[2, 2], name="pool1")
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1], group=group, name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["n1"], name="bn1"),
             helper.make_node("Relu", ["n1"], ["r1"], name="relu1"), pool,
             helper.make_node("Conv", ["p1", "W2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Flatten", ["r2"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "W3"], ["y"], transB=1, name="fc")]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_onnx_cnn_converts_to_sparse_layers_and_the_file_keeps_them(tmp_path):
    rng = np.random.default_rng(1)
    proto = _onnx_cnn(rng)
    x = rng.random((40, 64))
    model = convert_onnx(proto, x[:30], steps=16)
    assert model.sizes[0] == 64 and model.sizes[-1] == 10
    assert any(not isinstance(w, np.ndarray) for w in model.weights)   # convolutions stay sparse
    path = tmp_path / "cnn.nvm"
    model.save(path)
    back = load_model(path)
    assert back.sizes == model.sizes
    assert all(abs(a - b).max() == 0 for a, b in zip(back.weights, model.weights))
    pred = model.predict(x[30:])
    assert np.array_equal(pred, back.predict(x[30:]))
    assert np.array_equal(pred, model.predict_reference(x[30:]))


def test_damaged_sparse_layers_are_refused_by_name(tmp_path):
    import zipfile
    model = convert_onnx(_onnx_cnn(np.random.default_rng(1)), np.random.default_rng(2).random((20, 64)), steps=8)
    path = tmp_path / "cnn.nvm"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    import io
    rows = np.load(io.BytesIO(members["wrow0.npy"]))
    rows[0] = 100000
    buf = io.BytesIO()
    np.save(buf, rows)
    bad = tmp_path / "bad.nvm"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in members.items():
            z.writestr(n, buf.getvalue() if n == "wrow0.npy" else data)
    with pytest.raises(ModelError, match=r"bad.nvm: array 'wrow0' outside 0\.\.255 .*value 100000 at \[0\]"):
        load_model(bad)
    short = tmp_path / "short.nvm"
    with zipfile.ZipFile(short, "w") as z:
        for n, data in members.items():
            if n != "wcol0.npy":
                z.writestr(n, data)
    with pytest.raises(ModelError, match=r"short.nvm: truncated model file, array 'wcol0' is missing"):
        load_model(short)


def test_onnx_converts_without_calibration_and_warns():
    proto = _onnx_cnn(np.random.default_rng(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = convert_onnx(proto, steps=8)
    assert any(issubclass(w.category, CalibrationWarning) and "calibration data" in str(w.message) for w in caught)
    assert model.meta["normalisation_kind"] == "data-free"


def test_unsupported_cnn_parts_are_refused_naming_the_node():
    rng = np.random.default_rng(1)
    with pytest.raises(ModelError, match=r"node 3 'pool1': unsupported operator 'MaxPool': max pooling"):
        convert_onnx(_onnx_cnn(rng, maxpool=True), rng.random((5, 64)))
    with pytest.raises(ModelError, match=r"node 0 'conv1': Conv attribute group=2 is not supported"):
        convert_onnx(_onnx_cnn(rng, group=2), rng.random((5, 64)))
    with pytest.raises(ModelError, match=r"Conv2d: weight shape \(4, 3, 3, 3\) must be \(out_channels, 1, kh, kw\)"):
        check_forward([ir.Conv2d(np.ones((4, 3, 3, 3)))], (1, 8, 8), np.ones((1, 64)))
    with pytest.raises(ModelError, match=r"fc: weight shape \(3, 5\) must be \(outputs, 64\).*a Flatten is missing"):
        check_forward([ir.Dense(np.ones((3, 5)), label="fc")], (1, 8, 8), np.ones((1, 64)))


def test_a_model_too_big_for_the_chip_names_the_smallest_configuration_that_fits():
    rng = np.random.default_rng(3)
    ops = [ir.Conv2d(rng.normal(size=(16, 1, 3, 3)), None, (1, 1), (1, 1, 1, 1)), ir.ReLU(), ir.flatten(),
           ir.Dense(rng.normal(size=(10, 16 * 8 * 8)))]
    from neurovm.host.importers.convert import convert_ops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        model = convert_ops(ops, (1, 8, 8), None, DEFAULT_CONFIG, steps=8)
        auto = convert_ops(ops, (1, 8, 8), None, "auto", steps=8)
    with pytest.raises(ModelError, match=r"does not fit this chip: .*the smallest configuration that fits is "
                                         r"mesh_width=3, mesh_height=2"):
        model.cores_needed()
    assert (auto.config.mesh_width, auto.config.mesh_height) == (3, 2) and auto.cores_needed() > 4


def test_the_output_layer_integrates_its_logits_without_spiking():
    """The output layer (no ReLU in the ANN) gets the largest threshold: its membrane carries the
    logits, negative ones included, so close and negative logits rank as in the ANN."""
    from neurovm.host.importers.convert import convert_ops
    rng = np.random.default_rng(5)
    w1 = rng.normal(0, 0.4, (24, 16))
    w2 = rng.normal(0, 0.3, (6, 24))
    ops = [ir.Dense(w1, rng.normal(0, 0.05, 24)), ir.ReLU(), ir.Dense(w2, np.full(6, -1.6))]
    x = rng.random((200, 16))
    model = convert_ops(ops, (16,), x[:100], steps=32)
    assert model.vth_mant[-1] == (1 << 17) - 1
    logits = check_forward(ops, (16,), x[100:])
    assert (logits.max(axis=1) < 0).mean() > 0.2            # many samples have only negative logits
    agree = (model.predict(x[100:]) == logits.argmax(axis=1)).mean()
    assert agree >= 0.9, agree
