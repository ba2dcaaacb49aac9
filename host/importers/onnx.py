"""ONNX graphs into the layer IR (docs/architecture.md §18).

The graph must be one chain from its single data input.  Supported operators:
``Conv`` (2-D, ``group=1``, no dilation, explicit or ``VALID`` padding), ``AveragePool``
(no padding, ``ceil_mode=0``), ``GlobalAveragePool``, ``BatchNormalization`` (folded
into the layer before it), ``Gemm``, ``MatMul``, ``Add`` (a constant bias), ``Mul``
(a constant scale), ``Relu``, ``Flatten``, ``Reshape``, ``Identity``, ``Dropout``, and
a final ``Softmax``/``LogSoftmax`` (dropped: it does not change the argmax).
``MaxPool`` is refused (a spiking max needs lateral inhibition the converter does not
build; use average pooling), as is every other operator, attribute or shape, naming
the node.
"""

from __future__ import annotations

import math

import numpy as np

from ..model import ModelError, real_array
from . import layers as ir

__all__ = ["SUPPORTED_OPS", "onnx_ops"]

SUPPORTED_OPS = ("Conv", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Gemm", "MatMul", "Add", "Mul",
                 "Relu", "Flatten", "Reshape", "Identity", "Dropout", "Softmax (last)", "LogSoftmax (last)")
_PASS_OPS = ("Identity", "Dropout")
_REFUSED = {
    "MaxPool": "max pooling has no rate-coded equivalent here (it needs lateral inhibition); "
               "train with average pooling (AveragePool) instead",
    "GlobalMaxPool": "max pooling has no rate-coded equivalent here; use GlobalAveragePool",
}


def _input_shape(g, init: dict) -> tuple[str, tuple]:
    """The single data input's name and its shape without the batch axis (every size known)."""
    inputs = [i for i in g.input if i.name not in init]
    if len(inputs) != 1:
        raise ModelError(f"the ONNX graph must have one data input, it has {len(inputs)} "
                         f"({', '.join(i.name for i in inputs)})")
    dims = inputs[0].type.tensor_type.shape.dim
    sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
    if not sizes or any(s is None or s < 1 for s in sizes):
        raise ModelError(f"input {inputs[0].name!r}: shape {[d.dim_param or d.dim_value for d in dims]} -- every "
                         f"size but the batch axis must be a known positive number")
    return inputs[0].name, tuple(int(s) for s in sizes)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constant(init: dict, name: str, label: str, what: str) -> np.ndarray:
    if name not in init:
        raise ModelError(f"{label}: {what} must be a constant initializer, {name!r} is computed by the graph")
    return init[name]


def _only(attrs: dict, label: str, op: str, allowed: dict) -> None:
    """Refuse attributes other than ``allowed`` (name -> check) and values a check rejects."""
    for name, value in attrs.items():
        if name not in allowed:
            raise ModelError(f"{label}: {op} attribute {name!r} is not supported")
        ok = allowed[name]
        if ok is not None and not ok(value):
            raise ModelError(f"{label}: {op} attribute {name}={value!r} is not supported")


def _pads(attrs: dict, label: str, op: str) -> tuple:
    pad = attrs.get("auto_pad", b"NOTSET")
    pad = pad.decode() if isinstance(pad, bytes) else pad
    if pad not in ("NOTSET", "VALID"):
        raise ModelError(f"{label}: {op} auto_pad={pad} is not supported (give explicit pads)")
    p = tuple(int(v) for v in attrs.get("pads", (0, 0, 0, 0)))
    if len(p) != 4:
        raise ModelError(f"{label}: {op} pads {p} -- only 2-D (four pads) is supported")
    return p


def _conv(node, attrs, init, label) -> ir.Conv2d:
    _only(attrs, label, "Conv", {"kernel_shape": None, "strides": None, "pads": None, "auto_pad": None,
                                 "group": lambda g: g == 1, "dilations": lambda d: all(v == 1 for v in d)})
    w = _constant(init, node.input[1], label, "Conv weight")
    if w.ndim != 4:
        raise ModelError(f"{label}: Conv weight shape {w.shape} -- only 2-D convolution (4-D weight) is supported")
    if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != w.shape[2:]:
        raise ModelError(f"{label}: Conv kernel_shape {attrs['kernel_shape']} does not match the weight {w.shape}")
    b = _constant(init, node.input[2], label, "Conv bias") if len(node.input) > 2 and node.input[2] else None
    return ir.Conv2d(w, b, tuple(attrs.get("strides", (1, 1))), _pads(attrs, label, "Conv"), label)


