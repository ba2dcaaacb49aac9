"""SNN partitioning and placement onto NeuroVM cores, per tenant.

:func:`map_network` takes a networkx ``DiGraph`` (or a :class:`Network` of
populations and projections) and returns a :class:`MappedNetwork`: one
:class:`~neurovm.image.CoreImage` per virtual core, the vcore -> physical core
table for the MMU, and a report.  Every image respects every limit of the
:class:`~neurovm.config.ChipConfig`; an impossible network raises
:class:`MapError` naming the limit, the neuron or population, and by how much.

Partitioning (see :func:`partition`): contiguous fill under all limits in the
given neuron order and in balanced recursive-bisection order (spectral up to
20,000 neurons), fan-out repair, then a
local search on the AER packet volume; placement minimises hop-weighted
traffic over the tenant's free cores.  Both searches are bounded by work
(``work_budget``), not by time, so a mapping never depends on machine load.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from neurovm.config import DEFAULT_CONFIG, ChipConfig

from .compile import FORMAT, FORMAT_VERSION, MappedNetwork, compile_images, default_place_budget, mapping_report, \
    place
from .network import DEFAULT_LIF, LIF_FIELDS, NetArrays, Network, Population, graph_arrays
from .partition import LIMITS, MapError, contiguous_partition, default_work_budget, packet_volume, partition, refine, \
    reject_removed_arguments, resource_use

__all__ = [
    "map_network", "MappedNetwork", "MapError", "Network", "Population", "NetArrays", "graph_arrays",
    "resource_use", "packet_volume", "partition", "refine", "contiguous_partition", "compile_images", "place", "LIMITS", "FORMAT", "FORMAT_VERSION",
    "default_work_budget", "default_place_budget",
    "DEFAULT_LIF", "LIF_FIELDS",
]


def map_network(network, config: ChipConfig = DEFAULT_CONFIG, free_cores=None, weight_exp: int = 0, *,
                work_budget: int | None = None, starts: int = 1, **removed) -> MappedNetwork:
    """Compile ``network`` for one tenant.

    Parameters
    ----------
    network : networkx.DiGraph, Network or NetArrays
    config : ChipConfig
    free_cores : list of int, optional
        Physical cores this tenant may use (default: all); the placement picks
        among them, so tenants mapped onto disjoint free sets never share a core.
    weight_exp : int
        The cores' weight exponent (synaptic input = weight * 2^(6 + weight_exp)).
    work_budget : int, optional
        Neuron visits of the local search on the packet volume (see :func:`partition`;
        one visit = one neuron considered for a move with all its candidate cores, a pass
        over the network = ``n`` visits).  Default (``None``): :func:`default_work_budget`,
        10 passes capped at ``DEFAULT_WORK_CAP`` (60,000) visits.  The search is bounded by work, never by the
        clock: the same network, configuration, ``work_budget`` and ``starts`` give the
        same mapping bit for bit, whatever the machine's load or BLAS thread count.
        (``time_budget`` was removed; passing it raises ``TypeError``.)
    starts : int
        Spectral bisections tried (networks up to 20,000 neurons); more starts, better
        blocks on sheets, about 0.25 ms per neuron each.
    """
    reject_removed_arguments("map_network", removed)
    if isinstance(network, nx.DiGraph):
        net = graph_arrays(network)
    elif isinstance(network, Network):
        net = network.arrays()
    elif isinstance(network, NetArrays):
        net = network
    else:
        raise TypeError(f"map_network takes a networkx.DiGraph or a Network, not {type(network).__name__}")
    free = list(range(config.num_cores)) if free_cores is None else [int(p) for p in free_cores]
    limit = min(len(free), config.vcores_per_vm)
    core_of = partition(net, config, limit, work_budget=work_budget, starts=starts)
    k = int(core_of.max()) + 1 if net.n else 0
    images = compile_images(net, core_of, config, weight_exp)
    traffic = np.zeros((k, k))
    if net.src.size:
        ps_key = np.unique(net.src * k + core_of[net.dst])
        ps, pc = ps_key // k, ps_key % k
        np.add.at(traffic, (core_of[ps], pc), net.rate[ps])
        np.fill_diagonal(traffic, 0)
    pcore = place(traffic, config, free)
    local = np.zeros(net.n, dtype=np.int64)
    for q in range(k):
        idx = np.flatnonzero(core_of == q)
        local[idx] = np.arange(idx.size)
    report = mapping_report(net, core_of, pcore, config)
    pops = {str(name): np.flatnonzero(net.population == name) for name in dict.fromkeys(net.population) if name}
    return MappedNetwork(config, images, core_of, local, pcore, report, pops)
