"""TFLite import: .tflite files written here with flatbuffers.Builder and tflite's generated builder
functions (no TensorFlow): float32 and int8 (per-tensor and per-channel) MLPs and CNNs."""

import warnings

import flatbuffers
import numpy as np
import pytest
import tflite

import neurovm
from neurovm.examples import load_digits_split
from neurovm.host.importers.convert import CalibrationWarning, check_forward
from neurovm.host.importers.tflite import read_tflite, tflite_ops
from neurovm.host.model import ModelError

FLOAT32, INT32, INT8 = 0, 2, 9


# ---- a small .tflite writer ------------------------------------------------------------------
class TfliteWriter:
    """Collects tensors, buffers and operators of one subgraph; ``save`` writes the flatbuffer."""

    def __init__(self):
        self.tensors, self.buffers, self.ops, self.codes = [], [b""], [], []

    def tensor(self, shape, ttype=FLOAT32, data=None, quant=None, name=None) -> int:
        """A tensor (constant when ``data`` is given, raw bytes); ``quant`` = (scales, zero_points, axis)."""
        buf = 0
        if data is not None:
            self.buffers.append(data)
            buf = len(self.buffers) - 1
        self.tensors.append((list(shape), ttype, buf, quant, name or f"t{len(self.tensors)}"))
        return len(self.tensors) - 1

    def op(self, code: int, inputs, outputs, options=None):
        """``options``: (BuiltinOptions type, function(builder) -> table offset)."""
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), list(inputs), list(outputs), options))

    def save(self, path, inputs, outputs):
        b = flatbuffers.Builder(1024)

        def ivec(start, values, dtype="Int32"):
            start(b, len(values))
            for v in reversed(values):
                getattr(b, f"Prepend{dtype}")(v)
            return b.EndVector()

        buffers = []
        for data in self.buffers:
            vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
            tflite.BufferStart(b)
            if vec is not None:
                tflite.BufferAddData(b, vec)
            buffers.append(tflite.BufferEnd(b))
        tensors = []
        for shape, ttype, buf, quant, name in self.tensors:
            name_off = b.CreateString(name)
            shape_off = ivec(tflite.TensorStartShapeVector, shape)
            q_off = None
            if quant is not None:
                scales, zeros, axis = quant
                s_off = b.CreateNumpyVector(np.asarray(scales, np.float32))
                z_off = b.CreateNumpyVector(np.asarray(zeros, np.int64))
                tflite.QuantizationParametersStart(b)
                tflite.QuantizationParametersAddScale(b, s_off)
                tflite.QuantizationParametersAddZeroPoint(b, z_off)
                tflite.QuantizationParametersAddQuantizedDimension(b, axis)
                q_off = tflite.QuantizationParametersEnd(b)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape_off)
            tflite.TensorAddType(b, ttype)
            tflite.TensorAddBuffer(b, buf)
            tflite.TensorAddName(b, name_off)
            if q_off is not None:
                tflite.TensorAddQuantization(b, q_off)
            tensors.append(tflite.TensorEnd(b))
        ops = []
        for code, ins, outs, options in self.ops:
            opt = options[1](b) if options else None
            in_off = ivec(tflite.OperatorStartInputsVector, ins)
            out_off = ivec(tflite.OperatorStartOutputsVector, outs)
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, code)
            tflite.OperatorAddInputs(b, in_off)
            tflite.OperatorAddOutputs(b, out_off)
            if options:
                tflite.OperatorAddBuiltinOptionsType(b, options[0])
                tflite.OperatorAddBuiltinOptions(b, opt)
            ops.append(tflite.OperatorEnd(b))

        def tvec(start, offsets):
            start(b, len(offsets))
            for o in reversed(offsets):
                b.PrependUOffsetTRelative(o)
            return b.EndVector()

        t_vec = tvec(tflite.SubGraphStartTensorsVector, tensors)
        o_vec = tvec(tflite.SubGraphStartOperatorsVector, ops)
        in_vec = ivec(tflite.SubGraphStartInputsVector, inputs)
        out_vec = ivec(tflite.SubGraphStartOutputsVector, outputs)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, t_vec)
        tflite.SubGraphAddInputs(b, in_vec)
        tflite.SubGraphAddOutputs(b, out_vec)
        tflite.SubGraphAddOperators(b, o_vec)
        sub = tflite.SubGraphEnd(b)
        codes = []
        for code in self.codes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            codes.append(tflite.OperatorCodeEnd(b))
        c_vec = tvec(tflite.ModelStartOperatorCodesVector, codes)
        s_vec = tvec(tflite.ModelStartSubgraphsVector, [sub])
        b_vec = tvec(tflite.ModelStartBuffersVector, buffers)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, c_vec)
        tflite.ModelAddSubgraphs(b, s_vec)
        tflite.ModelAddBuffers(b, b_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        path.write_bytes(bytes(b.Output()))


def fc_options(relu: bool):
    def make(b):
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(b, 1 if relu else 0)
        return tflite.FullyConnectedOptionsEnd(b)
    return tflite.BuiltinOptions.FullyConnectedOptions, make


def conv_options(relu: bool, padding: int = 0, stride: int = 1):
    def make(b):
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, padding)
        tflite.Conv2DOptionsAddStrideW(b, stride)
        tflite.Conv2DOptionsAddStrideH(b, stride)
        tflite.Conv2DOptionsAddDilationWFactor(b, 1)
        tflite.Conv2DOptionsAddDilationHFactor(b, 1)
        tflite.Conv2DOptionsAddFusedActivationFunction(b, 1 if relu else 0)
        return tflite.Conv2DOptionsEnd(b)
    return tflite.BuiltinOptions.Conv2DOptions, make


