"""Trained ReLU networks as rate-coded integer SNNs: conversion, the ``.nvm`` file, prediction.

Conversion (:func:`convert_onnx`; :func:`convert_pytorch` exports to ONNX first):

1. The ONNX graph must be a chain of dense layers -- ``Gemm``, or ``MatMul``
   followed by ``Add`` -- with ``Relu`` between them; ``Flatten``, ``Reshape``,
   ``Identity``, ``Dropout`` pass through and a final ``Softmax`` /
   ``LogSoftmax`` is dropped (it does not change the argmax).  Anything else is
   refused naming the operator and the node.
2. Data-based normalisation (Rueckauer et al. 2017): ``lam[l]`` = the
   ``percentile`` of layer ``l``'s ReLU activations on calibration data
   (``lam[0]`` for the input); ``W'[l] = W[l] * lam[l-1] / lam[l]``,
   ``b'[l] = b[l] / lam[l]``.  An IF neuron firing at rate ``a[l] / lam[l]``
   then carries the ANN's activation.
3. Quantisation per layer: ``scale = wmax / max|W'|`` with ``wmax =
   2^(weight_bits-1) - 1``; ``weight = round(W' * scale)``; the threshold is
   1.0, i.e. ``vth_mant = round(scale)`` with ``weight_exp = 0`` (a synaptic
   event adds ``weight * 64``, the neuron fires when ``v > vth_mant * 64``);
   the bias is ``b' * scale * 64`` per step, as ``bias_mant << bias_exp``
   with the smallest ``bias_exp`` that fits 13 signed bits.
4. Neurons: ``du = 4095`` (``u`` is this step's input only), ``dv = 0`` (no
   leak), ``refract = 0``: integrate-and-fire with reset to zero.

Input coding: ``x / lam[0]`` clipped to [0, 1] becomes a deterministic spike
train (a spike at step ``t`` when ``floor((t+1) r)`` grows), fed to the input
population.  Output: spike counts of the last layer, ties broken by the final
membrane voltage.
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurovm.config import DEFAULT_CONFIG, ChipConfig
from neurovm.npzfile import load_npz, save_npz

__all__ = ["ModelError", "SnnModel", "convert_onnx", "convert_pytorch", "load_model", "rate_code",
           "MODEL_FORMAT", "MODEL_VERSION"]

MODEL_FORMAT = "neurovm-model"
MODEL_VERSION = 1
SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Relu", "Flatten", "Reshape", "Identity", "Dropout",
                 "Softmax (last)", "LogSoftmax (last)")
_PASS_OPS = ("Flatten", "Reshape", "Identity", "Dropout")
_BIAS_MANT_MAX = 4095
_VTH_MANT_MAX = (1 << 17) - 1


class ModelError(ValueError):
    """A model that cannot be converted, loaded or run; the message names what is wrong."""


def rate_code(x: np.ndarray, steps: int) -> np.ndarray:
    """Deterministic rate code: ``(steps, n)`` booleans, ``round(x * steps)`` spikes evenly spread.

    ``x`` must already lie in [0, 1].
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    t = np.arange(1, steps + 1)[:, None]
    return np.floor(t * x[None, :] + 0.5) > np.floor((t - 1) * x[None, :] + 0.5)


