"""TFLite flatbuffers (float32 and fully int8-quantized) into the layer IR (docs/architecture.md §18).

The file is parsed with the ``tflite`` package (the flatbuffer schema's generated
readers) -- TensorFlow is not needed.  The model must have one subgraph whose
operators form one chain from its single input.  Supported operators:

* ``FULLY_CONNECTED`` (weights ``(out, in)``, optional bias, the input flattened
  in TFLite's ``HWC`` order, ``keep_num_dims`` false);
* ``CONV_2D`` (weights ``(out, kh, kw, in)``, ``SAME``/``VALID`` padding, strides,
  no dilation);
* ``AVERAGE_POOL_2D`` (``VALID`` padding);
* ``RESHAPE`` (batch axis kept; to a flat vector or from one to ``(h, w, c)``);
* ``QUANTIZE`` / ``DEQUANTIZE`` (identities on the real values the SNN carries);
* a last ``SOFTMAX`` / ``LOG_SOFTMAX`` (dropped: it does not change the argmax);
* fused activations ``NONE`` and ``RELU``.

``MAX_POOL_2D`` is refused (no rate-coded max without lateral inhibition), as is
every other operator, fused activation or option, naming the operator's index
in the subgraph and its name.

Quantized tensors are read as real values ``scale * (q - zero_point)``, per tensor
or per channel (``quantized_dimension``); an int8 weight tensor quantized per tensor
reaches the chip unchanged: TFLite's symmetric scheme puts ``max|q| = 127`` =
``2^(weight_bits-1) - 1``, so the converter's per-layer scale ``wmax / max|W'|``
maps every ``q`` onto itself and the tensor's scale and the normalisation end up
in the threshold ``vth_mant`` (``weight_exp = 0``); int32 biases (scale ``s_in *
s_w``) become ``bias_mant << bias_exp``.  Per-channel scales share one 8-bit grid
per layer (the chip's threshold is per layer, ``weight_exp`` per core): channel
``o``'s weights are ``round(q * s_o / max s)``, exact for the channel with the
largest scale.  Activation quantization (the int8 tensors between layers) is not
modelled: the SNN's rates carry the real activations.  The SNN's inputs are real
values: for a model whose input tensor is int8, feed ``scale * (q - zero_point)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..model import ModelError, real_array
from . import layers as ir
from .keras import _same_pads

__all__ = ["SUPPORTED_OPS", "read_tflite", "tflite_ops", "convert_tflite"]

SUPPORTED_OPS = ("FULLY_CONNECTED", "CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "QUANTIZE", "DEQUANTIZE",
                 "SOFTMAX (last)", "LOG_SOFTMAX (last)")
_REFUSED = {"MAX_POOL_2D": "max pooling has no rate-coded equivalent here (it needs lateral inhibition); "
                           "train with average pooling (AVERAGE_POOL_2D) instead"}
#: TensorType -> numpy dtype of the types a model's tensors may have here.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
_FUSED_NONE, _FUSED_RELU = 0, 1
_PAD_SAME, _PAD_VALID = 0, 1
#: The largest .tflite file read: a model for the biggest chip never needs more.
MAX_FILE_BYTES = 1 << 28


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def read_tflite(path, limit: int):
    """The ``tflite.Model`` of the file at ``path``, its identifier and size checked.

    Parameters
    ----------
    limit : int
        The most values any one tensor may hold (the chip's synapse memory).
    """
    import tflite

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not a .tflite file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelError(f"{path}: {size} bytes; a .tflite model for this chip has at most {MAX_FILE_BYTES}")
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite flatbuffer (the file identifier at bytes 4..7 is "
                         f"{bytes(buf[4:8])!r}, 'TFL3' is required)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() != 1:
            raise ModelError(f"{path}: the model has {model.SubgraphsLength()} subgraphs; exactly one is supported")
        _check_tensor_sizes(model, limit, path)
    except ModelError:
        raise
    except Exception as e:   # noqa: BLE001 - a damaged flatbuffer raises anything: one clear message
        raise ModelError(f"{path}: not a readable TFLite model ({type(e).__name__}: {e})") from None
    return model


def _check_tensor_sizes(model, limit: int, path: Path) -> None:
    """Refuse a tensor whose declared shape no model for this chip can use, before any data is read."""
    g = model.Subgraphs(0)
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        dims = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        if any(d < -1 for d in dims) or math.prod(max(d, 1) for d in dims) > limit:
            raise ModelError(f"{path}: tensor {i} {_name(t)!r}: shape {dims} is not possible for this chip "
                             f"(at most {limit} values, the chip's synapse memory)")


def _name(t) -> str:
    n = t.Name()
    return n.decode(errors="replace") if isinstance(n, bytes) else str(n)


class _Graph:
    """The subgraph's tensors and operators, read on demand (constants dequantized to float64)."""

    def __init__(self, model):
        import tflite

        self.model = model
        self.g = model.Subgraphs(0)
        self.op_names = _enum_names(tflite.BuiltinOperator)
        self.act_names = _enum_names(tflite.ActivationFunctionType)

    def opcode(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        return self.op_names.get(builtin, f"builtin code {builtin}")

    def shape(self, index: int) -> tuple:
        t = self.g.Tensors(index)
        return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    def constant(self, index: int, label: str, what: str) -> np.ndarray | None:
        """Tensor ``index`` as real values (dequantized), or None when the graph computes it."""
        if index < 0:
            return None
        t = self.g.Tensors(index)
        buf = self.model.Buffers(t.Buffer())
        if buf.Offset() > 1:
            raise ModelError(f"{label}: {what} tensor {_name(t)!r} is stored outside the flatbuffer "
                             f"(offset {buf.Offset()}); not supported")
        if buf.DataLength() == 0:
            return None
        dtype = _DTYPES.get(t.Type())
        if dtype is None:
            raise ModelError(f"{label}: {what} tensor {_name(t)!r} has TensorType {t.Type()}; supported: float32, "
                             f"float16, int8, uint8, int16, int32, int64")
        raw = buf.DataAsNumpy().tobytes()
        shape = self.shape(index)
        if len(raw) != math.prod(shape) * np.dtype(dtype).itemsize:
            raise ModelError(f"{label}: {what} tensor {_name(t)!r} holds {len(raw)} bytes, its shape {list(shape)} "
                             f"of {np.dtype(dtype).name} needs {math.prod(shape) * np.dtype(dtype).itemsize}")
        a = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.float64)
        return real_array(self._dequantize(t, a, label, what), f"{label}: {what}")

    @staticmethod
    def _dequantize(t, a: np.ndarray, label: str, what: str) -> np.ndarray:
        q = t.Quantization()
        if q is None or q.ScaleLength() == 0 or t.Type() in (0, 1):
            return a
        scale = q.ScaleAsNumpy().astype(np.float64)
        zero = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros(scale.size)
        if scale.size == 1:
            return (a - zero[0]) * scale[0]
        axis = int(q.QuantizedDimension())
        if axis >= a.ndim or a.shape[axis] != scale.size or zero.size not in (1, scale.size):
            raise ModelError(f"{label}: {what}: {scale.size} per-channel scales on axis {axis} do not fit "
                             f"its shape {list(a.shape)}")
        shape = [1] * a.ndim
        shape[axis] = scale.size
        return (a - zero.reshape(shape if zero.size > 1 else [1] * a.ndim)) * scale.reshape(shape)

    def activation(self, code: int, label: str) -> list:
        if code == _FUSED_NONE:
            return []
        if code == _FUSED_RELU:
            return [ir.ReLU(label + " (fused RELU)")]
        raise ModelError(f"{label}: fused activation {self.act_names.get(code, code)} is not supported "
                         f"(NONE, RELU)")


def _input(graph: _Graph) -> tuple[int, tuple]:
    g = graph.g
    if g.InputsLength() != 1:
        raise ModelError(f"the TFLite subgraph must have one input, it has {g.InputsLength()}")
    index = int(g.Inputs(0))
    shape = graph.shape(index)
    if len(shape) not in (2, 4) or shape[0] not in (1, -1) or min(shape[1:]) < 1:
        raise ModelError(f"input tensor {index}: shape {list(shape)}; (1, features) or (1, height, width, "
                         f"channels) is supported")
    return index, shape[1:]


def _options(op, cls):
    table = op.BuiltinOptions()
    if table is None:
        return None
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def tflite_ops(model) -> tuple[list, tuple]:
    """The chain of the model's operators as IR operations, and the input shape (TFLite's, ``HWC``)."""
    graph = _Graph(model)
    g = graph.g
    cur, shape = _input(graph)
    hwc = len(shape) == 3
    ops: list = [ir.Transpose((2, 0, 1), "input (HWC -> CHW)")] if hwc else []
    state = {"shape": (shape[2], shape[0], shape[1]) if hwc else shape}   # the IR's (CHW) shape
    n = g.OperatorsLength()
    for k in range(n):
        op = g.Operators(k)
        name = graph.opcode(op)
        label = f"operator {k} ({name})"
        if name in ("SOFTMAX", "LOG_SOFTMAX"):
            if k != n - 1:
                raise ModelError(f"{label}: {name} is only supported as the last operator")
            break
        if name in _REFUSED:
            raise ModelError(f"{label}: unsupported operator: {_REFUSED[name]}")
        if name not in SUPPORTED_OPS:
            raise ModelError(f"{label}: unsupported operator; supported: {', '.join(SUPPORTED_OPS)}")
        inputs = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        if not inputs or inputs[0] != cur:
            raise ModelError(f"{label}: the graph must be a single chain; this operator reads tensors {inputs}, "
                             f"expected the previous output, tensor {cur}")
        new = _op(graph, name, op, inputs, label, state["shape"])
        for o in new:
            if not isinstance(o, ir.ReLU):
                state["shape"] = ir._step(o, state["shape"], 1 << 62)[2]
        ops += new
        cur = int(op.Outputs(0))
    return ops, shape


def _op(graph: _Graph, name: str, op, inputs: list, label: str, shape: tuple) -> list:
    import tflite

    if name in ("QUANTIZE", "DEQUANTIZE"):
        return []
    if name == "FULLY_CONNECTED":
        opts = _options(op, tflite.FullyConnectedOptions)
        if opts is not None and (opts.KeepNumDims() or opts.WeightsFormat() != 0):
            raise ModelError(f"{label}: keep_num_dims={opts.KeepNumDims()}, weights_format={opts.WeightsFormat()} "
                             f"are not supported (false, DEFAULT)")
        w = _required(graph, inputs, 1, label, "weights")
        if w.ndim != 2:
            raise ModelError(f"{label}: weights shape {list(w.shape)} is not (outputs, inputs)")
        b = graph.constant(inputs[2], label, "bias") if len(inputs) > 2 else None
        flat = ([ir.Transpose((1, 2, 0), label + " (CHW -> HWC)")] if len(shape) == 3 else []) + \
            ([ir.flatten(label + " (flatten)")] if len(shape) != 1 else [])
        return flat + [ir.Dense(w, b, label)] + graph.activation(opts.FusedActivationFunction() if opts else 0, label)
    if name == "CONV_2D":
        return _conv(graph, op, inputs, label, shape)
    if name == "AVERAGE_POOL_2D":
        opts = _options(op, tflite.Pool2DOptions)
        if opts is None or opts.Padding() != _PAD_VALID:
            raise ModelError(f"{label}: only VALID padding is supported (SAME averages over fewer inputs at "
                             f"the borders)")
        kernel, stride = (opts.FilterHeight(), opts.FilterWidth()), (opts.StrideH(), opts.StrideW())
        return [ir.AvgPool2d(kernel, stride, label)] + graph.activation(opts.FusedActivationFunction(), label)
    return _reshape(graph, op, inputs, label, shape)


def _required(graph: _Graph, inputs: list, i: int, label: str, what: str) -> np.ndarray:
    a = graph.constant(inputs[i], label, what) if len(inputs) > i else None
    if a is None:
        raise ModelError(f"{label}: {what} must be a constant tensor of the file")
    return a


def _conv(graph: _Graph, op, inputs: list, label: str, shape: tuple) -> list:
    import tflite

    opts = _options(op, tflite.Conv2DOptions)
    if opts is None:
        raise ModelError(f"{label}: Conv2DOptions are missing")
    if opts.DilationHFactor() != 1 or opts.DilationWFactor() != 1:
        raise ModelError(f"{label}: dilation {opts.DilationHFactor()}x{opts.DilationWFactor()} is not supported "
                         f"(1x1)")
    w = _required(graph, inputs, 1, label, "filter")
    if w.ndim != 4:
        raise ModelError(f"{label}: filter shape {list(w.shape)} is not (out, kh, kw, in)")
    if len(shape) != 3 or w.shape[3] != shape[0]:
        raise ModelError(f"{label}: filter shape {list(w.shape)} does not fit an input of {shape[0] if shape else 0} "
                         f"channels (groups are not supported)")
    kernel = w.transpose(0, 3, 1, 2)     # (out, kh, kw, in) -> (out, in, kh, kw)
    stride = (opts.StrideH(), opts.StrideW())
    if opts.Padding() == _PAD_SAME:
        pads = _same_pads(shape[1:], kernel.shape[2:], stride)
    elif opts.Padding() == _PAD_VALID:
        pads = (0, 0, 0, 0)
    else:
        raise ModelError(f"{label}: padding {opts.Padding()} is not supported (SAME, VALID)")
    b = graph.constant(inputs[2], label, "bias") if len(inputs) > 2 else None
    return [ir.Conv2d(kernel, b, stride, pads, label)] + graph.activation(opts.FusedActivationFunction(), label)


def _reshape(graph: _Graph, op, inputs: list, label: str, shape: tuple) -> list:
    import tflite

    target = graph.constant(inputs[1], label, "shape") if len(inputs) > 1 else None
    if target is None:
        opts = _options(op, tflite.ReshapeOptions)
        target = opts.NewShapeAsNumpy() if opts is not None and opts.NewShapeLength() else None
    if target is None:
        target = np.asarray(graph.shape(int(op.Outputs(0))))
    target = [int(v) for v in np.ravel(target)]
    if not target or target[0] not in (1, -1):
        raise ModelError(f"{label}: reshape to {target}; the first axis must stay the batch axis (1)")
    rest = target[1:]
    if len(rest) == 1:
        return ([ir.Transpose((1, 2, 0), label + " (CHW -> HWC)")] if len(shape) == 3 else []) + \
            [ir.Reshape(tuple(rest), label)]
    if len(rest) == 3 and len(shape) == 1:
        return [ir.Reshape(tuple(rest), label), ir.Transpose((2, 0, 1), label + " (HWC -> CHW)")]
    raise ModelError(f"{label}: reshape of {len(shape)}-D to {target} is not supported (to a flat vector, or "
                     f"from one to (1, height, width, channels))")


def convert_tflite(path, calibration=None, config="default", percentile: float = 99.9, steps: int = 64,
                   input_max: float = 1.0):
    """A ``.tflite`` file (float32 or int8-quantized) as an :class:`~neurovm.host.model.SnnModel`.

    Parameters
    ----------
    path : str or Path
        The ``.tflite`` flatbuffer.
    calibration : array_like, optional
        Real-valued input samples ``(n, height, width, channels)`` (TFLite's layout) or
        flattened; without them the normalisation is data-free (a ``CalibrationWarning``).

    See :func:`neurovm.host.importers.convert.convert_ops` for the other arguments; the
    operators understood are listed in this module's docstring.
    """
    from neurovm.config import DEFAULT_CONFIG, ChipConfig

    from .convert import convert_ops

    cfg = DEFAULT_CONFIG if config in ("default", "auto") or not isinstance(config, ChipConfig) else config
    limit = (256 if config == "auto" else cfg.num_cores) * cfg.synapses_per_core
    model = read_tflite(path, limit)
    try:
        ops, shape = tflite_ops(model)
    except ModelError as e:
        raise ModelError(f"{Path(path).name}: {e}") from None
    except Exception as e:   # noqa: BLE001 - a damaged flatbuffer fails anywhere in its readers
        raise ModelError(f"{path}: not a readable TFLite model ({type(e).__name__}: {e})") from None
    return convert_ops(ops, shape, calibration, DEFAULT_CONFIG if config == "default" else config, percentile,
                       steps, {"source": f"tflite:{Path(path).name}"}, input_max)
