"""The mapper is deterministic: its searches are bounded by work, not by the clock, and its
eigensolver keys do not depend on BLAS threads or kernels.  The same network, configuration
and budget map bit for bit the same under machine load and in a process with other BLAS
settings; a bigger budget never maps worse; a tiny one still maps legally; the removed
``time_budget`` is refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from neurovm.config import ChipConfig
from neurovm.mapper import LIMITS, MapError, Network, graph_arrays, map_network, packet_volume, partition, place, \
    refine, resource_use
from neurovm.mapper.compile import _hops
from neurovm.mapper.partition import _refine, contiguous_partition

ROOT = Path(__file__).resolve().parents[1]
CFG = ChipConfig(mesh_width=6, mesh_height=6, neurons_per_core=64, synapses_per_core=2048, axons_per_core=256,
                 fanout_per_core=256, vcores_per_vm=36)


def feedforward():
    net = Network()
    pops = [net.population(f"L{i}", s) for i, s in enumerate((160, 96, 64, 10))]
    for a, b in zip(pops, pops[1:]):
        net.fixed_probability(a, b, 0.5, weight=3, seed=len(a.name))
    return net.arrays()


def random_sparse(n=900, degree=5, seed=1):
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(n), degree)
    dst = rng.integers(0, n, src.size)
    keep = src != dst
    net = Network()
    p = net.population("random", n)
    net.connect(p, p, np.stack([src[keep], dst[keep]], axis=1))
    return net.arrays()


def square_sheet(side=30):
    """A square sheet: its Fiedler value is degenerate, the hardest case for a reproducible key."""
    g = nx.convert_node_labels_to_integers(nx.grid_2d_graph(side, side).to_directed(), ordering="sorted")
    return graph_arrays(g)


NETWORKS = {"feedforward": feedforward, "random_sparse": random_sparse, "square_sheet": square_sheet}


def mapping_arrays(net) -> dict[str, np.ndarray]:
    """Every array a mapping consists of: core_of, local, the placement and each image's arrays."""
    m = map_network(net, CFG, starts=2)
    out = {"core_of": m.core_of, "local": m.local, "pcore_of_vcore": m.pcore_of_vcore}
    for q, img in m.images.items():
        for name, value in vars(img).items():
            out[f"core{q}.{name}"] = np.asarray(value) if value is not None else np.array("None")
    return out


def assert_bit_identical(a: dict, b: dict, what: str):
    assert sorted(a) == sorted(b), f"{what}: different arrays {sorted(set(a) ^ set(b))}"
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, (what, key)
        assert a[key].tobytes() == b[key].tobytes(), f"{what}: {key} differs"


def test_same_mapping_bit_for_bit_under_load_and_other_blas_settings(tmp_path):
    """Map in this process while two processes burn both cores, and in a fresh process with
    one BLAS thread and another BLAS kernel (as on another CPU); compare every array."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        loaded = {name: mapping_arrays(build()) for name, build in NETWORKS.items()}
    finally:
        for p in burners:
            p.kill()
            p.wait()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_CORETYPE="Prescott", PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-m", "tests.test_mapper_determinism", str(tmp_path)], cwd=ROOT, env=env,
                   check=True, timeout=300)
    for name in NETWORKS:
        with np.load(tmp_path / f"{name}.npz") as z:
            other = {k: z[k] for k in z.files}
        assert len(np.unique(loaded[name]["core_of"])) > 2, f"{name}: too small to test the search"
        assert_bit_identical(loaded[name], other, name)


def test_a_bigger_work_budget_never_maps_worse():
    net = random_sparse()
    vols = [packet_volume(net, partition(net, CFG, 36, work_budget=b)) for b in (0, 300, 900, 3000, 9000)]
    assert all(later <= earlier for earlier, later in zip(vols, vols[1:])), vols
    assert vols[-1] < vols[0], vols   # the budget is actually spent on improvements


def test_refine_spends_exactly_its_budget_and_no_more():
    net = random_sparse()
    start = contiguous_partition(net, CFG, 36)
    k = int(start.max()) + 1
    for budget in (0, 1, 250, 1234):
        core_of, spent = _refine(net, CFG, start, k, 8, 0, budget)
        assert spent == budget
    assert np.array_equal(refine(net, CFG, start, k, work_budget=0), start)
    _, spent = _refine(net, CFG, start, k, 2, 0, None)
    assert spent <= 2 * net.n


@pytest.mark.parametrize("budget", [0, 5])
def test_a_tiny_work_budget_still_maps_legally(budget):
    for build in NETWORKS.values():
        net = build()
        m = map_network(net, CFG, work_budget=budget)
        use = resource_use(net, m.core_of)
        for name, attr in LIMITS:
            assert use[name].max() <= getattr(CFG, attr), (name, budget)
        for img in m.images.values():
            img.region_words(CFG)


def test_placement_cost_never_rises_with_its_budget():
    rng = np.random.default_rng(4)
    k = 20
    traffic = rng.integers(0, 6, (k, k)) * (rng.random((k, k)) < 0.3)
    np.fill_diagonal(traffic, 0)
    sym, hop = traffic + traffic.T, _hops(CFG)
    costs = []
    for budget in (0, 10, 50, 190, 1000, None):
        pc = place(traffic.astype(float), CFG, list(range(36)), work_budget=budget)
        assert sorted(set(pc.tolist())) == sorted(pc.tolist())
        costs.append(float((sym * hop[np.ix_(pc, pc)]).sum()))
    assert all(later <= earlier for earlier, later in zip(costs, costs[1:])), costs
    assert costs[-1] < costs[0], costs


def test_time_budget_is_refused_by_name_and_bad_budgets_are_named():
    g = nx.gnp_random_graph(30, 0.1, seed=2, directed=True)
    with pytest.raises(TypeError, match="map_network: time_budget was removed.*work_budget="):
        map_network(g, CFG, time_budget=4.0)
    with pytest.raises(TypeError, match="partition: time_budget was removed"):
        partition(graph_arrays(g), CFG, 36, time_budget=4.0)
    with pytest.raises(TypeError, match="place: time_budget was removed"):
        place(np.zeros((2, 2)), CFG, [0, 1], time_budget=2.0)
    with pytest.raises(TypeError):   # the old positional slot is gone too
        map_network(g, CFG, None, 0, 4.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'work_budjet'"):
        map_network(g, CFG, work_budjet=10)
    for bad in (4.0, -1, True, "10"):
        with pytest.raises(MapError, match=r"partition: work_budget must be a whole number.*got"):
            map_network(g, CFG, work_budget=bad)
    with pytest.raises(MapError, match="place: work_budget must be a whole number"):
        place(np.zeros((2, 2)), CFG, [0, 1], work_budget=0.5)


if __name__ == "__main__":   # the other process of the bit-for-bit test: map and save every array
    out = Path(sys.argv[1])
    for net_name, build_net in NETWORKS.items():
        np.savez(out / f"{net_name}.npz", **mapping_arrays(build_net()))
