"""Numbers a user or a file hands in: NaN/inf/complex/out-of-range weights, biases, calibration data,
predict inputs and NIR parameters are refused by name (array, index, value); integers never wrap."""

from __future__ import annotations

import tracemalloc

import h5py
import nir
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from neurovm.examples import mlp_to_onnx
from neurovm.host.model import ModelError, SnnModel, convert_onnx
from neurovm.host.nir_import import NirError, import_nir


def small_model() -> SnnModel:
    rng = np.random.default_rng(0)
    return SnnModel([rng.integers(-127, 128, (6, 4)), rng.integers(-127, 128, (3, 6))],
                    [np.zeros(6, np.int64), np.zeros(3, np.int64)], [np.zeros(6, np.int64), np.zeros(3, np.int64)],
                    [60, 60], 1.0, 8)


BAD_INPUTS = [
    (np.nan, r"inputs: value nan at \[1, 2\] is not a finite number"),
    (np.inf, r"inputs: value inf at \[1, 2\] is not a finite number"),
    (-np.inf, r"inputs: value -inf at \[1, 2\] is not a finite number"),
    (1 + 2j, r"inputs: complex values are not accepted \(dtype complex128; np.complex128\(1\+2j\) at \[1, 2\]\)"),
]


@pytest.mark.parametrize("value,pattern", BAD_INPUTS)
def test_predict_refuses_non_finite_and_complex_inputs_by_index(value, pattern):
    model = small_model()
    x = np.zeros((3, 4), dtype=complex if isinstance(value, complex) else float)
    x[1, 2] = value
    for run in (model.predict, model.predict_reference):
        with pytest.raises(ModelError, match=pattern):
            run(x)
    with pytest.raises(ModelError, match=pattern.replace("inputs", "input sample").replace(r"\[1, 2\]", r"\[2\]")):
        model.encode(x[1])
    with pytest.raises(ModelError, match=r"inputs: must be real numbers, not dtype <U1"):
        model.predict(np.array([["a"] * 4]))
    with pytest.raises(ModelError, match=r"steps must be an integer in 1..65536, not 0"):
        model.predict(np.zeros((1, 4)), steps=0)


def test_model_arrays_must_be_in_range_integers():
    good = small_model()
    w, bm, be = good.weights, good.bias_mant, good.bias_exp
    cases = [
        (dict(weights=[w[0].astype(float), w[1]]), r"layer 1: weights: must be integers, not dtype float64"),
        (dict(bias_mant=[np.full(6, np.nan), bm[1]]), r"layer 1: bias_mant: must be integers, not dtype float64"),
        (dict(bias_mant=[bm[0], np.full(3, 2 ** 40)]),
         r"layer 2: bias_mant outside -4096..4095 \(13-bit signed\): value 1099511627776 at \[0\]"),
        (dict(bias_mant=[bm[0], np.full(3, -2 ** 63)]), r"layer 2: bias_mant outside -4096..4095"),
        (dict(bias_exp=[be[0], np.full(3, 8)]), r"layer 2: bias_exp outside 0..7 \(3-bit unsigned\): value 8"),
        (dict(weights=[w[0], np.full((3, 6), 2 ** 16 + 5)]), r"layer 2: weights outside -128..127"),
        (dict(vth_mant=[60, 1.7]), r"layer 2: vth_mant 1.7 must be an integer in 0..131071"),
        (dict(vth_mant=[60, True]), r"layer 2: vth_mant True must be an integer"),
        (dict(input_scale=float("nan")), r"input_scale must be a positive finite number, not nan"),
        (dict(input_scale=1 + 0j), r"input_scale must be a positive finite number, not \(1\+0j\)"),
        (dict(steps=2.0), r"steps must be an integer in 1..65536, not 2.0"),
    ]
    base = dict(weights=w, bias_mant=bm, bias_exp=be, vth_mant=[60, 60], input_scale=1.0, steps=8)
    for change, pattern in cases:
        with pytest.raises(ModelError, match=pattern):
            SnnModel(**{**base, **change})


