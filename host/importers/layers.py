"""The layer IR every importer produces, and its lowering to the SNN's affine layers.

An importer (ONNX, Keras, TFLite, PyTorch, NIR) turns a file into a list of
operations on one tensor, starting from the model's input shape:

* :class:`Dense` -- ``y = W x + b`` on a flat vector (``W`` is ``(out, in)``);
* :class:`Conv2d` -- 2-D convolution on ``(C, H, W)``: weight ``(O, C, kh, kw)``,
  stride, zero padding ``(top, left, bottom, right)``, no dilation, ``groups=1``;
* :class:`AvgPool2d` -- average pooling on ``(C, H, W)`` (kernel, stride, no padding);
* :class:`SumPool2d` -- the same without the division (NIR's ``SumPool2d``);
* :class:`Reshape` -- a new shape (``Flatten`` is ``Reshape((n,))``): the flat
  row-major order is unchanged;
* :class:`Transpose` -- a permutation of the axes (Keras/TFLite tensors are ``HWC``;
  the importers move them to ``CHW`` and back where a ``Flatten`` needs it);
* :class:`Affine` -- ``y = scale * x + shift`` broadcast over the tensor (a folded
  ``BatchNormalization``, a bias ``Add``, NIR's ``Scale``);
* :class:`ReLU` -- the only non-linearity: it ends a spiking layer.

:func:`lower` composes the linear operations between two ReLUs into one sparse
matrix and bias (a convolution becomes its connectivity with the shared weights
expanded; a bias, a batch normalisation or a reshape folds into the layer before),
so the SNN has one population per ReLU plus the output -- except that a layer whose
outputs cannot be negative (an average pool of ReLU outputs) is kept as a population
of its own when composing it with the next operation would need more synapses than
the two layers (a pool before a convolution or a dense layer).  This is exact: the ANN computed from
the lowered layers equals the original one.  Every shape that does not fit is
refused naming the operation (``layer``) it comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..model import ModelError, real_array

__all__ = ["Dense", "Conv2d", "AvgPool2d", "SumPool2d", "Reshape", "Transpose", "Affine", "ReLU",
           "LoweredLayer", "lower", "flatten"]


@dataclass
class Dense:
    weight: np.ndarray             # (out, in)
    bias: np.ndarray | None = None
    label: str = "Dense"


@dataclass
class Conv2d:
    weight: np.ndarray             # (O, C, kh, kw)
    bias: np.ndarray | None = None
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)     # top, left, bottom, right
    label: str = "Conv2d"


@dataclass
class AvgPool2d:
    kernel: tuple | None           # None: global pooling (the whole plane)
    stride: tuple | None = None    # default: the kernel
    label: str = "AvgPool2d"
    divide: bool = True


def SumPool2d(kernel, stride=None, label: str = "SumPool2d") -> AvgPool2d:   # noqa: N802 - an IR constructor
    """Sum pooling: an :class:`AvgPool2d` without the division by the window size."""
    return AvgPool2d(kernel, stride, label, divide=False)


@dataclass
class Reshape:
    shape: tuple                   # the new shape, one entry may be -1
    label: str = "Reshape"


def flatten(label: str = "Flatten") -> Reshape:
    """``Flatten``: a :class:`Reshape` to one axis."""
    return Reshape((-1,), label)


@dataclass
class Transpose:
    perm: tuple
    label: str = "Transpose"


@dataclass
class Affine:
    scale: np.ndarray | float = 1.0   # broadcast to the tensor's shape (numpy rules, leading 1s dropped)
    shift: np.ndarray | float = 0.0
    label: str = "Affine"
    per_channel: bool = False         # 1-D scale/shift along the first axis (a BatchNorm over CHW)


@dataclass
class ReLU:
    label: str = "Relu"


@dataclass
class LoweredLayer:
    """One SNN layer: ``y = W x + b`` (``W`` sparse ``(out, in)``), then ReLU except for the output;
    ``shape`` is its output's tensor shape, ``source`` the operations it was composed from."""

    weight: sp.csr_matrix
    bias: np.ndarray
    relu: bool
    shape: tuple
    source: list


def _pair(x, label: str, what: str) -> tuple[int, int]:
    t = tuple(int(v) for v in (x if np.ndim(x) else (x, x)))
    if len(t) != 2 or min(t) < 1:
        raise ModelError(f"{label}: {what} {x!r} must be two integers >= 1")
    return t