def _avgpool(attrs, label) -> ir.AvgPool2d:
    _only(attrs, label, "AveragePool", {"kernel_shape": lambda k: len(k) == 2, "strides": None, "pads": None,
                                        "auto_pad": None, "ceil_mode": lambda c: c == 0,
                                        "count_include_pad": None})
    if any(_pads(attrs, label, "AveragePool")):
        raise ModelError(f"{label}: AveragePool with pads {attrs['pads']} is not supported (pads must be 0)")
    if "kernel_shape" not in attrs:
        raise ModelError(f"{label}: AveragePool needs kernel_shape")
    return ir.AvgPool2d(tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", attrs["kernel_shape"])), label)


def _batchnorm(node, attrs, init, label) -> ir.Affine:
    _only(attrs, label, "BatchNormalization", {"epsilon": None, "momentum": None,
                                               "training_mode": lambda t: t == 0, "spatial": lambda s: s == 1})
    gamma, beta, mean, var = (_constant(init, n, label, f"BatchNormalization {what}")
                              for n, what in zip(node.input[1:5], ("scale", "B", "mean", "var")))
    eps = float(attrs.get("epsilon", 1e-5))
    if (var + eps <= 0).any():
        raise ModelError(f"{label}: BatchNormalization var + epsilon must be positive")
    scale = gamma / np.sqrt(var + eps)
    return ir.Affine(scale, beta - mean * scale, label, per_channel=True)


def _gemm(node, attrs, init, label) -> ir.Dense:
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ModelError(f"{label}: Gemm alpha={alpha}, beta={beta}: both must be finite numbers")
    if attrs.get("transA", 0):
        raise ModelError(f"{label}: Gemm with transA=1 is not supported")
    b_mat = init.get(node.input[1])
    if b_mat is None or b_mat.ndim != 2:
        raise ModelError(f"{label}: Gemm weights must be a 2-D constant initializer")
    w = (b_mat if attrs.get("transB", 0) else b_mat.T) * alpha
    bias = init.get(node.input[2], np.zeros(w.shape[0])) * beta if len(node.input) > 2 and node.input[2] \
        else np.zeros(w.shape[0])
    bias = real_array(np.broadcast_to(bias, (w.shape[0],)), f"{label}: bias (after Gemm beta)")
    return ir.Dense(real_array(w, f"{label}: weights (after Gemm alpha)"), bias, label)


def _reshape(node, init, label) -> ir.Reshape:
    target = [int(v) for v in _constant(init, node.input[1], label, "Reshape shape").ravel()]
    if not target or target[0] not in (0, -1, 1):
        raise ModelError(f"{label}: Reshape to {target} -- the first axis must stay the batch axis")
    rest = target[1:]
    if 0 in rest:
        raise ModelError(f"{label}: Reshape with 0 (copy a size) in {target} is not supported after the batch axis")
    return ir.Reshape(tuple(rest) if rest else (-1,), label)


def _constant_operand(node, init, cur: str, label: str, op: str) -> np.ndarray:
    other = [i for i in node.input if i != cur]
    if len(other) != 1 or other[0] not in init:
        raise ModelError(f"{label}: {op} is supported only with one constant operand "
                         f"(residual connections and other tensor-tensor {op}s are not)")
    return init[other[0]]


def onnx_ops(proto, init: dict) -> tuple[list, tuple]:
    """The chain of ``proto``'s graph as IR operations, and the input shape (without the batch axis)."""
    g = proto.graph
    cur, shape = _input_shape(g, init)
    ops: list = []
    nodes = [n for n in g.node if n.op_type != "Constant"]
    for k, node in enumerate(nodes):
        label = f"node {k} '{node.name or node.op_type}'"
        op = node.op_type
        data_in = [i for i in node.input if i and i not in init]
        if op in ("Softmax", "LogSoftmax"):
            if k != len(nodes) - 1:
                raise ModelError(f"{label}: {op} is only supported as the last node")
            break
        if op in _REFUSED:
            raise ModelError(f"{label}: unsupported operator {op!r}: {_REFUSED[op]}")
        if data_in != [cur] and op in SUPPORTED_OPS:
            raise ModelError(f"{label} ({op}): the graph must be a single chain; this node reads "
                             f"{list(node.input)}, expected the output of the previous node {cur!r}")
        ops.append(_node_op(node, op, _attrs(node), init, cur, label))
        cur = node.output[0]
    return [o for o in ops if o is not None], shape


def _node_op(node, op: str, attrs: dict, init: dict, cur: str, label: str):
    """The IR operation of one node (None for a pass-through)."""
    if op == "Conv":
        return _conv(node, attrs, init, label)
    if op == "AveragePool":
        return _avgpool(attrs, label)
    if op == "GlobalAveragePool":
        return ir.AvgPool2d(None, None, label)   # the kernel is the whole plane
    if op == "BatchNormalization":
        return _batchnorm(node, attrs, init, label)
    if op == "Gemm":
        return _gemm(node, attrs, init, label)
    if op == "MatMul":
        m = init.get(node.input[1])
        if m is None or m.ndim != 2 or node.input[0] != cur:
            raise ModelError(f"{label}: MatMul needs a 2-D constant right operand")
        return ir.Dense(m.T, None, label)
    if op == "Add":
        return ir.Affine(1.0, _constant_operand(node, init, cur, label, "Add"), label)
    if op == "Mul":
        return ir.Affine(_constant_operand(node, init, cur, label, "Mul"), 0.0, label)
    if op == "Relu":
        return ir.ReLU(label)
    if op == "Flatten":
        if int(attrs.get("axis", 1)) != 1:
            raise ModelError(f"{label}: Flatten axis={attrs['axis']} is not supported (only axis=1)")
        return ir.flatten(label)
    if op == "Reshape":
        return _reshape(node, init, label)
    if op in _PASS_OPS:
        return None
    raise ModelError(f"{label}: unsupported operator {op!r}; supported: {', '.join(SUPPORTED_OPS)}")