def test_save_never_wraps_integers_and_leaves_the_file(tmp_path):
    """A model changed after construction (bias_mant 70000 would wrap to 4464 as int16) is refused
    before the file is touched."""
    path = tmp_path / "m.nvm"
    model = small_model()
    model.save(path)
    before = path.read_bytes()
    model.bias_mant[0] = np.full(6, 70000)
    with pytest.raises(ModelError, match=r"m.nvm: cannot save: layer 1: bias_mant outside -4096..4095"):
        model.save(path)
    model = small_model()
    model.meta["bad"] = float("nan")
    with pytest.raises(ModelError, match=r"m.nvm: cannot save: meta cannot be saved as strict JSON"):
        model.save(path)
    assert path.read_bytes() == before


def onnx_graph(w1, b1, w2, alpha=1.0, extra_init=()):
    inits = [numpy_helper.from_array(np.asarray(w1, np.float32), "W1"),
             numpy_helper.from_array(np.asarray(b1, np.float32), "B1"),
             numpy_helper.from_array(np.asarray(w2, np.float32), "W2"), *extra_init]
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1, alpha=alpha, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2"], ["y"], transB=1, name="fc2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_onnx_non_finite_initializers_are_named():
    calib = np.random.default_rng(0).random((20, 4))
    w1, b1, w2 = np.ones((3, 4)), np.zeros(3), np.ones((2, 3))
    assert convert_onnx(onnx_graph(w1, b1, w2), calib).sizes == [4, 3, 2]
    bad_w = w1.copy()
    bad_w[2, 1] = np.nan
    with pytest.raises(ModelError, match=r"initializer 'W1' \(used by node 0 'fc1'\): value nan at \[2, 1\] is not"):
        convert_onnx(onnx_graph(bad_w, b1, w2), calib)
    with pytest.raises(ModelError, match=r"initializer 'B1' \(used by node 0 'fc1'\): value inf at \[1\]"):
        convert_onnx(onnx_graph(w1, [0, np.inf, 0], w2), calib)
    with pytest.raises(ModelError, match=r"node 0 'fc1': Gemm alpha=inf, beta=1.0: both must be finite"):
        convert_onnx(onnx_graph(w1, b1, w2, alpha=np.inf), calib)
    # finite weights whose product overflows float64 on the calibration data
    with pytest.raises(ModelError, match=r"layer 1: activations on the calibration data \(overflow\): value inf"):
        convert_onnx(onnx_graph(np.full((3, 4), 3e38), b1, w2), np.full((5, 4), 1e300))


def test_onnx_absurd_shapes_are_refused_before_allocation():
    calib = np.random.default_rng(0).random((20, 4))
    model = onnx_graph(np.ones((3, 4)), np.zeros(3), np.ones((2, 3)))
    w1 = model.graph.initializer[0]
    del w1.dims[:]
    w1.dims.extend([40000, 40000])   # dims of 6.4 GB of float32, 48 bytes of data
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=r"initializer 'W1' \(used by node 0 'fc1'\): shape \[40000, 40000\] "
                                             r"\(1600000000 elements\) is not possible for this chip: at most 65536"):
            convert_onnx(model.SerializeToString(), calib)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("value,pattern", [
    (np.nan, r"calibration data: value nan at \[3, 1\] is not a finite number"),
    (np.inf, r"calibration data: value inf at \[3, 1\] is not a finite number"),
    (2j, r"calibration data: complex values are not accepted"),
])
def test_calibration_data_is_checked_by_index(value, pattern):
    model = mlp_to_onnx([np.ones((4, 3)), np.ones((3, 2))], [np.zeros(3), np.zeros(2)], 4)
    calib = np.random.default_rng(0).random((10, 4)).astype(complex if isinstance(value, complex) else float)
    calib[3, 1] = value
    with pytest.raises(ModelError, match=pattern):
        convert_onnx(model, calib)
    with pytest.raises(ModelError, match=r"percentile must be a number in \(0, 100\], not nan"):
        convert_onnx(model, np.ones((10, 4)), percentile=float("nan"))


def test_a_bias_too_large_is_refused_not_wrapped():
    """A finite bias of 1e30 would cast to int64 -2^63 (whose abs is negative): it must be refused."""
    model = mlp_to_onnx([np.full((4, 3), 1e-3), np.ones((3, 2))], [np.array([0, 1e30, 0]), np.zeros(2)], 4)
    with pytest.raises(ModelError, match=r"layer 1: bias of neuron 1 is too large for the chip even at bias_exp=7"):
        convert_onnx(model, np.random.default_rng(0).random((10, 4)))