def _conv_matrix(op: Conv2d, shape: tuple, max_entries: int) -> tuple[sp.csr_matrix, np.ndarray, tuple]:
    if len(shape) != 3:
        raise ModelError(f"{op.label}: a 2-D convolution needs a (channels, height, width) input, not shape {shape}")
    w = real_array(op.weight, f"{op.label}: weight")
    if w.ndim != 4 or w.shape[1] != shape[0]:
        raise ModelError(f"{op.label}: weight shape {w.shape} must be (out_channels, {shape[0]}, kh, kw) "
                         f"for an input of shape {shape}")
    o_ch, c_in, kh, kw = w.shape
    sh, sw = _pair(op.stride, op.label, "stride")
    pads = tuple(int(p) for p in op.pads)
    if len(pads) != 4 or min(pads) < 0:
        raise ModelError(f"{op.label}: pads {op.pads!r} must be four integers >= 0 (top, left, bottom, right)")
    _, h, wd = shape
    ho, wo = (h + pads[0] + pads[2] - kh) // sh + 1, (wd + pads[1] + pads[3] - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ModelError(f"{op.label}: kernel {kh}x{kw} does not fit the padded input {shape}")
    if o_ch * ho * wo * c_in * kh * kw > max_entries:
        raise ModelError(f"{op.label}: {o_ch * ho * wo * c_in * kh * kw} synapses before padding is removed; "
                         f"more than this chip's synapse memory ({max_entries})")
    o, oy, ox, c, ky, kx = np.meshgrid(np.arange(o_ch), np.arange(ho), np.arange(wo), np.arange(c_in),
                                       np.arange(kh), np.arange(kw), indexing="ij")
    iy, ix = oy * sh - pads[0] + ky, ox * sw - pads[1] + kx
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
    rows = ((o * ho + oy) * wo + ox)[ok]
    cols = ((c * h + iy) * wd + ix)[ok]
    vals = w[o[ok], c[ok], ky[ok], kx[ok]]
    out_shape = (o_ch, ho, wo)
    m = sp.csr_matrix((vals, (rows, cols)), shape=(math.prod(out_shape), math.prod(shape)))
    bias = _bias(op.bias, o_ch, op.label)
    return m, np.repeat(bias, ho * wo), out_shape


def _bias(b, n: int, label: str) -> np.ndarray:
    if b is None:
        return np.zeros(n)
    b = real_array(b, f"{label}: bias").ravel()
    if b.size != n:
        raise ModelError(f"{label}: bias has {b.size} values for {n} outputs")
    return b


def _pool_matrix(op: AvgPool2d, shape: tuple) -> tuple[sp.csr_matrix, np.ndarray, tuple]:
    if len(shape) != 3:
        raise ModelError(f"{op.label}: 2-D pooling needs a (channels, height, width) input, not shape {shape}")
    if len(shape) == 3 and op.kernel is None:   # global pooling: the whole plane
        kh, kw = shape[1], shape[2]
    else:
        kh, kw = _pair(op.kernel, op.label, "kernel")
    sh, sw = _pair(op.stride if op.stride is not None else (kh, kw), op.label, "stride")
    c_in, h, wd = shape
    ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ModelError(f"{op.label}: pooling window {kh}x{kw} is larger than the input {shape}")
    c, oy, ox, ky, kx = np.meshgrid(np.arange(c_in), np.arange(ho), np.arange(wo), np.arange(kh), np.arange(kw),
                                    indexing="ij")
    rows = ((c * ho + oy) * wo + ox).ravel()
    cols = ((c * h + oy * sh + ky) * wd + ox * sw + kx).ravel()
    value = 1.0 / (kh * kw) if op.divide else 1.0
    out_shape = (c_in, ho, wo)
    m = sp.csr_matrix((np.full(rows.size, value), (rows, cols)), shape=(math.prod(out_shape), math.prod(shape)))
    return m, np.zeros(m.shape[0]), out_shape


def _reshape(op: Reshape, shape: tuple) -> tuple:
    new = [int(d) for d in op.shape]
    n = math.prod(shape)
    if new.count(-1) > 1 or any(d < -1 or d == 0 for d in new):
        raise ModelError(f"{op.label}: target shape {tuple(op.shape)} is not supported (positive sizes, one -1)")
    if -1 in new:
        rest = math.prod(d for d in new if d != -1)
        if n % rest:
            raise ModelError(f"{op.label}: cannot reshape {shape} ({n} values) to {tuple(op.shape)}")
        new[new.index(-1)] = n // rest
    if math.prod(new) != n:
        raise ModelError(f"{op.label}: cannot reshape {shape} ({n} values) to {tuple(new)}")
    return tuple(new)


def _transpose_matrix(op: Transpose, shape: tuple) -> tuple[sp.csr_matrix, tuple]:
    perm = tuple(int(p) for p in op.perm)
    if sorted(perm) != list(range(len(shape))):
        raise ModelError(f"{op.label}: permutation {perm} does not fit a tensor of shape {shape}")
    idx = np.arange(math.prod(shape)).reshape(shape).transpose(perm).ravel()
    n = idx.size
    out_shape = tuple(shape[p] for p in perm)
    return sp.csr_matrix((np.ones(n), (np.arange(n), idx)), shape=(n, n)), out_shape


def _fit_axes(a: np.ndarray, shape: tuple, per_channel: bool) -> np.ndarray:
    """``a`` shaped to broadcast over ``shape``: leading size-1 axes (a batch axis) dropped; a
    per-channel vector put on the first axis."""
    while a.ndim > len(shape) and a.shape[0] == 1:
        a = a[0]
    if per_channel and a.ndim == 1:
        a = a.reshape((a.size,) + (1,) * (len(shape) - 1))
    return a


