"""Arithmetic corners of the neuron model, each checked on the emulator's vectorized
datapath and on the scalar reference, against values worked out by hand (spec §4)."""

import numpy as np
import pytest

from neurovm.config import U_MAX, U_MIN, V_MAX, V_MIN
from neurovm.emulator.lif import decay, lif_step, scaled_weight, wrap_state
from tests import reference as ref


def step1(u=0, v=0, r=0, acc=0, du=0, dv=0, bias_mant=0, bias_exp=0, vth_mant=0, refract=0):
    a = lambda x: np.array([x], dtype=np.int64)  # noqa: E731
    out = lif_step(a(u), a(v), a(r), a(acc), a(du), a(dv), a(bias_mant), a(bias_exp), a(vth_mant), a(refract))
    return tuple(int(x[0]) for x in out)


@pytest.mark.parametrize("x,d,expected", [
    (-5, 1, -4),        # -5*4095/4096 = -4.9988 -> toward zero -4 (floor would give -5)
    (5, 1, 4),
    (-4096, 1, -4095),
    (-1, 4095, 0),      # |x|*1/4096 -> 0, sign kept out of the way
    (U_MIN, 1, -8386560),  # the most negative u decays without overflow: 2^23*4095/4096
    (123456, 0, 123456),   # d_eff 0: no decay
    (-123456, 4096, 0),    # d_eff 4096: full decay
])
def test_decay_rounds_toward_zero(x, d, expected):
    assert int(decay(np.array([x]), np.array([d]))[0]) == expected
    assert ref.decay_toward_zero(x, d) == expected


@pytest.mark.parametrize("x,expected", [
    (U_MAX + 1, U_MIN), (U_MIN - 1, U_MAX), (U_MAX + 5, U_MIN + 4), (3 * 2**24 + 7, 7), (-(2**24) - 3, -3),
])
def test_u_wraps_twos_complement(x, expected):
    assert int(wrap_state(np.array([x]))[0]) == expected
    assert ref.wrap24(x) == expected


@pytest.mark.parametrize("w,e,expected", [
    (127, 7, 127 * 2**13), (-128, 7, -128 * 2**13), (1, 0, 64), (-1, 0, -64),
    (1, -7, 0), (-1, -7, -1),      # 2^-1: floor(0.5)=0, floor(-0.5)=-1 (rounds down)
    (3, -8, 0), (-3, -8, -1), (5, -6, 5), (-128, -8, -32),
])
def test_weight_scaling_rounds_down(w, e, expected):
    assert int(scaled_weight(np.array([w]), e)[0]) == expected
    assert ref.scaled_weight(w, e) == expected


def test_u_overflow_wraps_inside_the_step():
    # decayed u (du=4095 -> full decay) + input beyond 2^23-1 wraps to negative
    u, v, r, s = step1(u=100, acc=U_MAX, du=0)  # 100*4094/4096 -> 99; 99 + U_MAX wraps
    assert u == U_MIN + 98
    assert v == U_MIN + 98 and not s   # v = 0 + u, in range, below any threshold


def test_v_saturates_at_the_negative_end_symmetrically():
    _, v, _, s = step1(v=V_MIN, dv=0, bias_mant=-4096, bias_exp=7)
    assert v == V_MIN == -(2**23 - 1) and not s
    _, v, _, _ = step1(v=V_MIN, u=U_MIN, dv=0)   # -(2^23-1) + -(2^23) clips, does not wrap
    assert v == V_MIN


def test_saturated_v_above_max_threshold_spikes():
    _, v, r, s = step1(v=V_MAX, dv=0, vth_mant=2**17 - 1, refract=5)
    assert s and v == 0 and r == 5


def test_threshold_equality_does_not_spike():
    _, v, _, s = step1(bias_mant=640, vth_mant=10)  # v = 640 = vth
    assert (v, s) == (640, False)
    _, v, _, s = step1(bias_mant=641, vth_mant=10)
    assert (v, s) == (0, True)


def test_zero_decay_holds_voltage_and_du_offset_applies_to_u():
    u, v, _, _ = step1(u=1000, v=5000, du=0, dv=0, vth_mant=2**17 - 1)
    assert u == 1000 * 4095 // 4096  # u always decays by at least 1/4096 (Loihi ds_offset = 1)
    assert v == 5000 + u            # dv=0: v holds
    u, _, _, _ = step1(u=1000, du=4095)
    assert u == 0                   # du=4095 -> effective 4096: u is cleared


def test_bias_only_drives_regular_spikes():
    st = dict(u=0, v=0, r=0)
    times = []
    for t in range(1, 11):
        u, v, r, s = step1(st["u"], st["v"], st["r"], bias_mant=100, bias_exp=1, vth_mant=9)  # 200/step, vth 576
        st.update(u=u, v=v, r=r)
        if s:
            times.append(t)
    assert times == [3, 6, 9]


def test_refractory_holds_v_at_zero_but_u_integrates():
    u, v, r, s = step1(u=0, v=0, r=2, acc=5000, du=0, bias_mant=4000, vth_mant=1)
    assert (u, v, r, s) == (5000, 0, 1, False)
    u, v, r, s = step1(u=u, v=v, r=r, du=4095, vth_mant=1)
    assert (v, r, s) == (0, 0, False)

