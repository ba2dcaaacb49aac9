"""Keras models (``.h5`` and ``.keras`` files, or a live ``tf.keras`` model) into the layer IR.

Files are read with h5py, zipfile and json -- TensorFlow is not needed:

* ``.h5`` (the legacy HDF5 format): the root attribute ``model_config`` (JSON) holds
  the architecture; ``model_weights/<layer>/`` holds each layer's arrays, in the
  order of its ``weight_names`` attribute;
* ``.keras`` (Keras 3): a zip with ``config.json`` (the architecture) and
  ``model.weights.h5``, where a layer's arrays are ``.../<layer>/vars/0``, ``vars/1`` ...

Supported layers of a ``Sequential`` model (or a functional chain): ``InputLayer``,
``Dense``, ``Conv2D`` (``valid``/``same`` padding, strides, no dilation,
``groups=1``, ``channels_last``), ``AveragePooling2D`` (``valid``),
``GlobalAveragePooling2D``, ``Flatten``, ``Reshape``, ``BatchNormalization`` (folded),
``ReLU``, ``Activation`` and the ``activation`` of Dense/Conv2D (``relu``,
``linear``, and ``softmax`` on the last layer), ``Dropout``.  Keras tensors are
``HWC``: the input is moved to ``CHW`` and back before a ``Flatten`` so that the
dense weights see Keras's order; the model's inputs are the Keras inputs flattened.
Anything else (``MaxPooling2D`` included) is refused naming the layer.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from ..model import ModelError, real_array
from . import layers as ir

__all__ = ["SUPPORTED_LAYERS", "keras_ops", "read_keras_file"]

SUPPORTED_LAYERS = ("InputLayer", "Dense", "Conv2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten",
                    "Reshape", "BatchNormalization", "ReLU", "Activation", "Dropout")


def read_keras_file(path) -> tuple[dict, dict]:
    """``(model config, {layer name: [arrays]})`` of a ``.h5`` or ``.keras`` file."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            return _read_keras_zip(path)
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise ModelError(f"{path}: no 'model_config' attribute: a weights-only .h5 file (save_weights) "
                                 f"has no architecture; save the whole model (model.save)")
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            root = f["model_weights"] if "model_weights" in f else f
            weights = {name: [np.asarray(root[name][w]) for w in _names(root[name].attrs.get("weight_names", []))]
                       for name in root}
        return config, weights
    except ModelError:
        raise
    except Exception as e:   # noqa: BLE001 - h5py/zip/JSON errors: one clear message
        raise ModelError(f"{path}: not a readable Keras model file ({type(e).__name__}: {e})") from None


def _names(raw) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in raw]


