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
   the output layer gets ``vth_mant = 2^17 - 1`` instead and does not spike: its
   membrane integrates the logits (see :func:`quantise_layers`);
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
import json
import math
import numbers
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from neurovm.config import BIAS_EXP_BITS, BIAS_MANT_BITS, DEFAULT_CONFIG, VTH_BITS, ChipConfig
from neurovm.npzfile import load_checked, save_npz

__all__ = ["ModelError", "SnnModel", "convert_onnx", "convert_pytorch", "load_model", "rate_code",
           "MODEL_FORMAT", "MODEL_VERSION"]

MODEL_FORMAT = "neurovm-model"
MODEL_VERSION = 1
_BIAS_MANT_MIN = -(1 << (BIAS_MANT_BITS - 1))   # bias_mant: signed 13-bit field
_BIAS_MANT_MAX = (1 << (BIAS_MANT_BITS - 1)) - 1
_BIAS_EXP_MAX = (1 << BIAS_EXP_BITS) - 1
_VTH_MANT_MAX = (1 << VTH_BITS) - 1
MAX_STEPS = 1 << 16
"""Most timesteps per sample: an input raster is ``steps x inputs`` booleans, so a file's ``steps``
cannot make ``predict`` allocate without bound (a run of 65536 steps is ~20 minutes of a 50 Hz demo)."""
#: On-disk dtype of each array of a ``.nvm`` layer; values are range-checked before the cast.
_FILE_DTYPES = {"weight": np.int16, "bias_mant": np.int16, "bias_exp": np.int8,
                "wrow": np.int32, "wcol": np.int32, "wval": np.int16}
_SPARSE_PARTS = ("wrow", "wcol", "wval")


class ModelError(ValueError):
    """A model that cannot be converted, loaded or run; the message names what is wrong."""


def _is_int(x) -> bool:
    """A Python or NumPy integer (``bool`` is not a number here)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_real(x) -> bool:
    """A Python or NumPy real number (not ``bool``, not complex)."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _index(a: np.ndarray, flat: int) -> str:
    idx = np.unravel_index(flat, a.shape) if a.ndim else ()
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _integer_array(x, what: str) -> np.ndarray:
    """``x`` as an integer array; floats (NaN included), complex and objects are refused by name."""
    try:
        a = np.asarray(x)
    except Exception as e:   # noqa: BLE001 - ragged lists and the like
        raise ModelError(f"{what}: not an array of integers ({type(e).__name__}: {e})") from None
    if a.dtype.kind not in "iu":
        raise ModelError(f"{what}: must be integers, not dtype {a.dtype}"
                         + (f" (e.g. {a.flat[0]!r} at {_index(a, 0)})" if a.size else ""))
    return a


def _is_sparse(w) -> bool:
    """A scipy sparse matrix (a sparse layer: a convolution's connectivity, a pooled dense layer)."""
    return sp.issparse(w)


def _integer_weights(w, what: str):
    """Dense weights as an integer array, sparse ones as an integer CSR matrix with no duplicate entries."""
    if not _is_sparse(w):
        return _integer_array(w, what)
    w = sp.csr_matrix(w)
    _integer_array(w.data, what)
    w.sum_duplicates()
    return w


def _weight_values(w) -> np.ndarray:
    """The stored values of a layer's weights (the dense array, or a sparse matrix's entries)."""
    return w.data if _is_sparse(w) else w


def _synapse_count(w) -> int:
    """Entries a layer's weights occupy in a file: every value of a dense matrix, the stored ones of a sparse."""
    return int(w.nnz) if _is_sparse(w) else int(w.size)


def _check_range(a: np.ndarray, lo: int, hi: int, what: str, rule: str) -> None:
    """Refuse the first value of integer array ``a`` outside ``lo..hi``, naming index and value."""
    if not a.size:
        return
    bad = (a < lo) | (a > hi)
    if bad.any():
        k = int(np.argmax(bad.ravel()))
        raise ModelError(f"{what} outside {lo}..{hi} ({rule}): value {int(a.flat[k])} at {_index(a, k)}")


def real_array(x, what: str) -> np.ndarray:
    """``x`` as a float64 array of finite real numbers, or a :class:`ModelError` naming the first bad value.

    Parameters
    ----------
    x : array_like
        Numbers (bool, integer or float dtypes).
    what : str
        The array's name in the message (e.g. ``"calibration data"``).
    """
    try:
        a = np.asarray(x)
    except Exception as e:   # noqa: BLE001 - ragged lists and the like
        raise ModelError(f"{what}: not an array of numbers ({type(e).__name__}: {e})") from None
    if a.dtype.kind == "c":
        imag = np.flatnonzero(np.imag(a).ravel() != 0)
        k = int(imag[0]) if imag.size else 0
        raise ModelError(f"{what}: complex values are not accepted (dtype {a.dtype}; "
                         f"{a.flat[k]!r} at {_index(a, k)})" if a.size else f"{what}: complex dtype {a.dtype}")
    if a.dtype.kind not in "biuf":
        raise ModelError(f"{what}: must be real numbers, not dtype {a.dtype}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        k = int(np.argmax(bad.ravel()))
        raise ModelError(f"{what}: value {a.flat[k]} at {_index(a, k)} is not a finite number")
    return a


def rate_code(x: np.ndarray, steps: int) -> np.ndarray:
    """Deterministic rate code: ``(steps, n)`` booleans, ``round(x * steps)`` spikes evenly spread.

    ``x`` must already lie in [0, 1].  For ``x`` of shape ``(samples, n)`` the result is
    ``(steps, samples, n)``, each sample coded exactly as on its own.
    """
    x = _unit_rate(x)
    t = np.arange(0, steps + 1).reshape((steps + 1,) + (1,) * x.ndim)
    sent = _spikes_sent(x[None, ...], t)
    return sent[1:] > sent[:-1]


def _unit_rate(x) -> np.ndarray:
    """Rates ``x`` as float64 clipped to [0, 1] (the first stage of :func:`rate_code`)."""
    return np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)


