"""From the layer IR to an :class:`~neurovm.host.model.SnnModel`: lowering, normalisation, quantisation.

Normalisation (docs/architecture.md §18) is data-based when calibration samples are
given (the ``percentile`` of each layer's ReLU activations), else data-free, from the
weights alone: the same percentiles on 256 seeded synthetic inputs uniform in
``[0, input_max]``.  (The strict weight bound ``lam[l+1] = max_j sum_i max(W_ji, 0)
lam[l]`` was tried: it is so loose that a digits CNN stayed at chance level after 64
steps, against 93% this way.)  A :class:`CalibrationWarning` says that calibration data
improves accuracy.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import scipy.sparse as sp

from neurovm.config import DEFAULT_CONFIG, ChipConfig

from ..model import MAX_STEPS, ModelError, SnnModel, _is_int, _is_real, ann_forward, quantise_layers, real_array, \
    smallest_config
from .layers import lower

__all__ = ["convert_ops", "CalibrationWarning"]

#: Synthetic input samples of the data-free normalisation.
_SYNTHETIC_SAMPLES = 256
#: A layer denser than this is stored (and checked) as a dense matrix; sparser ones as entries.
_DENSE_FILL = 0.5


class CalibrationWarning(UserWarning):
    """Conversion without calibration data: data-free normalisation from the weights, usually less accurate."""


def convert_ops(ops: list, input_shape: tuple, calibration=None, config: ChipConfig | str = DEFAULT_CONFIG,
                percentile: float = 99.9, steps: int = 64, meta: dict | None = None,
                input_max: float = 1.0) -> SnnModel:
    """Lower, normalise and quantise the IR ``ops`` applied to inputs of ``input_shape``.

    Parameters
    ----------
    calibration : array_like or None
        Samples ``(n, prod(input_shape))`` (or ``(n, *input_shape)``) for data-based
        normalisation; ``None``: data-free normalisation with a :class:`CalibrationWarning`.
    config : ChipConfig or "auto"
        The chip the model is for; ``"auto"``: the smallest configuration (fewest cores,
        :data:`DEFAULT_CONFIG`'s core sizes) that the mapped model fits.
    input_max : float
        Without calibration: the largest input value (inputs are assumed in ``[0, input_max]``).
    """
    auto = isinstance(config, str)
    if auto and config != "auto":
        raise ModelError(f"config must be a ChipConfig or 'auto', not {config!r}")
    cfg = DEFAULT_CONFIG if auto else config
    if not isinstance(cfg, ChipConfig):
        raise ModelError(f"config must be a ChipConfig or 'auto', not {type(config).__name__}")
    _check_options(percentile, steps)
    # in 'auto' the synapse limit per layer is the largest chip's
    limit = (256 if auto else cfg.num_cores) * cfg.synapses_per_core
    lowered = lower(ops, input_shape, limit)
    layers = [(_storage(layer.weight), layer.bias) for layer in lowered]
    meta = {**(meta or {}), "layers": [list(map(int, layer.weight.shape)) for layer in lowered],
            "input_shape": [int(d) for d in input_shape]}
    n_in = lowered[0].weight.shape[1]
    if calibration is None:
        warnings.warn("no calibration data: normalised from the weights on synthetic inputs in "
                      f"[0, {input_max}]; calibration data (a few hundred training samples) improves accuracy",
                      CalibrationWarning, stacklevel=3)
        lam = _data_free_lam(layers, n_in, input_max, percentile)
        model = quantise_layers(layers, lam, cfg, steps, {**meta, "normalisation_kind": "data-free"})
    else:
        calib = real_array(calibration, "calibration data")
        if calib.ndim >= 2 and calib.shape[0] and math.prod(calib.shape[1:]) == n_in:
            calib = calib.reshape(calib.shape[0], n_in)
        if calib.ndim != 2 or calib.shape[1] != n_in or not calib.shape[0]:
            raise ModelError(f"calibration data must have shape (samples, {n_in}), not {calib.shape}"
                             + (" (at least one sample)" if calib.ndim >= 2 and not calib.shape[0] else ""))
        model = _calibrated(layers, calib, cfg, percentile, steps, meta)
    if auto:
        model = dataclasses.replace(model, config=smallest_config(model.network(), cfg))
    return model


def _check_options(percentile, steps) -> None:
    if not (_is_real(percentile) and 0 < float(percentile) <= 100):
        raise ModelError(f"percentile must be a number in (0, 100], not {percentile!r}")
    if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
        raise ModelError(f"steps must be an integer in 1..{MAX_STEPS}, not {steps!r}")


def _storage(w: sp.csr_matrix):
    """A dense array for a (mostly) full layer, the CSR matrix for a sparse one."""
    fill = w.nnz / max(1, w.shape[0] * w.shape[1])
    return w.toarray() if fill > _DENSE_FILL else w


def _calibrated(layers, calib, cfg, percentile, steps, meta) -> SnnModel:
    from ..model import _quantise

    return _quantise(layers, calib, cfg, percentile, steps, {**meta, "normalisation_kind": "data"})


def _data_free_lam(layers, n_in: int, input_max: float, percentile: float) -> list[float]:
    """``lam`` without calibration data: the ``percentile`` of each layer's activations on
    :data:`_SYNTHETIC_SAMPLES` inputs drawn uniformly from ``[0, input_max]`` (seeded: the same
    model always converts the same way), so only the weights decide it."""
    if not (_is_real(input_max) and math.isfinite(float(input_max)) and float(input_max) > 0):
        raise ModelError(f"input_max must be a positive finite number, not {input_max!r}")
    synthetic = np.random.default_rng(0).random((_SYNTHETIC_SAMPLES, n_in)) * float(input_max)
    with np.errstate(over="ignore", invalid="ignore"):
        acts = ann_forward(layers, synthetic)
    for l, a in enumerate(acts[1:]):
        real_array(a, f"layer {l + 1}: activations on synthetic inputs (overflow)")
    return [float(input_max)] + [max(float(np.percentile(a[a > 0], percentile)) if (a > 0).any() else 1.0, 1e-9)
                                 for a in acts[1:]]


def check_forward(ops: list, input_shape: tuple, x: np.ndarray) -> np.ndarray:
    """The ANN's outputs for ``x`` computed from the lowered layers (a cross-check for tests)."""
    lowered = lower(ops, input_shape, 1 << 40)
    return ann_forward([(layer.weight, layer.bias) for layer in lowered], x.reshape(x.shape[0], -1))[-1]
