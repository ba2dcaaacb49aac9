"""A worked example on real data: scikit-learn's handwritten digits (8x8, 10 classes, 1,797 images).

:func:`digits_onnx` trains a small ReLU MLP with scikit-learn and writes it as
an ONNX graph (``Gemm`` / ``Relu`` nodes, the same shape ``torch.onnx.export``
gives for ``nn.Sequential(Linear, ReLU, ..., Linear)``), so the ONNX import
path is exercised end to end without PyTorch.  Needs ``scikit-learn``
(``pip install 'neurovm[examples]'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Digits", "load_digits_split", "digits_onnx", "mlp_to_onnx"]


@dataclass
class Digits:
    x_train: np.ndarray   # (n, 64) pixel values 0..16
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(seed: int = 0, test_fraction: float = 0.2) -> Digits:
    """The digits, split into a stratified train and test set."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("the digits example needs scikit-learn: pip install 'neurovm[examples]'") from None
    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=test_fraction, random_state=seed,
                                          stratify=d.target)
    return Digits(xtr, ytr, xte, yte)


def mlp_to_onnx(coefs, intercepts, n_inputs: int) -> bytes:
    """An ONNX graph ``Gemm -> Relu -> ... -> Gemm`` for the given weight matrices ``(in, out)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    cur = "x"
    for l, (w, b) in enumerate(zip(coefs, intercepts)):
        inits += [numpy_helper.from_array(np.asarray(w, np.float32).T.copy(), f"W{l}"),
                  numpy_helper.from_array(np.asarray(b, np.float32), f"b{l}")]
        nodes.append(helper.make_node("Gemm", [cur, f"W{l}", f"b{l}"], [f"z{l}"], name=f"fc{l}", transB=1))
        cur = f"z{l}"
        if l < len(coefs) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"a{l}"], name=f"relu{l}"))
            cur = f"a{l}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_inputs])],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", len(intercepts[-1])])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="neurovm.examples")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def digits_onnx(hidden=(64,), seed: int = 0) -> tuple[bytes, Digits, float]:
    """Train a ReLU MLP on the digits; return (ONNX bytes, the data split, test accuracy of the MLP)."""
    from sklearn.neural_network import MLPClassifier

    data = load_digits_split(seed)
    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", max_iter=600, random_state=seed)
    clf.fit(data.x_train / 16.0, data.y_train)
    # the MLP saw x / 16; fold that into the first layer so the ONNX model takes raw pixels
    coefs = [clf.coefs_[0] / 16.0] + list(clf.coefs_[1:])
    acc = float((clf.predict(data.x_test / 16.0) == data.y_test).mean())
    return mlp_to_onnx(coefs, clf.intercepts_, data.x_train.shape[1]), data, acc