@dataclass
class SnnModel:
    """A converted network: integer layers plus what is needed to code inputs and read outputs.

    ``weights[l]`` has shape ``(out, in)`` (signed, within ``weight_bits``);
    ``bias_mant[l]``, ``bias_exp[l]`` per output neuron; ``vth_mant[l]`` per layer.
    ``input_scale`` divides inputs before rate coding.
    """

    weights: list
    bias_mant: list
    bias_exp: list
    vth_mant: list
    input_scale: float
    steps: int = 64
    config: ChipConfig = DEFAULT_CONFIG
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self._validate()

    # ---- shape and legality -----------------------------------------------------------
    @property
    def sizes(self) -> list[int]:
        """Neurons per layer, input first."""
        return [int(self.weights[0].shape[1])] + [int(w.shape[0]) for w in self.weights]

    def _validate(self):
        cfg = self.config
        n = len(self.weights)
        if n == 0:
            raise ModelError("the model has no layers")
        for name, seq in (("bias_mant", self.bias_mant), ("bias_exp", self.bias_exp), ("vth_mant", self.vth_mant)):
            if len(seq) != n:
                raise ModelError(f"{name} has {len(seq)} entries for {n} layers")
        for l, w in enumerate(self.weights):
            w = np.asarray(w)
            if w.ndim != 2:
                raise ModelError(f"layer {l + 1}: weights must be 2-D (out, in), not shape {w.shape}")
            if l and w.shape[1] != self.weights[l - 1].shape[0]:
                raise ModelError(f"layer {l + 1}: takes {w.shape[1]} inputs but layer {l} has "
                                 f"{self.weights[l - 1].shape[0]} neurons")
            if w.size and (w.min() < cfg.weight_min or w.max() > cfg.weight_max):
                raise ModelError(f"layer {l + 1}: weights outside {cfg.weight_min}..{cfg.weight_max} "
                                 f"(weight_bits={cfg.weight_bits})")
            bm, be = np.asarray(self.bias_mant[l]), np.asarray(self.bias_exp[l])
            if bm.shape != (w.shape[0],) or be.shape != (w.shape[0],):
                raise ModelError(f"layer {l + 1}: bias arrays must have shape ({w.shape[0]},)")
            if np.abs(bm).max(initial=0) > _BIAS_MANT_MAX or be.min(initial=0) < 0 or be.max(initial=0) > 7:
                raise ModelError(f"layer {l + 1}: bias_mant outside -4096..4095 or bias_exp outside 0..7")
            if not 0 <= int(self.vth_mant[l]) <= _VTH_MANT_MAX:
                raise ModelError(f"layer {l + 1}: vth_mant {self.vth_mant[l]} outside 0..{_VTH_MANT_MAX}")
        if not (np.isfinite(self.input_scale) and self.input_scale > 0):
            raise ModelError(f"input_scale must be a positive number, not {self.input_scale}")
        if not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise ModelError(f"steps must be a positive integer, not {self.steps!r}")

    # ---- the SNN ------------------------------------------------------------------------------
    def network(self):
        """The SNN as a :class:`neurovm.mapper.Network`: populations ``input``, ``layer1`` .. ``output``."""
        from neurovm.mapper import Network

        net = Network()
        pops = [net.population("input", self.sizes[0], report=False)]
        for l, w in enumerate(self.weights):
            last = l == len(self.weights) - 1
            pops.append(net.population("output" if last else f"layer{l + 1}", w.shape[0], report=last,
                                       du=4095, dv=0, refract=0, vth_mant=int(self.vth_mant[l]),
                                       bias_mant=np.asarray(self.bias_mant[l], dtype=np.int64),
                                       bias_exp=np.asarray(self.bias_exp[l], dtype=np.int64)))
            j, i = np.nonzero(w)
            net.connect(pops[l], pops[l + 1], np.stack([i, j, w[j, i]], axis=1))
        return net

    def cores_needed(self) -> int:
        """Cores the mapper uses for this model on its chip configuration."""
        from neurovm.mapper import map_network

        return len(map_network(self.network(), self.config).images)

    def encode(self, x: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Input spike raster ``(steps, n_inputs)`` of one sample."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size != self.sizes[0]:
            raise ModelError(f"an input sample has {x.size} values, the model takes {self.sizes[0]}")
        return rate_code(x / self.input_scale, steps or self.steps)

    def predict(self, x, chip=None, backend: str = "emulator", steps: int | None = None, name: str = "model",
                return_scores: bool = False, progress=None):
        """Class predictions (argmax of output spike counts) for samples ``x`` of shape ``(n, inputs)``.

        Runs on ``chip`` (an open :class:`~neurovm.host.Chip`: the model gets a VM of its own
        there and leaves with it) or on a fresh chip of ``backend``.  ``progress``: True
        prints a progress line to stderr, a callable gets ``(done, total)``; the default
        prints when stderr is a terminal and there are over 20 samples.
        """
        import neurovm

        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1 and x.size == self.sizes[0]:
            x = x[None, :]   # one sample
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ModelError(f"inputs must have shape (samples, {self.sizes[0]}), not {x.shape}")
        steps = steps or self.steps
        chip = chip if chip is not None else neurovm.open(backend, self.config)
        if chip.config != self.config:
            raise ModelError("the chip's configuration differs from the one the model was converted for")
        from neurovm.mapper import map_network

        from .runtime import VMError

        try:
            mapped = map_network(self.network(), self.config, free_cores=chip.free_cores)
        except Exception as e:   # noqa: BLE001 - MapError and friends, reported as the model's problem
            raise ModelError(f"the model does not fit this chip: {e}") from None
        try:
            vm = chip.create_vm(name, cores=len(mapped.images)).load(mapped)
        except VMError as e:
            raise ModelError(str(e)) from None
        out_ids = mapped.populations["output"]
        th = int(self.vth_mant[-1]) * 64
        scores = np.zeros((x.shape[0], out_ids.size))
        if progress is None:
            progress = sys.stderr.isatty() and x.shape[0] > 20
        if progress is True:
            t0 = time.perf_counter()

            def progress(done, total):
                rate = done / max(time.perf_counter() - t0, 1e-9)
                print(f"\rpredict: {done}/{total} samples, {rate:.1f}/s", end="" if done < total else "\n",
                      file=sys.stderr, flush=True)
        try:
            for i, sample in enumerate(x):
                vm.reset_state()
                res = vm.run(steps, {"input": self.encode(sample, steps)})
                v = vm.state()["v"][out_ids]
                scores[i] = res.counts()[out_ids] + v / (th + 1)
                if progress and ((i + 1) % 10 == 0 or i + 1 == x.shape[0]):
                    progress(i + 1, x.shape[0])
        finally:
            vm.destroy()
        pred = scores.argmax(axis=1)
        return (pred, scores) if return_scores else pred

    def predict_reference(self, x, steps: int | None = None) -> np.ndarray:
        """The same SNN simulated directly in numpy, layer by layer (no chip): a cross-check."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.sizes[0])
        steps = steps or self.steps
        out = np.zeros(x.shape[0], dtype=np.int64)
        for i, sample in enumerate(x):
            spikes = self.encode(sample, steps)            # (steps, n)
            for l, w in enumerate(self.weights):
                bias = np.asarray(self.bias_mant[l], np.int64) << np.asarray(self.bias_exp[l], np.int64)
                th = int(self.vth_mant[l]) * 64
                v = np.zeros(w.shape[0], dtype=np.int64)
                nxt = np.zeros((steps, w.shape[0]), dtype=bool)
                for t in range(steps):
                    # a spike of the layer below at step t-1 (or an input fed at t) is integrated at t
                    src = spikes[t - 1] if (l and t) else (spikes[t] if not l else np.zeros(w.shape[1], bool))
                    v = np.clip(v + (w.astype(np.int64) @ src.astype(np.int64)) * 64 + bias,
                                -(2 ** 23 - 1), 2 ** 23 - 1)
                    fire = v > th
                    nxt[t] = fire
                    v[fire] = 0
                spikes = nxt
            score = spikes.sum(axis=0) + v / (th + 1)
            out[i] = int(np.argmax(score))
        return out

    # ---- the .nvm file --------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model as ``.nvm`` (``.npz``: a JSON header plus the integer arrays; format version 1)."""
        header = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": self.config.to_dict(),
                  "layers": len(self.weights), "vth_mant": [int(v) for v in self.vth_mant],
                  "input_scale": float(self.input_scale), "steps": int(self.steps), "meta": self.meta}
        arrays = {}
        for l in range(len(self.weights)):
            arrays[f"weight{l}"] = np.asarray(self.weights[l], dtype=np.int16)
            arrays[f"bias_mant{l}"] = np.asarray(self.bias_mant[l], dtype=np.int16)
            arrays[f"bias_exp{l}"] = np.asarray(self.bias_exp[l], dtype=np.int8)
        save_npz(path, header, arrays)

    @classmethod
    def load(cls, path) -> "SnnModel":
        """Read a ``.nvm`` file; everything is re-checked, and a bad file is named with what is wrong."""
        path = Path(path)
        header, z = load_npz(path, MODEL_FORMAT, MODEL_VERSION, "NeuroVM model file", ModelError)
        try:
            n = int(header["layers"])
            missing = [f"{k}{l}" for l in range(n) for k in ("weight", "bias_mant", "bias_exp")
                       if f"{k}{l}" not in z.files]
            if missing:
                raise ModelError(f"{path}: truncated model file, array {missing[0]!r} is missing")
            arrs = {k: [np.asarray(z[f"{k}{l}"], dtype=np.int64) for l in range(n)]
                    for k in ("weight", "bias_mant", "bias_exp")}
            return cls(arrs["weight"], arrs["bias_mant"], arrs["bias_exp"], list(header["vth_mant"]),
                       float(header["input_scale"]), int(header["steps"]), ChipConfig.from_dict(header["config"]),
                       header.get("meta", {}))
        except KeyError as e:
            raise ModelError(f"{path}: damaged model header, {e} is missing") from None
        except ModelError as e:
            raise e if str(e).startswith(str(path)) else ModelError(f"{path}: {e}") from None
        except (ValueError, TypeError) as e:
            raise ModelError(f"{path}: damaged model file ({e})") from None