def _affine(op: Affine, shape: tuple) -> tuple[sp.csr_matrix, np.ndarray]:
    try:
        scale = np.broadcast_to(_fit_axes(real_array(op.scale, f"{op.label}: scale"), shape, op.per_channel),
                                shape).ravel()
        shift = np.broadcast_to(_fit_axes(real_array(op.shift, f"{op.label}: shift"), shape, op.per_channel),
                                shape).ravel()
    except ValueError as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"{op.label}: scale {np.shape(op.scale)} / shift {np.shape(op.shift)} do not broadcast "
                         f"to the tensor's shape {shape}") from None
    return sp.diags(scale, format="csr"), shift.copy()


def _dense(op: Dense, shape: tuple) -> tuple[sp.csr_matrix, np.ndarray, tuple]:
    w = real_array(op.weight, f"{op.label}: weight")
    n = math.prod(shape)
    if w.ndim != 2 or w.shape[1] != n:
        raise ModelError(f"{op.label}: weight shape {w.shape} must be (outputs, {n}) for an input of shape {shape}"
                         + ("; a Flatten is missing before it" if len(shape) > 1 and w.ndim == 2 else ""))
    return sp.csr_matrix(w), _bias(op.bias, w.shape[0], op.label), (w.shape[0],)


def _step(op, shape: tuple, max_entries: int):
    """``(matrix, bias, new shape)`` of one linear operation on a tensor of ``shape``."""
    if isinstance(op, Dense):
        return _dense(op, shape)
    if isinstance(op, Conv2d):
        return _conv_matrix(op, shape, max_entries)
    if isinstance(op, AvgPool2d):
        return _pool_matrix(op, shape)
    if isinstance(op, Reshape):
        new = _reshape(op, shape)
        return None, None, new
    if isinstance(op, Transpose):
        m, new = _transpose_matrix(op, shape)
        return m, np.zeros(m.shape[0]), new
    if isinstance(op, Affine):
        m, b = _affine(op, shape)
        return m, b, shape
    raise ModelError(f"{getattr(op, 'label', op)}: {type(op).__name__} is not an operation of the layer IR")


#: A non-negative layer is kept apart when composing it with the next operation would need more than
#: this many times the synapses of the two layers (each population kept adds a step of latency).
_CUT_FACTOR = 4


def _cut_before(mat: sp.csr_matrix, bias: np.ndarray, m: sp.csr_matrix) -> bool:
    """Whether to end the layer ``(mat, bias)`` before applying ``m``: when composing them would need
    more synapses than keeping two layers, and the layer's outputs are never negative (its inputs are
    spike rates or ReLU outputs, ``mat`` and ``bias`` have no negative entry -- an average pool, a
    positive scale), so a ReLU after it changes nothing and the cut is exact."""
    if (mat.data < 0).any() or (bias < 0).any():
        return False
    return (abs(m) @ abs(mat)).nnz > _CUT_FACTOR * (mat.nnz + m.nnz)


def lower(ops: list, input_shape: tuple, max_entries: int) -> list[LoweredLayer]:
    """Compose ``ops`` (applied to a tensor of ``input_shape``) into SNN layers, one per ReLU plus the output.

    Parameters
    ----------
    max_entries : int
        The most synapses any one layer may have (the chip's synapse memory); a composed
        layer with more is refused naming the operations it came from.
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise ModelError(f"the model's input shape {input_shape} must have positive sizes")
    layers: list[LoweredLayer] = []
    mat, bias, source = None, np.zeros(math.prod(shape)), []
    for op in ops:
        if isinstance(op, ReLU):
            if mat is None:
                raise ModelError(f"{op.label}: a ReLU must follow a linear layer (Dense, Conv2d, pooling, ...)")
            layers.append(LoweredLayer(mat.tocsr(), bias, True, shape, source))
            mat, bias, source = None, np.zeros(math.prod(shape)), []
            continue
        before = shape
        m, b, shape = _step(op, shape, max_entries)
        if m is None:
            source.append(op.label)
            continue
        if mat is not None and _cut_before(mat, bias, m):
            layers.append(LoweredLayer(mat.tocsr(), bias, True, before, source))
            mat, bias, source = None, np.zeros(mat.shape[0]), []
        source.append(op.label)
        mat = m if mat is None else (m @ mat)
        bias = m @ bias + b
        mat.eliminate_zeros()
        if mat.nnz > max_entries:
            raise ModelError(f"{op.label}: the layer made of {', '.join(source)} has {mat.nnz} synapses; "
                             f"this chip's synapse memory holds {max_entries}")
    if mat is None:
        raise ModelError("the model must end with a linear layer (its outputs are the class scores), "
                         f"not with {source[-1] if source else 'a ReLU'}")
    layers.append(LoweredLayer(mat.tocsr(), bias, False, shape, source))
    return layers