def _spikes_sent(rate: np.ndarray, t, out: np.ndarray | None = None) -> np.ndarray:
    """Spikes a rate-coded input has sent by the end of its first ``t`` steps: ``floor(t * rate + 1/2)``.

    Step ``t`` (0-based) of :func:`rate_code` spikes iff ``_spikes_sent(rate, t + 1) >
    _spikes_sent(rate, t)``; the batched ``predict`` evaluates it one step at a time
    (:class:`_RateSteps`), into ``out`` if given."""
    out = np.multiply(t, rate, out=out)
    out += 0.5
    return np.floor(out, out=out)


class _RateSteps:
    """Step ``t`` of :func:`rate_code` of ``rate`` on demand (``steps(t)``, booleans shaped like ``rate``),
    keeping the previous step's count: called for ``t = 0, 1, ...`` it evaluates the code once per step."""

    def __init__(self, rate: np.ndarray):
        self.rate = rate
        self.next_t = 0
        self.sent = _spikes_sent(rate, 0)
        self.spare = np.empty_like(self.sent)

    def __call__(self, t: int) -> np.ndarray:
        if t != self.next_t:
            _spikes_sent(self.rate, t, out=self.sent)
        after = _spikes_sent(self.rate, t + 1, out=self.spare)
        spikes = after > self.sent
        self.sent, self.spare, self.next_t = after, self.sent, t + 1
        return spikes


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
        """Check every array and scalar against the chip's fields; integers only, nothing wrapped."""
        if not isinstance(self.config, ChipConfig):
            raise ModelError(f"config must be a ChipConfig, not {type(self.config).__name__}")
        n = len(self.weights)
        if n == 0:
            raise ModelError("the model has no layers")
        for name, seq in (("bias_mant", self.bias_mant), ("bias_exp", self.bias_exp), ("vth_mant", self.vth_mant)):
            if len(seq) != n:
                raise ModelError(f"{name} has {len(seq)} entries for {n} layers")
        self.weights = [_integer_weights(w, f"layer {l + 1}: weights") for l, w in enumerate(self.weights)]
        self.bias_mant = [_integer_array(b, f"layer {l + 1}: bias_mant") for l, b in enumerate(self.bias_mant)]
        self.bias_exp = [_integer_array(b, f"layer {l + 1}: bias_exp") for l, b in enumerate(self.bias_exp)]
        for l in range(n):
            self._validate_layer(l)
        self._validate_scalars()

    def _validate_layer(self, l: int) -> None:
        cfg, w = self.config, self.weights[l]
        if w.ndim != 2:
            raise ModelError(f"layer {l + 1}: weights must be 2-D (out, in), not shape {w.shape}")
        if l and w.shape[1] != self.weights[l - 1].shape[0]:
            raise ModelError(f"layer {l + 1}: takes {w.shape[1]} inputs but layer {l} has "
                             f"{self.weights[l - 1].shape[0]} neurons")
        _check_range(_weight_values(w), cfg.weight_min, cfg.weight_max, f"layer {l + 1}: weights",
                     f"weight_bits={cfg.weight_bits}")
        bm, be = self.bias_mant[l], self.bias_exp[l]
        if bm.shape != (w.shape[0],) or be.shape != (w.shape[0],):
            raise ModelError(f"layer {l + 1}: bias arrays must have shape ({w.shape[0]},), "
                             f"not bias_mant {bm.shape}, bias_exp {be.shape}")
        _check_range(bm, _BIAS_MANT_MIN, _BIAS_MANT_MAX, f"layer {l + 1}: bias_mant", f"{BIAS_MANT_BITS}-bit signed")
        _check_range(be, 0, _BIAS_EXP_MAX, f"layer {l + 1}: bias_exp", f"{BIAS_EXP_BITS}-bit unsigned")
        v = self.vth_mant[l]
        if not _is_int(v) or not 0 <= int(v) <= _VTH_MANT_MAX:
            raise ModelError(f"layer {l + 1}: vth_mant {v!r} must be an integer in 0..{_VTH_MANT_MAX} "
                             f"({VTH_BITS}-bit unsigned)")

    def _validate_scalars(self) -> None:
        x = self.input_scale
        if not (_is_real(x) and math.isfinite(float(x)) and float(x) > 0):
            raise ModelError(f"input_scale must be a positive finite number, not {x!r}")
        if not _is_int(self.steps) or not 1 <= int(self.steps) <= MAX_STEPS:
            raise ModelError(f"steps must be an integer in 1..{MAX_STEPS}, not {self.steps!r}")
        if not isinstance(self.meta, dict):
            raise ModelError(f"meta must be a dict, not {type(self.meta).__name__}")

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
            coo = sp.coo_matrix(w)
            keep = coo.data != 0
            net.connect(pops[l], pops[l + 1], np.stack([coo.col[keep], coo.row[keep], coo.data[keep]], axis=1))
        return net

    def cores_needed(self) -> int:
        """Cores the mapper uses for this model on its chip configuration; a ModelError naming the
        smallest configuration that would fit when it does not fit this one."""
        from neurovm.mapper import map_network

        try:
            return len(map_network(self.network(), self.config).images)
        except Exception as e:   # noqa: BLE001 - MapError and friends, reported as the model's problem
            raise ModelError(f"the model does not fit this chip: {e}; {self._fit_hint()}") from None

    def _fit_hint(self) -> str:
        """Which configuration would hold the model (see :func:`smallest_config`), as a sentence."""
        try:
            cfg = smallest_config(self.network(), self.config)
        except ModelError as e:
            return str(e)
        return (f"the smallest configuration that fits is mesh_width={cfg.mesh_width}, "
                f"mesh_height={cfg.mesh_height}, vcores_per_vm={cfg.vcores_per_vm} ({cfg.num_cores} cores; "
                f"convert with config='auto' to get it)")

    def encode(self, x: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Input spike raster ``(steps, n_inputs)`` of one sample."""
        x = real_array(x, "input sample").ravel()
        if x.size != self.sizes[0]:
            raise ModelError(f"an input sample has {x.size} values, the model takes {self.sizes[0]}")
        return rate_code(x / self.input_scale, self._steps(steps))

    def _inputs(self, x) -> np.ndarray:
        """Samples ``(n, inputs)`` (one 1-D sample is accepted), finite real numbers only."""
        x = real_array(x, "inputs")
        if x.ndim == 1 and x.size == self.sizes[0]:
            x = x[None, :]   # one sample
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ModelError(f"inputs must have shape (samples, {self.sizes[0]}), not {x.shape}")
        return x

    def _steps(self, steps) -> int:
        """``steps`` (or the model's own), an integer in 1..MAX_STEPS."""
        if steps is None:
            return int(self.steps)
        if not _is_int(steps) or not 1 <= int(steps) <= MAX_STEPS:
            raise ModelError(f"steps must be an integer in 1..{MAX_STEPS}, not {steps!r}")
        return int(steps)

    def predict(self, x, chip=None, backend: str = "emulator", steps: int | None = None, name: str = "model",
                return_scores: bool = False, progress=None, batch: int | None = None):
        """Class predictions (argmax of output spike counts) for samples ``x`` of shape ``(n, inputs)``.

        Runs on ``chip`` (an open :class:`~neurovm.host.Chip`: the model gets a VM of its own
        there and leaves with it) or on a fresh chip of ``backend``.  Each sample: the VM's
        state zeroed, ``steps`` steps with the rate-coded sample injected, then the output
        spike counts plus ``v / (vth + 1)`` are its scores (docs/architecture.md §18).

        ``batch`` sets how many samples one run serves (the predictions and scores do not
        depend on it):

        * on an emulator chip with no other VM, the model is loaded into a VM as usual and
          the chip is forked into ``batch`` copies stepping together
          (:meth:`neurovm.emulator.Chip.run_batch`), one sample per copy; default: up to
          4096 copies, fewer if their arrays would pass 1 GiB;
        * elsewhere (Verilator, FPGA, or a shared or checked emulator chip) the model is
          loaded ``batch`` times, one VM per replica, on free cores and VM ids (default:
          as many as fit), and one RUN serves one sample per replica;
        * ``batch=1``: one VM, one sample per run (the sequential path).

        ``progress``: True prints a progress line to stderr, a callable gets ``(done, total)``;
        the default prints when stderr is a terminal and there are over 20 samples.
        """
        import neurovm

        x = self._inputs(x)
        steps = self._steps(steps)
        if batch is not None and (not _is_int(batch) or batch < 1):
            raise ModelError(f"batch must be None or an integer >= 1, not {batch!r}")
        chip = chip if chip is not None else neurovm.open(backend, self.config)
        if chip.config != self.config:
            raise ModelError("the chip's configuration differs from the one the model was converted for")
        mapped = self._mapped(chip)
        progress = self._progress(progress, x.shape[0])
        scores = None
        if batch != 1 and _forkable(chip):
            scores = self._predict_forked(chip, mapped, x, steps, batch, name, progress)
        if scores is None:
            scores = self._predict_replicas(chip, mapped, x, steps, batch, name, progress)
        pred = scores.argmax(axis=1)
        return (pred, scores) if return_scores else pred

    def _mapped(self, chip):
        """The model mapped onto ``chip``'s free cores; ModelError if it does not fit."""
        from neurovm.mapper import map_network

        try:
            return map_network(self.network(), self.config, free_cores=chip.free_cores)
        except Exception as e:   # noqa: BLE001 - MapError and friends, reported as the model's problem
            if len(chip.free_cores) < self.config.num_cores:
                raise ModelError(f"the model does not fit this chip's {len(chip.free_cores)} free cores: {e}") \
                    from None
            raise ModelError(f"the model does not fit this chip: {e}; {self._fit_hint()}") from None

    @staticmethod
    def _progress(progress, total: int):
        """The progress callback ``(done, total)`` (None for none), as ``predict`` documents."""
        if progress is None:
            progress = sys.stderr.isatty() and total > 20
        if progress is not True:
            return progress or None
        t0 = time.perf_counter()

        def report(done, total):
            rate = done / max(time.perf_counter() - t0, 1e-9)
            print(f"\rpredict: {done}/{total} samples, {rate:.1f}/s", end="" if done < total else "\n",
                  file=sys.stderr, flush=True)
        return report

    def _output_scores(self, counts: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Scores of the output neurons: spike counts plus ``v / (vth + 1)`` (ties by the final voltage)."""
        th = int(self.vth_mant[-1]) * 64
        return counts + v / (th + 1)

    # ---- hardware and the sequential path: replicas, one VM each ------------------------------------
    def _predict_replicas(self, chip, mapped, x, steps: int, batch, name: str, progress) -> np.ndarray:
        """Load the model into up to ``batch`` VMs (as many as fit); each RUN serves one sample per VM."""
        vms = self._replica_vms(chip, mapped, name, batch)
        out_ids = mapped.populations["output"]
        scores = np.zeros((x.shape[0], out_ids.size))
        n = x.shape[0]
        try:
            for first in range(0, n, len(vms)):
                group = list(zip(range(first, min(first + len(vms), n)), vms))
                for _, vm in group:
                    vm.reset_state()
                res = chip.run(steps, {vm: {"input": self.encode(x[i], steps)} for i, vm in group})
                for i, vm in group:
                    v = vm.state()["v"][out_ids]
                    scores[i] = self._output_scores(res[vm].counts()[out_ids], v)
                done = group[-1][0] + 1
                if progress and (done // 10 > first // 10 or done == n):
                    progress(done, n)
        finally:
            for vm in vms:
                vm.destroy()
        return scores

    def _replica_vms(self, chip, mapped, name: str, batch) -> list:
        """The first VM (``name``), then replicas ``name#1`` ... while cores and VM ids last."""
        from .runtime import VMError

        k = len(mapped.images)
        vms = []
        try:
            vms.append(chip.create_vm(name, cores=k).load(mapped))
            while (batch is None or len(vms) < batch) and len(chip.free_cores) >= k \
                    and len(chip.vms) < self.config.max_vms:
                vms.append(chip.create_vm(f"{name}#{len(vms)}", cores=k).load(mapped))
        except VMError as e:
            for vm in vms:
                vm.destroy()
            raise ModelError(str(e)) from None
        return vms

    # ---- the emulator: the loaded chip forked into a batch of copies ------------------------------
    def _predict_forked(self, chip, mapped, x, steps: int, batch, name: str, progress):
        """Load the model into a VM, then run the samples as copies of the chip (``Chip.run_batch``),
        injecting each copy's rate-coded sample at the axons the VM's input fan-out names.
        None (nothing run) if the chip cannot be forked exactly (fan-out faults elsewhere on it)."""
        from neurovm.emulator import ForkError

        from .runtime import VMError

        try:
            vm = chip.create_vm(name, cores=len(mapped.images)).load(mapped)
        except VMError as e:
            raise ModelError(str(e)) from None
        try:
            vm.reset_state()
            emulator = chip.backend.chip
            placed = vm.mapped
            pcore_of = np.asarray(vm.pcores, dtype=np.int64)          # the VM's MMU: vcore -> pcore
            axons, source = _input_axons(placed, pcore_of)
            out_ids = placed.populations["output"]
            out_pcore, out_neuron = pcore_of[placed.core_of[out_ids]], placed.local[out_ids]
            size = _fork_batch_size(batch, x.shape[0], emulator.config, steps)
            scores = np.zeros((x.shape[0], out_ids.size))
            for first in range(0, x.shape[0], size):
                chunk = x[first:first + size]
                # step t of rate_code, one event per fan-out entry of a spiking input
                inject = _RateSteps(_unit_rate(chunk / self.input_scale)[:, source])

                try:
                    run = emulator.run_batch(chunk.shape[0], steps, inject, axons=axons)
                except ForkError:
                    return None
                counts = run.spikes[:, :, run.spike_columns(out_pcore, out_neuron)].sum(axis=0)
                scores[first:first + chunk.shape[0]] = self._output_scores(
                    counts, run.state("v", out_pcore, out_neuron))
                if progress:
                    progress(first + chunk.shape[0], x.shape[0])
            return scores
        finally:
            vm.destroy()

    def predict_reference(self, x, steps: int | None = None) -> np.ndarray:
        """The same SNN simulated directly in numpy, layer by layer (no chip): a cross-check."""
        x = self._inputs(x)
        steps = self._steps(steps)
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
                    v = np.clip(v + np.asarray(w.astype(np.int64) @ src.astype(np.int64)) * 64 + bias,
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
        """Write the model as ``.nvm`` (``.npz``: a JSON header plus the integer arrays; format version 1).

        A sparse layer (a convolution's connectivity) is stored as ``wrow{l}``, ``wcol{l}``,
        ``wval{l}`` (its entries) instead of ``weight{l}``; the header field ``sparse_shapes``
        (absent when every layer is dense) gives its ``[out, in]`` shape, ``null`` for dense layers.

        Everything is checked before the target is touched (the model is re-validated, every
        array is range-checked for its on-disk dtype, the header must be strict JSON, the
        dense weights must respect the loader's limits), and the write is atomic: a failure
        or a kill leaves the previous file intact.

        Raises
        ------
        ModelError
            Naming the file and what cannot be saved.
        neurovm.atomic.SaveError
            The folder is missing or the file cannot be written.
        """
        path = Path(path)
        try:
            self._validate()
            _check_file_limits(self.config, self.sizes, [_synapse_count(w) for w in self.weights])
            arrays = self._file_arrays()
            header = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": self.config.to_dict(),
                      "layers": len(self.weights), "vth_mant": [int(v) for v in self.vth_mant],
                      "input_scale": float(self.input_scale), "steps": int(self.steps), "meta": self.meta}
            if any(_is_sparse(w) for w in self.weights):
                header["sparse_shapes"] = [list(map(int, w.shape)) if _is_sparse(w) else None for w in self.weights]
            try:
                json.dumps(header["meta"], allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ModelError(f"meta cannot be saved as strict JSON ({e})") from None
        except ModelError as e:
            raise ModelError(f"{path}: cannot save: {e}") from None
        save_npz(path, header, arrays)

    def _file_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the file, each cast to its on-disk dtype only after a range check (no wrap)."""
        arrays = {}
        for l, w in enumerate(self.weights):
            parts = [("bias_mant", self.bias_mant[l]), ("bias_exp", self.bias_exp[l])]
            if _is_sparse(w):
                coo = sp.coo_matrix(w)
                parts += [("wrow", coo.row), ("wcol", coo.col), ("wval", coo.data)]
            else:
                parts.append(("weight", w))
            for kind, a in parts:
                dtype = _FILE_DTYPES[kind]
                info = np.iinfo(dtype)
                _check_range(np.asarray(a), int(info.min), int(info.max), f"layer {l + 1}: {kind}",
                             f"saved as {info.dtype}")
                arrays[f"{kind}{l}"] = np.asarray(a).astype(dtype)
        return arrays

    @classmethod
    def load(cls, path) -> "SnnModel":
        """Read a ``.nvm`` file; everything is re-checked, and a bad file is named with what is wrong.

        The header is checked field by field (type, range, finiteness) and every array's
        dtype and shape is checked from its ``.npy`` header against limits derived from the
        file's ``ChipConfig`` before it is read (see :func:`_check_file_limits`).
        """
        return load_checked(path, MODEL_FORMAT, MODEL_VERSION, "NeuroVM model file", ModelError, cls._from_file)

    @classmethod
    def _from_file(cls, header: dict, members) -> "SnnModel":
        cfg = _header_config(header["config"])
        n = header["layers"]
        capacity = cfg.num_cores * cfg.neurons_per_core
        if not _is_int(n) or not 1 <= n <= capacity - 1:
            raise ModelError(f"header field 'layers' = {n!r}: must be an integer in 1..{capacity - 1} "
                             f"(the chip holds {capacity} neurons, one layer needs at least one)")
        sparse = _header_sparse_shapes(header.get("sparse_shapes"), n, capacity)
        kinds = [(_SPARSE_PARTS if sparse[l] else ("weight",)) + ("bias_mant", "bias_exp") for l in range(n)]
        missing = [f"{k}{l}" for l in range(n) for k in kinds[l] if f"{k}{l}" not in members]
        if missing:
            raise ModelError(f"truncated model file, array {missing[0]!r} is missing")
        shapes = [sparse[l] or _declared_shape(members, f"weight{l}") for l in range(n)]
        sizes = [shapes[0][1]] + [s[0] for s in shapes]
        for l in range(1, n):
            if shapes[l][1] != shapes[l - 1][0]:
                raise ModelError(f"layer {l + 1} has shape {shapes[l]}: it must take the "
                                 f"{shapes[l - 1][0]} outputs of layer {l} {shapes[l - 1]}")
        counts = [_declared_entries(members, l) if sparse[l] else a * b for l, (a, b) in enumerate(shapes)]
        _check_file_limits(cfg, sizes, counts)
        weights = [_read_sparse(members, l, shapes[l], counts[l]) if sparse[l] else
                   members.integers(f"weight{l}", ndim=2, max_shape=shapes[l],
                                    what=f"layer {l + 1} as declared by 'weight{l}'") for l in range(n)]
        arrs = {k: [members.integers(f"{k}{l}", ndim=1, max_shape=shapes[l][:1],
                                     what=f"layer {l + 1} as declared by its weights")
                    for l in range(n)] for k in ("bias_mant", "bias_exp")}
        for k in ("bias_mant", "bias_exp"):
            for l, a in enumerate(arrs[k]):
                if a.shape != shapes[l][:1]:
                    raise ModelError(f"array '{k}{l}' has shape {a.shape}, ({shapes[l][0]},) is required")
        vth = header["vth_mant"]
        if not isinstance(vth, list) or len(vth) != n:
            raise ModelError(f"header field 'vth_mant' = {_short(vth)}: must be a list of {n} integers")
        meta = header.get("meta", {})
        return cls(weights, arrs["bias_mant"], arrs["bias_exp"], vth, header["input_scale"],
                   header["steps"], cfg, meta)


def _header_sparse_shapes(field, n: int, capacity: int) -> list:
    """The header's ``sparse_shapes``: absent (every layer dense) or a list of ``n`` entries, each
    ``null`` (dense) or ``[out, in]`` with both sizes in ``1..capacity``."""
    if field is None:
        return [None] * n
    if not isinstance(field, list) or len(field) != n:
        raise ModelError(f"header field 'sparse_shapes' = {_short(field)}: must be a list of {n} entries "
                         f"(null or [out, in])")
    out = []
    for l, s in enumerate(field):
        if s is None:
            out.append(None)
        elif isinstance(s, list) and len(s) == 2 and all(_is_int(d) and 1 <= d <= capacity for d in s):
            out.append((int(s[0]), int(s[1])))
        else:
            raise ModelError(f"header field 'sparse_shapes' entry {l} = {_short(s)}: must be null or "
                             f"[out, in], two integers in 1..{capacity}")
    return out


def _declared_entries(members, l: int) -> int:
    """Entries of sparse layer ``l`` from its arrays' ``.npy`` headers: three 1-D arrays of one length."""
    lengths = []
    for k in _SPARSE_PARTS:
        dtype, shape, _ = members.describe(f"{k}{l}")
        if dtype.kind not in "iu" or len(shape) != 1:
            raise ModelError(f"array '{k}{l}': dtype {dtype}, shape {shape}; a 1-D integer array is required")
        lengths.append(shape[0])
    if len(set(lengths)) != 1:
        raise ModelError(f"sparse layer {l + 1}: arrays 'wrow{l}', 'wcol{l}', 'wval{l}' have lengths "
                         f"{lengths}; they must be equal")
    return lengths[0]


def _read_sparse(members, l: int, shape: tuple, count: int) -> sp.csr_matrix:
    """Sparse layer ``l``: its entries read and checked (indices within ``shape``, no entry twice)."""
    rows, cols, vals = (members.integers(f"{k}{l}", ndim=1, max_shape=(count,), what=f"sparse layer {l + 1}")
                        for k in _SPARSE_PARTS)
    for name, a, size in (("wrow", rows, shape[0]), ("wcol", cols, shape[1])):
        _check_range(a, 0, size - 1, f"array '{name}{l}'", f"indices of a {shape[0]}x{shape[1]} layer")
    key = rows.astype(np.int64) * shape[1] + cols
    if np.unique(key).size != key.size:
        raise ModelError(f"sparse layer {l + 1}: an entry (row, column) appears twice in 'wrow{l}'/'wcol{l}'")
    return sp.csr_matrix((vals, (rows, cols)), shape=shape)


def _short(x, limit: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[:limit] + "..."


def _header_config(d) -> ChipConfig:
    """The header's ``config`` as a :class:`ChipConfig`, or a ModelError naming the field and value."""
    try:
        return ChipConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ModelError(f"header field 'config': {e}") from None


def _declared_shape(members, name: str) -> tuple[int, int]:
    """Shape of weight array ``name`` from its ``.npy`` header (no data read), 2-D integers only."""
    dtype, shape, _ = members.describe(name)
    if dtype.kind not in "iu" or len(shape) != 2:
        raise ModelError(f"array {name!r}: dtype {dtype}, shape {shape}; a 2-D integer array is required")
    return shape


def _check_file_limits(cfg: ChipConfig, sizes: list[int], weight_counts: list[int]) -> None:
    """What a model for ``cfg`` can ever need: ``sizes`` (input first) and dense weight counts.

    * every population (the input and each layer) has at least one neuron, and all of them
      together fit the chip's ``num_cores x neurons_per_core`` neurons;
    * the dense weight matrices together hold at most ``num_cores x synapses_per_core``
      entries, the chip's whole synapse memory.

    These bound what loading a file allocates, whatever its content claims.
    """
    neurons = cfg.num_cores * cfg.neurons_per_core
    synapses = cfg.num_cores * cfg.synapses_per_core
    if min(sizes) < 1:
        where = sizes.index(min(sizes))
        raise ModelError(f"{'the input' if where == 0 else f'layer {where}'} has {sizes[where]} neurons, "
                         f"at least 1 is required")
    if sum(sizes) > neurons:
        raise ModelError(f"the layers have {sum(sizes)} neurons in all ({' + '.join(map(str, sizes))}); "
                         f"the chip holds at most {neurons} (num_cores={cfg.num_cores} x "
                         f"neurons_per_core={cfg.neurons_per_core})")
    if sum(weight_counts) > synapses:
        raise ModelError(f"the dense weight matrices have {sum(weight_counts)} entries in all; the chip's synapse "
                         f"memory holds at most {synapses} (num_cores={cfg.num_cores} x "
                         f"synapses_per_core={cfg.synapses_per_core})")


def _forkable(chip) -> bool:
    """``chip`` is a plain single emulator (not checked, not a batch) with no VM on it: ``predict``
    may fork it into copies without changing what any tenant sees."""
    from .backend import EmulatorBackend

    backend = getattr(chip, "backend", None)
    return isinstance(backend, EmulatorBackend) and backend.batch is None and not chip.vms


def _input_axons(mapped, pcore_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input population's fan-out entries: their (pcore, axon) pairs ``(K, 2)`` and the input
    (index in the population) each belongs to -- what the runtime injects when that input spikes."""
    ids = mapped.neurons("input")
    src, vcore, axon = mapped.fanout_of(ids)
    axons = np.stack([pcore_of[np.asarray(vcore, dtype=np.int64)], np.asarray(axon, dtype=np.int64)], axis=1)
    where = {int(n): j for j, n in enumerate(ids.tolist())}
    return axons.reshape(-1, 2), np.array([where[int(n)] for n in src], dtype=np.int64)


_FORK_MAX_COPIES = 4096
_FORK_MEMORY = 1 << 30


def _fork_batch_size(batch, samples: int, config: ChipConfig, steps: int) -> int:
    """Copies per forked run: ``batch`` (default 4096), at most the samples, and few enough that
    the copies' arrays (state, temporaries, the spike raster) stay under 1 GiB."""
    per_copy = 8 * 16 * config.neurons_per_core * config.num_cores + steps * config.neurons_per_core
    fit = max(1, _FORK_MEMORY // per_copy)
    return int(max(1, min(batch or _FORK_MAX_COPIES, samples, fit)))


def _mesh_candidates(cores_at_least: int) -> list[tuple[int, int]]:
    """Meshes ``(width, height)`` of 1..16 each with at least ``cores_at_least`` cores: fewest cores
    first, then the squarest."""
    meshes = [(w, h) for w in range(1, 17) for h in range(1, 17) if w * h >= cores_at_least]
    return sorted(meshes, key=lambda m: (m[0] * m[1], abs(m[0] - m[1]), -m[0]))


def smallest_config(network, config: ChipConfig, attempts: int = 8) -> ChipConfig:
    """The configuration with the fewest cores that maps ``network``: ``config`` with another mesh
    (and ``vcores_per_vm`` raised to the mesh's cores if needed), every other field unchanged.

    Meshes are tried fewest cores first, from the lower bound the neurons and synapses give;
    a ModelError says so when none of the first ``attempts`` candidates holds the network.
    """
    import dataclasses

    from neurovm.mapper import map_network

    arrays = network.arrays()
    bound = max(math.ceil(arrays.n / config.neurons_per_core),
                math.ceil(arrays.src.size / config.synapses_per_core), 1)
    tried = []
    for w, h in _mesh_candidates(bound)[:attempts]:
        cfg = dataclasses.replace(config, mesh_width=w, mesh_height=h,
                                  vcores_per_vm=min(256, max(config.vcores_per_vm, w * h)))
        try:
            map_network(arrays, cfg)
        except Exception:   # noqa: BLE001 - MapError and friends: try the next mesh
            tried.append(f"{w}x{h}")
            continue
        return cfg
    raise ModelError(f"no mesh of up to 16x16 cores with neurons_per_core={config.neurons_per_core}, "
                     f"synapses_per_core={config.synapses_per_core}, fanout_per_core={config.fanout_per_core}, "
                     f"axons_per_core={config.axons_per_core} holds the model (tried {', '.join(tried) or 'none'})")


def load_model(path) -> SnnModel:
    """Read a ``.nvm`` model file (see :meth:`SnnModel.load`)."""
    return SnnModel.load(path)


# ---- ONNX ----------------------------------------------------------------------------------------
def _onnx_constants(g, cfg: ChipConfig) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` node values as float64, each checked before and after it is read.

    Before: its declared shape (no dimension below 0, at most ``num_cores x synapses_per_core``
    elements: no dense layer of a model for this chip can be larger). After: every value
    finite. Errors name the initializer and the first node that uses it.
    """
    limit = cfg.num_cores * cfg.synapses_per_core
    users = _onnx_users(g)
    tensors = [(f"initializer {t.name!r}", t.name, t) for t in g.initializer]
    for node in g.node:   # Constant nodes are initializers too
        if node.op_type == "Constant":
            label = f"Constant node {node.name or node.output[0]!r}"
            if len(node.attribute) != 1 or node.attribute[0].name != "value" or not node.output:
                raise ModelError(f"{label}: only a tensor 'value' attribute is supported")
            tensors.append((label, node.output[0], node.attribute[0].t))
    return {name: _onnx_tensor(label + (f" (used by {users[name]})" if name in users else ""), t, limit, cfg)
            for label, name, t in tensors}


def _check_onnx_sizes(proto, cfg: ChipConfig) -> None:
    """Refuse any initializer or Constant tensor whose declared shape no model for ``cfg`` can use
    (see :func:`_check_dims`), before its data is read or checked."""
    g = proto.graph
    users = _onnx_users(g)
    for t in g.initializer:
        _check_dims(f"initializer {t.name!r}" + (f" (used by {users[t.name]})" if t.name in users else ""), t, cfg)
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.HasField("t"):
                    _check_dims(f"Constant node {node.name or node.output[0]!r}", a.t, cfg)


def _onnx_users(g) -> dict[str, str]:
    """Tensor name -> label of the first non-Constant node that reads it."""
    users = {}
    for k, node in enumerate(n for n in g.node if n.op_type != "Constant"):
        for name in node.input:
            users.setdefault(name, f"node {k} '{node.name or node.op_type}'")
    return users


def _check_dims(label: str, t, cfg: ChipConfig) -> None:
    """At most ``num_cores x synapses_per_core`` elements (no dense layer of a model for this chip can be
    larger: its file would be refused), no dimension below 0."""
    limit = cfg.num_cores * cfg.synapses_per_core
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims) or math.prod(dims) > limit:
        raise ModelError(f"{label}: shape {dims} ({math.prod(dims)} elements) is not possible for this chip: "
                         f"at most {limit} elements (num_cores={cfg.num_cores} x "
                         f"synapses_per_core={cfg.synapses_per_core}), no dimension below 0")


def _onnx_tensor(label: str, t, limit: int, cfg: ChipConfig) -> np.ndarray:
    from onnx import numpy_helper

    _check_dims(label, t, cfg)
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:   # noqa: BLE001 - data that does not match its dims, unknown types
        raise ModelError(f"{label}: unreadable tensor ({type(e).__name__}: {_first_line(e)})") from None
    return real_array(a, label)


def ann_forward(layers, x: np.ndarray) -> list[np.ndarray]:
    """Activations of every layer (the last one without ReLU) of the float network."""
    acts = [np.asarray(x, dtype=np.float64)]
    for l, (w, b) in enumerate(layers):
        z = np.asarray(acts[-1] @ w.T) + b
        acts.append(np.maximum(z, 0) if l < len(layers) - 1 else z)
    return acts


def _quantise(layers, calib: np.ndarray, cfg: ChipConfig, percentile: float, steps: int, meta: dict) -> SnnModel:
    """Data-based normalisation (``lam`` from ``calib``'s activations), then :func:`quantise_layers`."""
    with np.errstate(over="ignore", invalid="ignore"):
        acts = ann_forward(layers, calib)
    for l, a in enumerate(acts[1:]):
        real_array(a, f"layer {l + 1}: activations on the calibration data (overflow)")
    lam = [max(float(np.percentile(a[a > 0], percentile)) if (a > 0).any() else 1.0, 1e-9) for a in acts]
    return quantise_layers(layers, lam, cfg, steps, {**meta, "percentile": percentile})


def quantise_layers(layers, lam: list, cfg: ChipConfig, steps: int, meta: dict) -> SnnModel:
    """Integer SNN layers from float layers ``(W, b)`` (``W`` dense or sparse) and normalisation ``lam``
    (one value per population, the input's first): step 3 of the module docstring.

    The output layer gets the largest threshold (``vth_mant = 2^17 - 1``): it does not spike, its
    membrane integrates the (linear, possibly negative) logits exactly, and the score ``count +
    v / (vth·64 + 1)`` is then ``v`` scaled below 1, the logits' sum over the steps (a positive ``v``
    that saturates spikes once and still outscores every other neuron)."""
    weights, bm, be, vth = [], [], [], []
    for l, (w, b) in enumerate(layers):
        factor = lam[l] / lam[l + 1]
        with np.errstate(over="ignore", invalid="ignore"):
            wn = sp.csr_matrix(w, dtype=np.float64) * factor if _is_sparse(w) else w * factor
            values = real_array(_weight_values(wn), f"layer {l + 1}: normalised weights (overflow)")
            bn = real_array(b / lam[l + 1], f"layer {l + 1}: normalised bias (overflow)")
        scale = cfg.weight_max / max(np.abs(values).max() if values.size else 0.0, 1e-12)
        scale = min(scale, _VTH_MANT_MAX)
        if _is_sparse(wn):
            wq = wn.copy()
            wq.data = np.rint(values * scale).astype(np.int64)
            wq.eliminate_zeros()
            weights.append(wq.astype(np.int64))
        else:
            weights.append(np.rint(wn * scale).astype(np.int64))   # |wn * scale| <= wmax: no overflow
        # the output layer integrates without spiking (its ANN layer has no ReLU): v carries the logits
        vth.append(_VTH_MANT_MAX if l == len(layers) - 1 else max(1, int(round(scale))))
        mant, exp = _bias_fields(bn * scale * 64, f"layer {l + 1}")
        bm.append(mant)
        be.append(exp)
    meta = {**meta, "normalisation": [float(x) for x in lam]}
    return SnnModel(weights, bm, be, vth, lam[0], steps, cfg, meta)


def _bias_fields(braw: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``bias_mant << bias_exp`` ~ ``braw`` with the smallest ``bias_exp`` per neuron; range checked
    in floating point before any integer cast, so nothing wraps."""
    exp = np.zeros(braw.shape, dtype=np.int64)
    mant_f = np.rint(braw)
    over = np.abs(mant_f) > _BIAS_MANT_MAX
    while over.any() and exp.max() < _BIAS_EXP_MAX:
        exp[over] += 1
        mant_f = np.rint(braw / np.exp2(exp))
        over = np.abs(mant_f) > _BIAS_MANT_MAX
    if over.any():
        k = int(np.argmax(over))
        raise ModelError(f"{what}: bias of neuron {k} is too large for the chip even at bias_exp={_BIAS_EXP_MAX} "
                         f"({float(braw[k]):.0f}, the most is {_BIAS_MANT_MAX << _BIAS_EXP_MAX})")
    return mant_f.astype(np.int64), exp


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def convert_onnx(model, calibration=None, config: ChipConfig | str = DEFAULT_CONFIG, percentile: float = 99.9,
                 steps: int = 64, input_max: float = 1.0) -> SnnModel:
    """Convert an ONNX ReLU network or CNN (path, bytes or ``onnx.ModelProto``) to an :class:`SnnModel`.

    Parameters
    ----------
    calibration : array_like, optional
        Input samples ``(n, inputs)`` used to normalise weights and thresholds (a few
        hundred training samples are plenty).  Without it the normalisation is data-free
        (the weights on synthetic inputs uniform in ``[0, input_max]``) and a
        ``CalibrationWarning`` says that calibration data improves accuracy.
    config : ChipConfig or "auto"
        ``"auto"`` picks the smallest configuration the model fits.

    The operators understood are listed in :mod:`neurovm.host.importers.onnx`
    (docs/architecture.md §18); anything else is refused naming the node.
    """
    from .importers.convert import convert_ops
    from .importers.onnx import onnx_ops

    proto, source = _read_onnx(model, config if isinstance(config, ChipConfig) else DEFAULT_CONFIG)
    init = _onnx_constants(proto.graph, config if isinstance(config, ChipConfig) else DEFAULT_CONFIG)
    try:
        ops, shape = onnx_ops(proto, init)
    except ModelError:
        raise
    except (ValueError, IndexError) as e:   # shapes that do not broadcast, nodes missing inputs
        raise ModelError(f"the ONNX graph's shapes do not fit a chain of layers ({e})") from None
    return convert_ops(ops, shape, calibration, config, percentile, steps, {"source": f"onnx:{source}"}, input_max)


def _read_onnx(model, config: ChipConfig):
    """``(onnx.ModelProto, source name)`` from a path, bytes or a ModelProto, sizes and validity checked."""
    import onnx

    try:
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.exists():
                raise ModelError(f"{path}: no such file")
            proto = onnx.load(str(path), load_external_data=False)
            _check_onnx_sizes(proto, config)   # external data included, before it is read
            onnx.load_external_data_for_model(proto, str(path.parent))
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
    if not isinstance(proto, onnx.ModelProto):
        raise ModelError(f"expected an ONNX model (path, bytes or onnx.ModelProto), not {type(proto).__name__}")
    _check_onnx_sizes(proto, config)
    try:
        onnx.checker.check_model(proto)
    except Exception as e:   # noqa: BLE001
        raise ModelError(f"invalid ONNX model (onnx.checker: {_first_line(e)})") from None
    return proto, source


def convert_pytorch(module, example_input=None, calibration=None, config: ChipConfig | str = DEFAULT_CONFIG,
                    **kw) -> SnnModel:
    """Convert a PyTorch module, TorchScript file or ``torch.export`` file (through ONNX).

    Parameters
    ----------
    module : torch.nn.Module, str or Path
        A module (``torch.jit.ScriptModule`` included); a TorchScript file
        (``torch.jit.save``, usually ``.pt``); or a ``torch.export`` file (``.pt2``,
        ``torch.export.save``), which carries its own example input.  A bare
        ``state_dict`` (``.pth``) has no architecture and is refused saying what is needed.
    example_input : torch.Tensor or tuple, optional
        One input batch for tracing (e.g. ``torch.zeros(1, 1, 8, 8)``); default: the
        ``.pt2`` file's own, else the first calibration sample.
    calibration : array_like, optional
        As for :func:`convert_onnx`; without it the normalisation is data-free (warned).

    The other arguments are :func:`convert_onnx`'s.
    """
    import warnings

    try:
        import torch
    except ImportError:
        raise ModelError("convert_pytorch needs PyTorch (pip install torch); or export to ONNX yourself "
                         "and call convert_onnx") from None
    module, example_input, source = _torch_module(module, example_input, calibration)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the tracer's and the exporter's notices
            torch.onnx.export(module, example_input, buf, input_names=["x"], output_names=["y"], dynamo=False)
    except Exception as e:   # noqa: BLE001 - tracing/export failures of the user's module: one clear message
        raise ModelError(f"{source}: cannot export to ONNX ({type(e).__name__}: {_first_line(e)})") from None
    model = convert_onnx(buf.getvalue(), calibration, config, **kw)
    model.meta["source"] = f"pytorch:{source}"
    return model


_STATE_DICT_HELP = ("convert_pytorch needs the architecture too: pass the module itself "
                    "(model = MyNet(); model.load_state_dict(torch.load(path)); convert_pytorch(model, "
                    "example_input)), or save a TorchScript file (torch.jit.save(torch.jit.trace(model, x), "
                    "'model.pt')) or a torch.export file (torch.export.save(torch.export.export(model, (x,)), "
                    "'model.pt2'))")


def _torch_module(module, example_input, calibration):
    """``(module, example input, source name)`` from a module or a file (see :func:`convert_pytorch`)."""
    import torch

    source = type(module).__name__
    if isinstance(module, (str, Path)):
        path = Path(module)
        if not path.exists():
            raise ModelError(f"{path}: no such file")
        if path.is_dir():
            raise ModelError(f"{path}: is a folder, not a PyTorch file")
        source = path.name
        if path.suffix == ".pt2":
            module, example_input = _load_exported(path, example_input)
        else:
            module = _load_torchscript(path)
    elif not isinstance(module, torch.nn.Module):
        raise ModelError(f"convert_pytorch takes a torch.nn.Module or the path of a TorchScript (.pt) or "
                         f"torch.export (.pt2) file, not {type(module).__name__}")
    if example_input is None:
        example_input = _example_from_calibration(calibration, source)
    return module, example_input, source   # torch.onnx.export traces in eval mode and restores the mode


def _load_exported(path: Path, example_input):
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as e:   # noqa: BLE001 - a damaged or foreign file: one clear message
        raise ModelError(f"{path}: not a readable torch.export file ({type(e).__name__}: {_first_line(e)})") \
            from None
    if example_input is None:
        example = getattr(program, "example_inputs", None)
        if example is None or not example[0]:
            raise ModelError(f"{path}: the torch.export file has no example inputs; pass example_input")
        example_input = tuple(torch.zeros_like(t) for t in example[0])
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        return torch.jit.trace(program.module(), args), example_input
    except Exception as e:   # noqa: BLE001
        raise ModelError(f"{path}: cannot trace the exported program ({type(e).__name__}: {_first_line(e)})") \
            from None


def _load_torchscript(path: Path):
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception:   # noqa: BLE001 - not TorchScript: say what it is, if it can be told safely
        pass
    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:   # noqa: BLE001 - a pickled module (weights_only refuses code) or not PyTorch at all
        raise ModelError(f"{path}: not a TorchScript or torch.export file (a pickled module from "
                         f"torch.save(model) is not loaded: unpickling runs arbitrary code); "
                         f"{_STATE_DICT_HELP}") from None
    if isinstance(content, dict):
        names = [k for k in content if isinstance(k, str)][:3]
        raise ModelError(f"{path}: a state_dict (weights only: {len(content)} entries such as "
                         f"{', '.join(map(repr, names))}) has no architecture; {_STATE_DICT_HELP}")
    raise ModelError(f"{path}: holds a {type(content).__name__}, not a model; {_STATE_DICT_HELP}")


def _example_from_calibration(calibration, source: str):
    """The first calibration sample as a float32 batch of one, the default ``example_input``."""
    import torch

    if calibration is None:
        raise ModelError(f"{source}: example_input is needed to trace the model (one input batch, e.g. "
                         f"torch.zeros(1, 1, 28, 28)), or calibration data whose first sample serves as one")
    calib = real_array(calibration, "calibration data")
    if calib.ndim < 2 or not calib.shape[0]:
        raise ModelError(f"calibration data of shape {calib.shape} cannot give an example input; pass example_input")
    return torch.as_tensor(calib[:1], dtype=torch.float32)