def _read_keras_zip(path: Path) -> tuple[dict, dict]:
    import io

    import h5py

    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if "config.json" not in names or "model.weights.h5" not in names:
            raise ModelError(f"{path}: a .keras file must hold config.json and model.weights.h5 (it has {names})")
        config = json.loads(z.read("config.json"))
        blob = z.read("model.weights.h5")
    weights: dict = {}
    with h5py.File(io.BytesIO(blob), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and name.endswith("/vars") or name == "vars":
                layer = name.rsplit("/", 2)[-2] if "/" in name else ""
                weights[layer] = [np.asarray(obj[k]) for k in sorted(obj.keys(), key=int)]
        f.visititems(visit)
    return config, weights


def _layer_list(config: dict) -> list[dict]:
    cls = config.get("class_name")
    cfg = config.get("config", {})
    if cls not in ("Sequential", "Functional", "Model"):
        raise ModelError(f"model class {cls!r} is not supported (Sequential or a functional chain)")
    layers = cfg.get("layers") if isinstance(cfg, dict) else cfg
    if not isinstance(layers, list) or not layers:
        raise ModelError("the model config has no layers")
    return layers


def _input_shape(layers: list[dict]) -> tuple:
    for layer in layers[:2]:
        c = layer.get("config", {})
        shape = c.get("batch_shape") or c.get("batch_input_shape")
        if shape:
            dims = shape[1:]
            if any(d is None or int(d) < 1 for d in dims):
                raise ModelError(f"layer {c.get('name')!r}: input shape {shape} must be known (but the batch axis)")
            return tuple(int(d) for d in dims)
    raise ModelError("the model config gives no input shape (an InputLayer with batch_shape)")


def _activation(name, label: str, last: bool) -> list:
    name = name.get("config", {}).get("name", name) if isinstance(name, dict) else name
    if name in (None, "linear"):
        return []
    if name == "relu":
        return [ir.ReLU(label + " (relu)")]
    if name == "softmax" and last:
        return []
    raise ModelError(f"{label}: activation {name!r} is not supported (relu, linear; softmax on the last layer)")


def _same_pads(size: tuple, kernel: tuple, stride: tuple) -> tuple:
    """TensorFlow's 'same' padding (top, left, bottom, right)."""
    pads = []
    for n, k, s in zip(size, kernel, stride):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads[0][0], pads[1][0], pads[0][1], pads[1][1]


def keras_ops(config: dict, weights: dict) -> tuple[list, tuple]:
    """The IR of a Keras model config plus its weights, and the input shape (Keras's, ``HWC``)."""
    layers = _layer_list(config)
    shape = _input_shape(layers)
    hwc = len(shape) == 3
    ops: list = [ir.Transpose((2, 0, 1), "input (HWC -> CHW)")] if hwc else []
    cur = (shape[2], shape[0], shape[1]) if hwc else shape   # the shape in the IR's order
    body = [l for l in layers if l.get("class_name") not in ("InputLayer",)]
    for k, layer in enumerate(body):
        cls, c = layer.get("class_name"), layer.get("config", {})
        name = c.get("name", f"#{k}")
        label = f"layer {name!r} ({cls})"
        new = _layer_ops(cls, c, weights.get(name, []), label, k == len(body) - 1, cur)
        for op in new:
            cur = _shape_after(op, cur)
        ops += new
    return ops, shape


def _shape_after(op, shape: tuple) -> tuple:
    """The IR shape after ``op`` (only what the Keras reader needs to place its transposes)."""
    from .layers import _step

    return _step(op, shape, 1 << 62)[2] if not isinstance(op, ir.ReLU) else shape


def _weights(arrays: list, n: int, label: str) -> list[np.ndarray]:
    if len(arrays) < n:
        raise ModelError(f"{label}: the file holds {len(arrays)} weight arrays for it, {n} are needed")
    return [real_array(a, f"{label}: weight {i}") for i, a in enumerate(arrays)]


def _layer_ops(cls: str, c: dict, arrays: list, label: str, last: bool, shape: tuple) -> list:
    if cls == "Dense":
        w = _weights(arrays, 1 + bool(c.get("use_bias", True)), label)
        if len(shape) != 1:
            raise ModelError(f"{label}: Dense on a {len(shape)}-D tensor is not supported (Flatten first)")
        return [ir.Dense(w[0].T, w[1] if len(w) > 1 else None, label)] + _activation(c.get("activation"), label, last)
    if cls == "Conv2D":
        return _conv(c, arrays, label, last, shape)
    if cls in ("AveragePooling2D", "MaxPooling2D"):
        if cls == "MaxPooling2D":
            raise ModelError(f"{label}: max pooling has no rate-coded equivalent here; use AveragePooling2D")
        if c.get("padding", "valid") != "valid":
            raise ModelError(f"{label}: padding={c.get('padding')!r} is not supported (only 'valid')")
        pool = tuple(c.get("pool_size", (2, 2)))
        return [ir.AvgPool2d(pool, tuple(c.get("strides") or pool), label)]
    if cls == "GlobalAveragePooling2D":
        return [ir.AvgPool2d(None, None, label), ir.flatten(label)]
    if cls == "Flatten":
        return ([ir.Transpose((1, 2, 0), label + " (CHW -> HWC)")] if len(shape) == 3 else []) + [ir.flatten(label)]
    if cls == "Reshape":
        target = tuple(int(d) for d in c.get("target_shape", ()))
        if len(shape) != 1 or len(target) != 3:
            raise ModelError(f"{label}: only a Reshape of a flat tensor to (height, width, channels) is supported")
        return [ir.Reshape(target, label), ir.Transpose((2, 0, 1), label + " (HWC -> CHW)")]
    if cls == "BatchNormalization":
        return [_batchnorm(c, arrays, label)]
    if cls == "ReLU":
        if any(c.get(k) not in (None, 0, 0.0) for k in ("negative_slope", "threshold")) or c.get("max_value"):
            raise ModelError(f"{label}: only a plain ReLU is supported (no max_value, negative_slope, threshold)")
        return [ir.ReLU(label)]
    if cls == "Activation":
        return _activation(c.get("activation"), label, last)
    if cls == "Dropout":
        return []
    raise ModelError(f"{label}: unsupported layer {cls!r}; supported: {', '.join(SUPPORTED_LAYERS)}")


def _conv(c: dict, arrays: list, label: str, last: bool, shape: tuple) -> list:
    if c.get("data_format", "channels_last") != "channels_last":
        raise ModelError(f"{label}: data_format={c.get('data_format')!r} is not supported (channels_last)")
    if tuple(c.get("dilation_rate", (1, 1))) not in ((1, 1), (1,)) or int(c.get("groups", 1)) != 1:
        raise ModelError(f"{label}: dilation_rate={c.get('dilation_rate')}, groups={c.get('groups')} are not "
                         f"supported (1 and 1)")
    w = _weights(arrays, 1 + bool(c.get("use_bias", True)), label)
    if w[0].ndim != 4:
        raise ModelError(f"{label}: kernel shape {w[0].shape} is not (kh, kw, in, out)")
    kernel = w[0].transpose(3, 2, 0, 1)   # (kh, kw, in, out) -> (out, in, kh, kw)
    stride = tuple(int(s) for s in c.get("strides", (1, 1)))
    padding = c.get("padding", "valid")
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        if len(shape) != 3:
            raise ModelError(f"{label}: Conv2D needs a (height, width, channels) input, not {shape}")
        pads = _same_pads(shape[1:], kernel.shape[2:], stride)
    else:
        raise ModelError(f"{label}: padding={padding!r} is not supported ('valid', 'same')")
    return [ir.Conv2d(kernel, w[1] if len(w) > 1 else None, stride, pads, label)] + \
        _activation(c.get("activation"), label, last)


def _batchnorm(c: dict, arrays: list, label: str) -> ir.Affine:
    center, scale = bool(c.get("center", True)), bool(c.get("scale", True))
    w = _weights(arrays, 2 + center + scale, label)
    gamma = w.pop(0) if scale else 1.0
    beta = w.pop(0) if center else 0.0
    mean, var = w[0], w[1]
    eps = float(c.get("epsilon", 1e-3))
    factor = gamma / np.sqrt(var + eps)
    return ir.Affine(factor, beta - mean * factor, label, per_channel=True)


def convert_keras(model, calibration=None, config="default", percentile: float = 99.9, steps: int = 64,
                  input_max: float = 1.0):
    """A Keras ``.h5``/``.keras`` file (path) or a live ``tf.keras`` model as an SnnModel.

    Calibration samples are Keras inputs: ``(n, height, width, channels)`` or flattened.
    See :func:`neurovm.host.importers.convert.convert_ops` for the other arguments.
    """
    from neurovm.config import DEFAULT_CONFIG

    from .convert import convert_ops

    if isinstance(model, (str, Path)):
        cfg, weights = read_keras_file(model)
        source = f"keras:{Path(model).name}"
    elif hasattr(model, "get_config") and hasattr(model, "layers"):
        cfg = {"class_name": "Sequential" if type(model).__name__ == "Sequential" else "Functional",
               "config": model.get_config()}
        weights = {layer.name: list(layer.get_weights()) for layer in model.layers}
        source = f"keras:{getattr(model, 'name', 'model')}"
    else:
        raise ModelError(f"convert_tensorflow takes a .h5/.keras path or a tf.keras model, not {type(model).__name__}")
    ops, shape = keras_ops(cfg, weights)
    return convert_ops(ops, shape, calibration, DEFAULT_CONFIG if config == "default" else config, percentile,
                       steps, {"source": source}, input_max)
