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
    nodes["scale"] = nir.Scale(scale=np.ones(20))
    bad = nir.NIRGraph(nodes=nodes, edges=list(graph.edges) + [("lif1", "scale")])
    with pytest.raises(NirError, match="node 'scale': unsupported NIR node type Scale; supported: Input, Output"):
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
