"""Keras import: .h5 and .keras files written here with h5py in the Keras layouts (no TensorFlow)."""

import json
import zipfile
import io

import h5py
import numpy as np
import pytest

import neurovm
from neurovm.examples import load_digits_split
from neurovm.host.importers.convert import check_forward
from neurovm.host.importers.keras import keras_ops, read_keras_file
from neurovm.host.model import ModelError

def seq_config(layers, input_shape):
    return {"class_name": "Sequential", "config": {"name": "seq", "layers":
        [{"class_name": "InputLayer", "config": {"name": "input", "batch_shape": [None, *input_shape]}}] + layers}}

def write_h5(path, config, weights):
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights")
        for name, arrays in weights.items():
            lg = g.create_group(name)
            names = [f"{name}/w{i}:0" for i in range(len(arrays))]
            lg.attrs["weight_names"] = [n.encode() for n in names]
            for n, a in zip(names, arrays):
                lg.create_dataset(n, data=a)

def write_keras(path, config, weights):
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for name, arrays in weights.items():
            v = f.create_group(f"layers/{name}/vars")
            for i, a in enumerate(arrays):
                v.create_dataset(str(i), data=a)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", buf.getvalue())


def _dense(name, units, act):
    return {"class_name": "Dense", "config": {"name": name, "units": units, "activation": act, "use_bias": True}}


@pytest.fixture(scope="module")
def digits_mlp():
    from sklearn.neural_network import MLPClassifier
    data = load_digits_split()
    clf = MLPClassifier((64,), max_iter=300, random_state=0).fit(data.x_train / 16, data.y_train)
    acc = float((clf.predict(data.x_test / 16) == data.y_test).mean())
    config = seq_config([_dense("hidden", 64, "relu"), _dense("out", 10, "softmax")], [64])
    weights = {"hidden": [clf.coefs_[0], clf.intercepts_[0]], "out": [clf.coefs_[1], clf.intercepts_[1]]}
    return data, acc, config, weights


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_keras_mlp_file_converts_within_one_point_of_its_ann(digits_mlp, tmp_path, suffix):
    data, acc, config, weights = digits_mlp
    path = tmp_path / f"mlp.{suffix}"
    (write_h5 if suffix == "h5" else write_keras)(path, config, weights)
    model = neurovm.convert_tensorflow(path, data.x_train[:500] / 16, steps=64)
    snn = float((model.predict(data.x_test / 16) == data.y_test).mean())
    assert snn >= acc - 0.01, (snn, acc)


def keras_cnn_reference(x, kernel, bias, dense_w, dense_b):
    """Keras semantics by hand: HWC input, 'same' 3x3 conv + relu, Flatten in HWC order, Dense."""
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((n, h, w, kernel.shape[3]))
    for i in range(h):
        for j in range(w):
            conv[:, i, j, :] = np.einsum("nhwc,hwco->no", xp[:, i:i + 3, j:j + 3, :], kernel) + bias
    return np.maximum(conv, 0).reshape(n, -1) @ dense_w + dense_b


def test_keras_cnn_layout_is_read_in_keras_order(tmp_path):
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(3, 3, 2, 3)), rng.normal(size=3)
    dense_w, dense_b = rng.normal(size=(5 * 4 * 3, 4)), rng.normal(size=4)
    config = seq_config([{"class_name": "Conv2D", "config": {"name": "conv", "filters": 3, "kernel_size": [3, 3],
                                                             "padding": "same", "activation": "relu"}},
                         {"class_name": "Flatten", "config": {"name": "flat"}}, _dense("fc", 4, "linear")], [5, 4, 2])
    path = tmp_path / "cnn.keras"
    write_keras(path, config, {"conv": [kernel, bias], "fc": [dense_w, dense_b]})
    ops, shape = keras_ops(*read_keras_file(path))
    x = rng.random((3, 5, 4, 2))
    np.testing.assert_allclose(check_forward(ops, shape, x), keras_cnn_reference(x, kernel, bias, dense_w, dense_b),
                               rtol=1e-9, atol=1e-9)


def test_keras_refusals_name_the_layer(tmp_path):
    config = seq_config([{"class_name": "MaxPooling2D", "config": {"name": "mp", "pool_size": [2, 2]}}], [4, 4, 1])
    path = tmp_path / "mp.h5"
    write_h5(path, config, {})
    with pytest.raises(ModelError, match=r"layer 'mp' \(MaxPooling2D\): max pooling"):
        neurovm.convert_tensorflow(path, np.ones((2, 16)))
    config = seq_config([_dense("fc", 3, "tanh")], [4])
    write_h5(path, config, {"fc": [np.ones((4, 3)), np.zeros(3)]})
    with pytest.raises(ModelError, match=r"layer 'fc' \(Dense\): activation 'tanh' is not supported"):
        neurovm.convert_tensorflow(path, np.ones((2, 4)))
    with h5py.File(tmp_path / "weights_only.h5", "w") as f:
        f.create_dataset("x", data=np.ones(2))
    with pytest.raises(ModelError, match=r"weights_only.h5: no 'model_config' attribute"):
        neurovm.convert_tensorflow(tmp_path / "weights_only.h5", np.ones((2, 4)))
