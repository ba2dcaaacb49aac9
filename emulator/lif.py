"""Vectorized, bit-exact CUBA-LIF arithmetic (docs/architecture.md §4).

All functions take and return ``int64`` arrays holding the exact integer
values of the hardware registers; widths, wrapping and saturation are applied
explicitly, never left to the dtype's overflow.  The arrays may be numpy or
CuPy (any shape: a leading batch axis is fine); each function works in the
namespace of its inputs (:func:`.xp.namespace_of`), so the same code is the
CPU and the GPU arithmetic.
"""

from __future__ import annotations

import numpy as np

from neurovm.config import (
    ACT_SHIFT,
    DECAY_BITS,
    DECAY_UNITY,
    DU_OFFSET,
    DV_OFFSET,
    STATE_BITS,
    TRACE_MAX,
    U_MIN,
    V_MAX,
    V_MIN,
    VTH_SHIFT,
)

from .xp import namespace_of

_STATE_MASK = (1 << STATE_BITS) - 1


def wrap_state(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap into the 24-bit signed range [-2^23, 2^23-1]."""
    return ((x - U_MIN) & _STATE_MASK) + U_MIN


def decay(x: np.ndarray, d_eff: np.ndarray) -> np.ndarray:
    """``sign(x) * floor(|x| * (4096 - d_eff) / 4096)``: the shift rounds toward zero."""
    xp = namespace_of(x, d_eff)
    mag = (xp.abs(x) * (DECAY_UNITY - d_eff)) >> DECAY_BITS
    return xp.where(x < 0, -mag, mag)


def scaled_weight(weight: np.ndarray, weight_exp) -> np.ndarray:
    """Per-synapse input ``floor(w * 2^weight_exp) * 2^6`` (Loihi's two-part weight shift).

    The exponent shift comes first: left for ``weight_exp >= 0``, an arithmetic right
    shift (rounds toward -inf) for negative exponents; then the 6-bit MSB alignment
    (``ACT_SHIFT``), so every synaptic input is a multiple of 64 (spec §4, §11).
    """
    xp = namespace_of(weight, weight_exp)
    exp = xp.asarray(weight_exp, dtype=xp.int64)
    weight = xp.asarray(weight, dtype=xp.int64)
    exp_shifted = (weight << xp.maximum(exp, 0)) >> xp.maximum(-exp, 0)
    return exp_shifted << ACT_SHIFT


def lif_step(u, v, ref, acc, du, dv, bias_mant, bias_exp, vth_mant, refract):
    """One timestep of a vector of neurons.

    Parameters
    ----------
    u, v, ref : ndarray of int64
        Current (24-bit wrapping), voltage (24-bit saturating, symmetric) and
        refractory counter (6-bit) before the step.
    acc : ndarray of int64
        The input accumulated for this step (already wrapped to 24 bits).
    du, dv, bias_mant, bias_exp, vth_mant, refract : ndarray of int64
        Neuron parameters (field values of NRN_DECAY, NRN_BIAS, NRN_VTH).

    Returns
    -------
    u, v, ref, spiked : ndarray
        New state; ``spiked`` is boolean.
    """
    xp = namespace_of(u, v, ref, acc)
    u = wrap_state(decay(u, du + DU_OFFSET) + acc)
    v_int = decay(v, dv + DV_OFFSET) + u + (bias_mant << bias_exp)
    v_int = xp.clip(v_int, V_MIN, V_MAX)
    refractory = ref > 0
    spiked = (~refractory) & (v_int > (vth_mant << VTH_SHIFT))
    v = xp.where(refractory | spiked, 0, v_int)
    ref = xp.where(refractory, ref - 1, xp.where(spiked, refract, 0))
    return u, v, ref, spiked


# ---------------------------------------------------------------------------
# on-chip learning (docs/architecture.md §24)
# ---------------------------------------------------------------------------
def trace_step(trace, decay_d, impulse, spiked):
    """One step of a 7-bit trace: ``min(TRACE_MAX, floor(x * (4096 - d) / 4096) + impulse * spiked)``.

    The decay truncates (a trace is never negative, so toward zero and toward -inf agree);
    the increment saturates at ``TRACE_MAX``.  ``spiked`` is 0/1 (or bool).
    """
    xp = namespace_of(trace, decay_d)
    decayed = (trace * (DECAY_UNITY - decay_d)) >> DECAY_BITS
    return xp.minimum(decayed + impulse * spiked, TRACE_MAX)


def stdp_dw(x, x0, y, y0, a_plus, s_plus, a_minus, s_minus):
    """The weight change of one (axon, synapse) pair at a learning pass (§24.3).

    ``dw = y0 * ((a_plus * x) >> s_plus) - x0 * ((a_minus * y) >> s_minus)``: each product is
    shifted on its own with an arithmetic right shift (floor, toward -inf), then the two terms
    are gated by the epoch flags and subtracted.  All arguments broadcast; int64 in and out.
    """
    ltp = (a_plus * x) >> s_plus
    ltd = (a_minus * y) >> s_minus
    return y0 * ltp - x0 * ltd
