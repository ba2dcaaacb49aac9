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
    # negative exponents: Loihi's two-part shift, floor(w * 2^e) first, then * 64 (spec §4)
    (1, -7, 0), (-1, -7, -64),     # floor(1/128) = 0, floor(-1/128) = -1
    (3, -8, 0), (-3, -8, -64), (5, -6, 0), (-128, -8, -64), (-128, -7, -64),
    (100, -1, 3200), (-3, -1, -128), (7, -2, 64), (127, -6, 64), (-127, -6, -128),
])
def test_weight_scaling_is_loihis_two_part_shift(w, e, expected):
    assert int(scaled_weight(np.array([w]), e)[0]) == expected
    assert ref.scaled_weight(w, e) == expected


def test_weight_scaling_is_a_multiple_of_64_for_every_exponent():
    """Every weight of every width and every exponent -8..7: floor(w * 2^e) * 64, exactly."""
    from fractions import Fraction
    from math import floor
    w = np.arange(-128, 128)
    for e in range(-8, 8):
        got = scaled_weight(w, e)
        want = np.array([floor(Fraction(int(x)) * Fraction(2) ** e) * 64 for x in w])
        assert np.array_equal(got, want), e
        assert np.all(got % 64 == 0)


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



# ---- the exact divergences from Lava's bit-accurate LIF (spec §11) ------------------------------
def _lava_u_wrap(x: int) -> int:
    """Lava PyLifModelBitAcc's single-correction wrap of the pre-wrap current (as spec §11 quotes it)."""
    x = x - 2**24 if x > 2**23 else x
    return x + 2**24 if x <= -(2**23) else x


def _spec_11_says_lava_differs(x: int) -> bool:
    return x in (2**23, 3 * 2**23, -(2**23)) or x > 3 * 2**23 or x < -3 * 2**23


def test_u_wrap_differs_from_lava_exactly_where_spec_11_says():
    rng = np.random.default_rng(11)
    edges = [k * 2**23 + d for k in range(-5, 6) for d in (-2, -1, 0, 1, 2)]
    xs = edges + rng.integers(-6 * 2**23, 6 * 2**23, size=5000).tolist()
    for x in xs:
        ours = int(wrap_state(np.array([x], dtype=np.int64))[0])
        assert ours == ref.wrap24(x) and U_MIN <= ours <= U_MAX
        assert (ours != _lava_u_wrap(x)) == _spec_11_says_lava_differs(x), x


def test_negative_exponent_applies_per_synapse_not_per_step():
    """Two synapses of w=1 into one neuron at e=-1: Loihi (and NeuroVM) add 0 + 0; Lava's per-step
    floor(sum * 2^e) * 64 would add 64.  Checked end to end on the emulator chip's ACC."""
    from neurovm.config import HV_VM, ChipConfig
    from neurovm.emulator import Chip
    from neurovm.formats import Region
    from neurovm.host.protocol import encode_inject, encode_read, encode_write
    from neurovm.image import CoreImage

    cfg = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=4, synapses_per_core=8, axons_per_core=2,
                     fanout_per_core=2)
    for w, e, per_synapse in ((1, -1, 0), (3, -1, 2 * 64), (-1, -1, -2 * 64), (5, 2, 2 * 5 * 256)):
        chip = Chip(cfg)
        img = CoreImage(du=[0] * 4, dv=[0] * 4, refract=[0] * 4, bias_mant=[0] * 4, bias_exp=[0] * 4,
                        vth_mant=[0] * 4, fo_start=[0] * 4, fo_len=[0] * 4, report=[0] * 4,
                        syn_start=[0], syn_len=[2], target=[0, 0], weight=[w, w], weight_exp=e, n_active=4)
        for region, words in img.region_words(cfg).items():
            assert chip.feed(encode_write(HV_VM, 0, region, 0, [int(x) for x in words])).size == 0
        chip.feed(encode_inject(HV_VM, 0, 0))
        acc = int(chip.feed(encode_read(HV_VM, 0, Region.ACC, 0, 1))[1])
        acc = acc - 2**32 if acc >= 2**31 else acc
        assert acc == per_synapse, (w, e, acc)
