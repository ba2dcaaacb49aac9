"""NIR import: a LIF / CubaLIF graph runs on the chip like a float simulation of the
documented discretisation; files round-trip; unsupported graphs are refused by name."""

import nir
import numpy as np
import pytest

import neurovm
from neurovm.host.nir_import import NirError, import_nir


def make_graph(seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = rng.uniform(-0.5, 1.5, (20, 10))
    b1 = rng.uniform(0.0, 0.01, 20)
    w2 = rng.uniform(-0.5, 1.0, (6, 20))
    nodes = {
        "input": nir.Input(input_type={"input": np.array([10])}),
        "fc1": nir.Affine(weight=w1, bias=b1),
        "lif1": nir.LIF(tau=np.full(20, 0.016), r=np.ones(20), v_leak=np.zeros(20), v_threshold=np.ones(20),
                        v_reset=np.zeros(20)),
        "fc2": nir.Linear(weight=w2),
        "cuba": nir.CubaLIF(tau_syn=np.full(6, 0.004), tau_mem=np.full(6, 0.008), r=np.full(6, 2.0),
                            v_leak=np.zeros(6), v_threshold=np.full(6, 0.5), v_reset=np.zeros(6), w_in=np.ones(6)),
        "output": nir.Output(output_type={"output": np.array([6])}),
    }
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "cuba"), ("cuba", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges), (w1, b1, w2)


def float_reference(weights, x: np.ndarray, dt: float = 1e-3):
    """The module docstring's discretisation in float64 (one-step delay between layers)."""
    w1, b1, w2 = weights
    v1 = np.zeros(20)
    s1_prev = np.zeros(20, bool)
    i2, v2 = np.zeros(6), np.zeros(6)
    k1, ks, km = dt / 0.016, dt / 0.004, dt / 0.008
    c1, c2 = np.zeros(20, int), np.zeros(6, int)
    for t in range(x.shape[0]):
        # cuba integrates lif1's spikes of the previous step
        i2 = i2 * (1 - ks) + ks * (w2 @ s1_prev)
        v2 = v2 * (1 - km) + km * 2.0 * i2
        f2 = v2 > 0.5
        v2[f2] = 0
        c2 += f2
        v1 = v1 * (1 - k1) + k1 * (w1 @ x[t] + b1)
        f1 = v1 > 1.0
        v1[f1] = 0
        c1 += f1
        s1_prev = f1
    return c1, c2


def test_lif_and_cubalif_graph_matches_a_float_simulation(tmp_path):
    graph, weights = make_graph()
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    imported = import_nir(path, dt=1e-3)
    assert imported.inputs == {"input": "input"} and imported.outputs == ["cuba"]
    x = np.random.default_rng(1).random((200, 10)) < 0.3
    chip = neurovm.open("emulator")
    vm = chip.create_vm("nir", cores=1).load(imported.network)
    out = vm.run(200, {"input": x})
    # lif1 is not reported (it does not feed an Output); read its spikes from telemetry instead
    ref1, ref2 = float_reference(weights, x)
    got2 = out.counts()[vm.mapped.populations["cuba"]]
    assert ref2.sum() > 50 and ref1.sum() > 200
    assert np.abs(got2 - ref2).max() <= 3 and abs(int(got2.sum()) - int(ref2.sum())) <= 0.05 * ref2.sum()
    assert abs(vm.telemetry()["spikes_out"] - int(ref1.sum() + ref2.sum())) <= 0.05 * (ref1.sum() + ref2.sum())
    pops = {p.name: p for p in imported.network.populations}
    assert int(np.unique(pops["lif1"].params["dv"])[0]) == 256 and int(np.unique(pops["lif1"].params["du"])[0]) == 4095
    assert int(np.unique(pops["cuba"].params["du"])[0]) == 1023 and int(np.unique(pops["cuba"].params["dv"])[0]) == 512