def load_model(path) -> SnnModel:
    """Read a ``.nvm`` model file (see :meth:`SnnModel.load`)."""
    return SnnModel.load(path)


# ---- ONNX ----------------------------------------------------------------------------------------
def _onnx_layers(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """Dense layers ``(W (out, in), b)`` of a Gemm/MatMul+Add/Relu chain, checked node by node."""
    from onnx import numpy_helper

    g = model.graph
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    for node in g.node:   # Constant nodes are initializers too
        if node.op_type == "Constant":
            init[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
    inputs = [i for i in g.input if i.name not in init]
    if len(inputs) != 1:
        raise ModelError(f"the ONNX graph must have one data input, it has {len(inputs)} "
                         f"({', '.join(i.name for i in inputs)})")
    cur = inputs[0].name
    layers: list[list] = []   # [W, b, relu]
    nodes = [n for n in g.node if n.op_type != "Constant"]
    for k, node in enumerate(nodes):
        label = f"node {k} '{node.name or node.op_type}'"
        op = node.op_type
        data_in = [i for i in node.input if i and i not in init]
        if op in ("Softmax", "LogSoftmax"):
            if k != len(nodes) - 1:
                raise ModelError(f"{label}: {op} is only supported as the last node")
            break
        if data_in != [cur]:
            raise ModelError(f"{label} ({op}): the graph must be a single chain; this node reads "
                             f"{list(node.input)}, expected the output of the previous node {cur!r}")
        attrs = {a.name: a for a in node.attribute}
        if op == "Gemm":
            alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
            beta = attrs["beta"].f if "beta" in attrs else 1.0
            if "transA" in attrs and attrs["transA"].i:
                raise ModelError(f"{label}: Gemm with transA=1 is not supported")
            b_mat = init.get(node.input[1])
            if b_mat is None:
                raise ModelError(f"{label}: Gemm weights must be a constant initializer")
            w = (b_mat if ("transB" in attrs and attrs["transB"].i) else b_mat.T) * alpha
            bias = init.get(node.input[2], np.zeros(w.shape[0])) * beta if len(node.input) > 2 and node.input[2] \
                else np.zeros(w.shape[0])
            layers.append([w, np.broadcast_to(bias, (w.shape[0],)).astype(np.float64), False])
        elif op == "MatMul":
            m = init.get(node.input[1])
            if m is None or m.ndim != 2:
                raise ModelError(f"{label}: MatMul needs a 2-D constant right operand")
            layers.append([m.T, np.zeros(m.shape[1]), False])
        elif op == "Add":
            b = init.get(node.input[1] if node.input[0] == cur else node.input[0])
            if not layers or layers[-1][2] or b is None:
                raise ModelError(f"{label}: Add is supported only as the bias right after MatMul/Gemm")
            layers[-1][1] = layers[-1][1] + np.broadcast_to(b.ravel(), layers[-1][1].shape)
        elif op == "Relu":
            if not layers or layers[-1][2]:
                raise ModelError(f"{label}: Relu must follow a dense layer")
            layers[-1][2] = True
        elif op in _PASS_OPS:
            pass
        else:
            raise ModelError(f"{label}: unsupported operator {op!r}; supported: {', '.join(SUPPORTED_OPS)}")
        cur = node.output[0]
    if not layers:
        raise ModelError("the ONNX graph has no dense layer (Gemm or MatMul)")
    for l, (w, _, relu) in enumerate(layers):
        if l < len(layers) - 1 and not relu:
            raise ModelError(f"layer {l + 1}: a hidden dense layer must be followed by Relu")
        if l and w.shape[1] != layers[l - 1][0].shape[0]:
            raise ModelError(f"layer {l + 1}: takes {w.shape[1]} inputs, layer {l} gives {layers[l - 1][0].shape[0]}")
    if layers[-1][2]:
        raise ModelError("the last dense layer must not be followed by Relu (its outputs are the class scores)")
    return [(w, b) for w, b, _ in layers]


def ann_forward(layers, x: np.ndarray) -> list[np.ndarray]:
    """Activations of every layer (the last one without ReLU) of the float network."""
    acts = [np.asarray(x, dtype=np.float64)]
    for l, (w, b) in enumerate(layers):
        z = acts[-1] @ w.T + b
        acts.append(np.maximum(z, 0) if l < len(layers) - 1 else z)
    return acts


def _quantise(layers, calib: np.ndarray, cfg: ChipConfig, percentile: float, steps: int, meta: dict) -> SnnModel:
    acts = ann_forward(layers, calib)
    lam = [max(float(np.percentile(a[a > 0], percentile)) if (a > 0).any() else 1.0, 1e-9) for a in acts]
    wmax = cfg.weight_max
    weights, bm, be, vth = [], [], [], []
    for l, (w, b) in enumerate(layers):
        wn = w * lam[l] / lam[l + 1]
        bn = b / lam[l + 1]
        scale = wmax / max(np.abs(wn).max(), 1e-12)
        scale = min(scale, _VTH_MANT_MAX)
        weights.append(np.rint(wn * scale).astype(np.int64))
        vth.append(max(1, int(round(scale))))
        braw = bn * scale * 64
        exp = np.zeros(b.shape, dtype=np.int64)
        while True:
            mant = np.rint(braw / (1 << exp)).astype(np.int64)
            over = np.abs(mant) > _BIAS_MANT_MAX
            if not over.any() or exp.max() >= 7:
                break
            exp[over] += 1
        if over.any():
            raise ModelError(f"layer {l + 1}: a bias is too large for the chip even at bias_exp=7 "
                             f"({float(np.abs(braw).max()):.0f} > {_BIAS_MANT_MAX << 7})")
        bm.append(mant)
        be.append(exp)
    meta = {**meta, "normalisation": [float(x) for x in lam], "percentile": percentile}
    return SnnModel(weights, bm, be, vth, lam[0], steps, cfg, meta)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def convert_onnx(model, calibration, config: ChipConfig = DEFAULT_CONFIG, percentile: float = 99.9,
                 steps: int = 64) -> SnnModel:
    """Convert an ONNX ReLU network (path, bytes or ``onnx.ModelProto``) to an :class:`SnnModel`.

    ``calibration``: input samples ``(n, inputs)`` used to normalise weights and
    thresholds (a few hundred training samples are plenty).
    """
    import onnx

    try:
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.exists():
                raise ModelError(f"{path}: no such file")
            proto = onnx.load(str(path))
            source = path.name
        elif isinstance(model, (bytes, bytearray)):
            proto = onnx.load_from_string(bytes(model))
            source = "bytes"
        else:
            proto = model
            source = "ModelProto"
    except ModelError:
        raise
    except Exception as e:   # noqa: BLE001 - protobuf DecodeError, truncated files...: one clear message
        raise ModelError(f"not a readable ONNX model ({type(e).__name__}: {_first_line(e)})") from None
    try:
        onnx.checker.check_model(proto)
    except Exception as e:   # noqa: BLE001
        raise ModelError(f"invalid ONNX model (onnx.checker: {_first_line(e)})") from None
    layers = _onnx_layers(proto)
    calib = np.asarray(calibration, dtype=np.float64)
    if calib.ndim != 2 or calib.shape[1] != layers[0][0].shape[1]:
        raise ModelError(f"calibration data must have shape (samples, {layers[0][0].shape[1]}), not {calib.shape}")
    return _quantise(layers, calib, config, percentile, steps, {"source": f"onnx:{source}",
                                                                 "layers": [list(w.shape) for w, _ in layers]})


def convert_pytorch(module, example_input, calibration, config: ChipConfig = DEFAULT_CONFIG, **kw) -> SnnModel:
    """Export a PyTorch module to ONNX (``torch.onnx.export``) and convert it with :func:`convert_onnx`."""
    try:
        import torch
    except ImportError:
        raise ModelError("convert_pytorch needs PyTorch (pip install torch); or export to ONNX yourself "
                         "and call convert_onnx") from None
    buf = io.BytesIO()
    torch.onnx.export(module, example_input, buf, input_names=["x"], output_names=["y"], dynamo=False)
    return convert_onnx(buf.getvalue(), calibration, config, **kw)