# ---------------------------------------------------------------- NIR
def lif_graph(tau=0.016, weight=None, tau_syn=None, v_leak=0.0):
    w = np.ones((3, 2)) if weight is None else weight
    neuron = (nir.LIF(tau=np.full(3, tau), r=np.ones(3), v_leak=np.full(3, v_leak), v_threshold=np.ones(3),
                      v_reset=np.zeros(3)) if tau_syn is None else
              nir.CubaLIF(tau_syn=np.full(3, tau_syn), tau_mem=np.full(3, tau), r=np.ones(3), v_leak=np.zeros(3),
                          v_threshold=np.ones(3), v_reset=np.zeros(3), w_in=np.ones(3)))
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "fc": nir.Linear(weight=w), "lif": neuron,
             "output": nir.Output(output_type={"output": np.array([3])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], type_check=False)


def decay(imported, field):
    pops = {p.name: p for p in imported.network.populations}
    return int(np.unique(pops["lif"].params[field])[0])


def test_nir_dt_over_tau_range_is_exactly_what_the_message_says():
    dt = 1e-3
    assert decay(import_nir(lif_graph(tau=4096 * dt), dt), "dv") == 1             # dt/tau = 1/4096
    assert decay(import_nir(lif_graph(tau=dt * 4096 / 4095), dt), "dv") == 4095   # dt/tau = 4095/4096
    rule = r"dt/tau must lie in \[1/4096, 4095/4096\]"
    for tau in (dt, dt / 5e-5, dt * 4096 / 4095.9, dt * 4096 * 1.001):   # 1, 5e-5, just above, just below
        with pytest.raises(NirError, match=rf"node 'lif': dt=0.001 against its time constants gives decays "
                                           rf"outside the chip's range: neuron 0 has dt/tau = .*; {rule}"):
            import_nir(lif_graph(tau=tau), dt)
    cuba = import_nir(lif_graph(tau=0.008, tau_syn=dt), dt)                      # dt/tau_syn = 1: du = 4095
    assert decay(cuba, "du") == 4095
    with pytest.raises(NirError, match=r"dt/tau_syn must lie in \[1/4096, 1\]"):
        import_nir(lif_graph(tau=0.008, tau_syn=dt / 1.01), dt)


def test_nir_non_finite_parameters_and_dt_are_named(tmp_path):
    w = np.ones((3, 2))
    w[1, 0] = np.nan
    with pytest.raises(NirError, match=r"node 'fc': weight has non-finite values \(nan at flat index 2\)"):
        import_nir(lif_graph(weight=w))
    with pytest.raises(NirError, match=r"node 'lif': tau has non-finite values \(inf at flat index 0\)"):
        import_nir(lif_graph(tau=np.inf))
    with pytest.raises(NirError, match=r"node 'lif': v_leak has non-finite values \(nan"):
        import_nir(lif_graph(v_leak=np.nan))
    for dt in (float("nan"), float("inf"), -1e-3, 0, True, "1e-3", 1e-3 + 0j):
        with pytest.raises(NirError, match=r"dt must be a positive finite number, not "):
            import_nir(lif_graph(), dt)


def test_nir_file_with_a_huge_dataset_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.nir"
    nir.write(path, lif_graph())
    with h5py.File(path, "a") as f:
        f["node/nodes/fc"].create_dataset("bias", shape=(40000, 40000), dtype="f8", chunks=(1000, 1000))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(NirError, match=r"huge.nir: dataset 'node/nodes/fc/bias' has shape \(40000, 40000\) "
                                           r"\(1600000000 values\); at most 65536"):
            import_nir(path)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


def test_onnx_external_data_of_absurd_size_is_never_read(tmp_path):
    """An initializer stored outside the .onnx (a sparse 6.4 GB file here) is refused from its dims."""
    model = onnx_graph(np.ones((3, 4)), np.zeros(3), np.ones((2, 3)))
    w1 = model.graph.initializer[0]
    del w1.dims[:]
    w1.dims.extend([40000, 40000])
    w1.ClearField("raw_data")
    w1.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w1.bin"), ("offset", "0"), ("length", str(40000 * 40000 * 4))):
        entry = w1.external_data.add()
        entry.key, entry.value = key, value
    with open(tmp_path / "w1.bin", "wb") as fh:
        fh.truncate(40000 * 40000 * 4)   # sparse: no disk used
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=r"initializer 'W1' \(used by node 0 'fc1'\): shape \[40000, 40000\]"):
            convert_onnx(tmp_path / "m.onnx", np.ones((5, 4)))
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()