def test_unsupported_or_malformed_graphs_are_named(tmp_path):
    graph, _ = make_graph()
    nodes = dict(graph.nodes)
    nodes["th"] = nir.Threshold(threshold=np.ones(20))
    bad = nir.NIRGraph(nodes=nodes, edges=list(graph.edges) + [("lif1", "th")])
    with pytest.raises(NirError, match="node 'th': unsupported NIR node type Threshold; supported: Input, Output"):
        import_nir(bad)
    nodes = dict(graph.nodes)
    nodes["lif2"] = nir.LIF(tau=np.full(20, 0.016), r=np.ones(20), v_leak=np.zeros(20), v_threshold=np.ones(20),
                            v_reset=np.zeros(20))
    direct = nir.NIRGraph(nodes=nodes, edges=list(graph.edges) + [("lif1", "lif2")])
    with pytest.raises(NirError, match="edge 'lif1' -> 'lif2': neuron nodes take input only through Affine/Linear"):
        import_nir(direct)
    two = nir.NIRGraph(nodes=dict(graph.nodes), edges=list(graph.edges) + [("input", "fc2")], type_check=False)
    with pytest.raises(NirError, match=r"node 'fc2': a Linear must have exactly one source, an Input or a neuron "
                                       r"node \(it has \['lif1', 'input'\]\)"):
        import_nir(two)
    with pytest.raises(NirError, match=r"node 'lif1': dt=0.1 against its time constants gives decays outside"):
        import_nir(graph, dt=0.1)
    (tmp_path / "junk.nir").write_bytes(b"not hdf5 at all")
    with pytest.raises(NirError, match="junk.nir: not a readable NIR file"):
        import_nir(tmp_path / "junk.nir")
    with pytest.raises(NirError, match="missing.nir: no such file"):
        import_nir(tmp_path / "missing.nir")


# ---- convolutions, pooling, flatten, scale; LI / CubaLI readouts ------------------------------------------
def conv_graph(seed: int = 0, pool: str = "SumPool2d", readout: str = "LI", flat_if: bool = False):
    """Input (1, 6, 6) -> Conv2d 3x3 (4, pad 1) -> IF -> pool 2 -> Flatten -> Scale -> Affine (3) -> readout."""
    rng = np.random.default_rng(seed)
    w_conv, b_conv = rng.uniform(-0.3, 0.8, (4, 1, 3, 3)), rng.uniform(0, 0.05, 4)
    w_fc, b_fc = rng.uniform(-1, 1, (3, 36)), rng.uniform(-0.1, 0.1, 3)
    scale = rng.uniform(0.5, 1.5, 36)
    if_shape = (4 * 6 * 6,) if flat_if else (4, 6, 6)
    pool_node = getattr(nir, pool)(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    out = (nir.LI(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3)) if readout == "LI" else
           nir.CubaLI(tau_syn=np.full(3, 0.005), tau_mem=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3),
                      w_in=np.ones(3)))
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 6, 6])}),
             "conv": nir.Conv2d(input_shape=(6, 6), weight=w_conv, stride=1, padding=1, dilation=1, groups=1,
                                bias=b_conv),
             "if1": nir.IF(r=np.ones(if_shape), v_threshold=np.ones(if_shape)),
             "pool": pool_node, "flat": nir.Flatten(input_type={"input": np.array([4, 3, 3])}, start_dim=0),
             "scale": nir.Scale(scale=scale), "fc": nir.Affine(weight=w_fc, bias=b_fc), "read": out,
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "conv"), ("conv", "if1"), ("if1", "pool"), ("pool", "flat"), ("flat", "scale"),
             ("scale", "fc"), ("fc", "read"), ("read", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), (w_conv, b_conv, w_fc, b_fc, scale)