def pool_options(k: int):
    def make(b):
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, 1)
        tflite.Pool2DOptionsAddStrideW(b, k)
        tflite.Pool2DOptionsAddStrideH(b, k)
        tflite.Pool2DOptionsAddFilterWidth(b, k)
        tflite.Pool2DOptionsAddFilterHeight(b, k)
        return tflite.Pool2DOptionsEnd(b)
    return tflite.BuiltinOptions.Pool2DOptions, make


def activation_quant(lo: float, hi: float):
    """TFLite's asymmetric int8 quantization of a tensor whose values lie in [lo, hi] (0 included)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1 / 255
    return [scale], [int(round(-128 - lo / scale))], 0


def quantize_symmetric(w, axis=None):
    """int8 weights as TFLite makes them: scale = max|w| / 127 per tensor or per ``axis`` channel."""
    if axis is None:
        scale = np.array([max(np.abs(w).max(), 1e-12) / 127])
        return np.clip(np.rint(w / scale[0]), -127, 127).astype(np.int8), scale
    red = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.maximum(np.abs(w).max(axis=red), 1e-12) / 127
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8), scale


class ModelBuilder:
    """Layers (float or int8) onto a TfliteWriter: ``dense``, ``conv``, ``pool``, ``reshape``."""

    def __init__(self, input_shape, int8=False, per_channel=False, int8_input=False, input_range=(0.0, 1.0)):
        self.w = TfliteWriter()
        self.int8, self.per_channel = int8, per_channel
        self.act_q = activation_quant(*input_range)   # the current activation's (scales, zero points, axis)
        dtype = INT8 if int8 and int8_input else FLOAT32
        self.input = self.w.tensor([1, *input_shape], dtype, quant=self.act_q if dtype == INT8 else None)
        self.cur = self.input
        if int8 and not int8_input:   # float input, QUANTIZE at the start
            out = self.w.tensor([1, *input_shape], INT8, quant=self.act_q)
            self.w.op(tflite.BuiltinOperator.QUANTIZE, [self.cur], [out])
            self.cur = out

    @property
    def s_in(self) -> float:
        return float(self.act_q[0][0])

    def _weights(self, w, axis):
        if not self.int8:
            return self.w.tensor(w.shape, FLOAT32, w.astype(np.float32).tobytes()), None
        q, scale = quantize_symmetric(w, axis if self.per_channel else None)
        return self.w.tensor(w.shape, INT8, q.tobytes(), (scale, np.zeros(scale.size, np.int64), axis)), scale

    def _bias(self, b, w_scale):
        if not self.int8:
            return self.w.tensor(b.shape, FLOAT32, b.astype(np.float32).tobytes())
        s = self.s_in * np.broadcast_to(w_scale, b.shape)
        return self.w.tensor(b.shape, INT32, np.rint(b / s).astype(np.int32).tobytes(), (s, np.zeros(s.size), 0))

    def _out(self, shape, out_range=None):
        """The operator's output tensor; int8: quantized for ``out_range`` (default: the input's)."""
        if out_range is not None:
            self.next_q = activation_quant(*out_range)
        else:
            self.next_q = self.act_q
        return self.w.tensor([1, *shape], INT8 if self.int8 else FLOAT32, quant=self.next_q if self.int8 else None)

    def _advance(self, out):
        self.cur, self.act_q = out, self.next_q

    def dense(self, w, b, relu, out_range=None):
        wt, scale = self._weights(w, 0)
        bias = self._bias(b, scale)
        out = self._out([w.shape[0]], out_range)
        self.w.op(tflite.BuiltinOperator.FULLY_CONNECTED, [self.cur, wt, bias], [out], fc_options(relu))
        self._advance(out)

    def conv(self, w_ohwi, b, relu, out_hwc, padding=0, stride=1, out_range=None):
        wt, scale = self._weights(w_ohwi, 0)
        bias = self._bias(b, scale)
        out = self._out(out_hwc, out_range)
        self.w.op(tflite.BuiltinOperator.CONV_2D, [self.cur, wt, bias], [out], conv_options(relu, padding, stride))
        self._advance(out)

    def pool(self, k, out_hwc, code=tflite.BuiltinOperator.AVERAGE_POOL_2D):
        out = self._out(out_hwc)
        self.w.op(code, [self.cur], [out], pool_options(k))
        self._advance(out)

    def reshape(self, n):
        shape = self.w.tensor([2], INT32, np.array([1, n], np.int32).tobytes())
        out = self._out([n])
        self.w.op(tflite.BuiltinOperator.RESHAPE, [self.cur, shape], [out])
        self._advance(out)

    def save(self, path):
        if self.int8:
            out = self.w.tensor(self.w.tensors[self.cur][0], FLOAT32)
            self.w.op(tflite.BuiltinOperator.DEQUANTIZE, [self.cur], [out])
            self.cur = out
        sm = self.w.tensor(self.w.tensors[self.cur][0], FLOAT32)
        self.w.op(tflite.BuiltinOperator.SOFTMAX, [self.cur], [sm])
        self.w.save(path, [self.input], [sm])
        return path


def dequantized(w, int8, per_channel, axis=0):
    if not int8:
        return w.astype(np.float32).astype(np.float64)
    q, scale = quantize_symmetric(w, axis if per_channel else None)
    shape = [1] * w.ndim
    shape[axis] = -1
    return q * (scale.reshape(shape) if per_channel else scale[0])


def dequantized_bias(b, w, int8, per_channel):
    """The bias as the file holds it: float32, or int32 with scale s_in * s_w."""
    if not int8:
        return b.astype(np.float32).astype(np.float64)
    _, w_scale = quantize_symmetric(w, 0 if per_channel else None)
    s = (1 / 255) * w_scale
    return np.rint(b / s) * s


# ---- tests ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_mlp():
    from sklearn.neural_network import MLPClassifier
    data = load_digits_split()
    clf = MLPClassifier((64,), max_iter=300, random_state=0).fit(data.x_train / 16, data.y_train)
    return data, clf


@pytest.mark.parametrize("int8", [False, True])
def test_tflite_mlp_converts_within_one_point_of_its_ann(digits_mlp, tmp_path, int8):
    data, clf = digits_mlp
    m = ModelBuilder([64], int8=int8)
    m.dense(clf.coefs_[0].T, clf.intercepts_[0], relu=True)
    m.dense(clf.coefs_[1].T, clf.intercepts_[1], relu=False)
    path = m.save(tmp_path / "mlp.tflite")
    ops, shape = tflite_ops(read_tflite(path, 1 << 20))
    x = data.x_test / 16
    ann = check_forward(ops, shape, x).argmax(1)
    if not int8:
        assert np.array_equal(ann, clf.predict(x))
    acc = float((ann == data.y_test).mean())
    model = neurovm.convert_tflite(path, data.x_train[:500] / 16, steps=64)
    snn = float((model.predict(x) == data.y_test).mean())
    assert acc > 0.9 and snn >= acc - 0.01, (snn, acc)
    if int8:   # per-tensor int8 weights reach the chip unchanged
        q, _ = quantize_symmetric(clf.coefs_[0].T)
        assert np.array_equal(np.asarray(model.weights[0]), q.astype(np.int64))


def nhwc_cnn_reference(x, w1, b1, w2, b2):
    """TFLite semantics by hand: NHWC input, SAME 3x3 conv (OHWI filter) + relu, 2x2 average pool,
    flatten in HWC order, fully connected."""
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((n, h, wd, w1.shape[0]))
    for i in range(h):
        for j in range(wd):
            conv[:, i, j, :] = np.einsum("nhwc,ohwc->no", xp[:, i:i + 3, j:j + 3, :], w1) + b1
    r = np.maximum(conv, 0)
    pooled = (r[:, 0::2, 0::2] + r[:, 1::2, 0::2] + r[:, 0::2, 1::2] + r[:, 1::2, 1::2]) / 4
    return pooled.reshape(n, -1) @ w2.T + b2


def small_cnn(path, rng, int8=False, per_channel=False, pool_code=tflite.BuiltinOperator.AVERAGE_POOL_2D):
    w1, b1 = rng.normal(0, 0.5, (4, 3, 3, 2)), rng.normal(0, 0.1, 4)
    w2, b2 = rng.normal(0, 0.3, (5, 3 * 3 * 4)), rng.normal(0, 0.1, 5)
    m = ModelBuilder([6, 6, 2], int8=int8, per_channel=per_channel)
    m.conv(w1, b1, relu=True, out_hwc=[6, 6, 4])
    m.pool(2, [3, 3, 4], code=pool_code)
    m.reshape(36)
    m.dense(w2, b2, relu=False)
    m.save(path)
    return w1, b1, w2, b2


@pytest.mark.parametrize("int8,per_channel", [(False, False), (True, False), (True, True)])
def test_tflite_cnn_is_read_in_tflite_order_and_runs_on_the_chip(tmp_path, int8, per_channel):
    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = small_cnn(tmp_path / "cnn.tflite", rng, int8, per_channel)
    ops, shape = tflite_ops(read_tflite(tmp_path / "cnn.tflite", 1 << 20))
    assert shape == (6, 6, 2)
    x = rng.random((8, 6, 6, 2))
    want = nhwc_cnn_reference(x, dequantized(w1, int8, per_channel), dequantized_bias(b1, w1, int8, per_channel),
                              dequantized(w2, int8, per_channel), dequantized_bias(b2, w2, int8, per_channel))
    np.testing.assert_allclose(check_forward(ops, shape, x), want, rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        model = neurovm.convert_tflite(tmp_path / "cnn.tflite", steps=16)
    assert model.meta["source"] == "tflite:cnn.tflite" and model.sizes[0] == 72
    pred = model.predict(x.reshape(8, -1))
    assert np.array_equal(pred, model.predict_reference(x.reshape(8, -1)))
    if int8 and not per_channel:   # the conv's int8 filter is the chip's weights (expanded, OHWI -> connectivity)
        q, _ = quantize_symmetric(w1)
        assert set(np.unique(model.weights[0].data)) <= set(np.unique(q).tolist())
        assert np.abs(model.weights[0].data).max() == np.abs(q).max() == 127


def test_tflite_refusals_name_the_operator_and_its_index(tmp_path):
    rng = np.random.default_rng(0)
    small_cnn(tmp_path / "mp.tflite", rng, pool_code=tflite.BuiltinOperator.MAX_POOL_2D)
    with pytest.raises(ModelError, match=r"mp.tflite: operator 1 \(MAX_POOL_2D\): unsupported operator: max pool"):
        neurovm.convert_tflite(tmp_path / "mp.tflite", np.ones((2, 72)))
    m = ModelBuilder([4])
    m.dense(np.ones((3, 4)), np.zeros(3), relu=False)
    out = m.w.tensor([1, 3], FLOAT32)
    m.w.op(tflite.BuiltinOperator.TANH, [m.cur], [out])
    m.cur = out
    m.dense(np.ones((2, 3)), np.zeros(2), relu=False)
    m.save(tmp_path / "tanh.tflite")
    with pytest.raises(ModelError, match=r"tanh.tflite: operator 1 \(TANH\): unsupported operator; supported: "
                                         r"FULLY_CONNECTED"):
        neurovm.convert_tflite(tmp_path / "tanh.tflite", np.ones((2, 4)))
    m = ModelBuilder([4])
    w = m.w.tensor([3, 4], FLOAT32, np.ones((3, 4), np.float32).tobytes())
    out = m.w.tensor([1, 3], FLOAT32)

    def relu6(b):
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(b, 3)
        return tflite.FullyConnectedOptionsEnd(b)
    m.w.op(tflite.BuiltinOperator.FULLY_CONNECTED, [m.cur, w], [out], (fc_options(False)[0], relu6))
    m.cur = out
    m.save(tmp_path / "relu6.tflite")
    with pytest.raises(ModelError, match=r"operator 0 \(FULLY_CONNECTED\): fused activation RELU6 is not supported"):
        neurovm.convert_tflite(tmp_path / "relu6.tflite", np.ones((2, 4)))
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=r"junk.tflite: not a TFLite flatbuffer"):
        neurovm.convert_tflite(tmp_path / "junk.tflite")
    with pytest.raises(ModelError, match=r"missing.tflite: no such file"):
        neurovm.convert_tflite(tmp_path / "missing.tflite")