def conv_float_reference(params, x, pool: str, readout: str, dt: float = 1e-3):
    """The §19 discretisation in float64: IF on the convolution, the readout integrating the IF
    spikes of the previous step through pool, flatten, scale and the affine map."""
    w_conv, b_conv, w_fc, b_fc, scale = params
    v1, prev = np.zeros((4, 6, 6)), np.zeros((4, 6, 6))
    i2, v2 = np.zeros(3), np.zeros(3)
    k_mem, k_syn = dt / 0.01, dt / 0.005
    for t in range(x.shape[0]):
        p = prev.reshape(4, 3, 2, 3, 2).sum(axis=(2, 4)) / (4 if pool == "AvgPool2d" else 1)
        drive = w_fc @ (p.ravel() * scale) + b_fc
        if readout == "LI":
            v2 = v2 + k_mem * (-v2 + drive)
        else:
            i2 = i2 + k_syn * (-i2 + drive)
            v2 = v2 + k_mem * (-v2 + i2)
        xp = np.pad(x[t].reshape(1, 6, 6), ((0, 0), (1, 1), (1, 1)))
        conv = np.array([[[np.sum(xp[:, i:i + 3, j:j + 3] * w_conv[o]) for j in range(6)] for i in range(6)]
                         for o in range(4)]) + b_conv[:, None, None]
        v1 = v1 + conv
        prev = v1 > 1.0
        v1[prev] = 0
    return v2


@pytest.mark.parametrize("pool,readout,flat_if", [("SumPool2d", "LI", False), ("AvgPool2d", "CubaLI", True)])
def test_conv_pool_flatten_scale_graph_with_a_readout_matches_a_float_simulation(pool, readout, flat_if):
    graph, params = conv_graph(pool=pool, readout=readout, flat_if=flat_if)
    imported = import_nir(graph, dt=1e-3)
    assert imported.readouts == ["read"] and imported.outputs == []
    pops = {p.name: p for p in imported.network.populations}
    assert int(np.unique(pops["read"].params["vth_mant"])[0]) == (1 << 17) - 1   # a readout never spikes
    x = np.random.default_rng(2).random((120, 36)) < 0.4
    chip = neurovm.open("emulator")
    vm = chip.create_vm("nir", cores=2).load(imported.network)
    vm.run(120, {"input": x})
    got = vm.state()["v"][vm.mapped.populations["read"]] / (64 * imported.scales["read"])
    want = conv_float_reference(params, x, pool, readout)
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, atol=0.03 * np.abs(want).max())


def test_conv_graph_refusals_name_the_node():
    graph, _ = conv_graph()
    graph.nodes["conv"].groups = 2
    with pytest.raises(NirError, match=r"node .conv.: Conv2d groups=2, dilation=\(1, 1\) are not supported"):
        import_nir(graph)
    graph, _ = conv_graph()
    graph.nodes["pool"].padding = np.array([1, 1])
    with pytest.raises(NirError, match=r"node 'pool': SumPool2d padding=array\(\[1, 1\]\) is not supported"):
        import_nir(graph)
    graph, _ = conv_graph()
    graph.nodes["fc"] = nir.Affine(weight=np.ones((3, 35)), bias=np.zeros(3))
    with pytest.raises(NirError, match=r"node 'fc': weight takes 35 inputs, its source gives 36"):
        import_nir(graph)
    graph, _ = conv_graph()
    edges = [e for e in graph.edges if e != ("read", "output")] + [("fc", "output")]
    with pytest.raises(NirError, match=r"edge 'fc' -> 'output': a Affine must feed neuron nodes"):
        import_nir(nir.NIRGraph(nodes=graph.nodes, edges=edges, type_check=False))


def test_cli_dt_reaches_the_importer(tmp_path, capsys):
    from neurovm.cli import main

    graph, _ = make_graph()
    nir.write(tmp_path / "net.nir", graph)
    assert main(["map", str(tmp_path / "net.nir"), "--dt", "0.002", "-o", str(tmp_path / "net.nvmap")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "net.nir"), "--steps", "5", "--dt", "0.1", "-q"]) == 2
    assert "dt=0.1 against its time constants" in capsys.readouterr().err
    for bad in ("0", "-1", "inf", "nan"):
        assert main(["map", str(tmp_path / "net.nir"), "--dt", bad]) == 2
        assert "--dt" in capsys.readouterr().err
    assert main(["map", str(tmp_path / "net.nvmap"), "--dt", "0.002"]) == 2
    assert "--dt applies to NIR graphs (.nir), not to" in capsys.readouterr().err
