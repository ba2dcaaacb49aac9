"""Import NIR graphs (the neuromorphic intermediate representation) as chip networks.

Supported nodes: ``Input``, ``Output``, ``Affine``, ``Linear`` (synapses) and
``LIF``, ``CubaLIF``, ``IF`` (neuron populations).  Every other node type is
refused, naming the node and its type.  Structure: each ``Affine``/``Linear``
sits between one source (``Input`` or a neuron node) and neuron nodes; neuron
nodes connect to ``Output`` to be reported.

Discretisation with step ``dt`` (forward Euler, NIR's continuous-time equations)::

    LIF:      v += dt/tau (v_leak - v + r I)
    CubaLIF:  I += dt/tau_syn (-I + w_in x);   v += dt/tau_mem (v_leak - v + r I)
    IF:       v += r I

onto the chip's neuron (docs/architecture.md §4), with the voltage origin moved
to ``v_reset`` (the chip resets to 0):

* ``dv = round(4096 dt / tau_mem)`` (``0`` for IF), so ``v`` decays by ``dv/4096``;
* LIF and IF: ``du = 4095`` (``u`` is this step's input); CubaLIF:
  ``du = round(4096 dt / tau_syn) - 1`` (the chip decays ``u`` by ``(du+1)/4096``);
* the gain from a synapse to ``v`` (``r dt/tau`` for LIF, ``r`` for IF,
  ``w_in r dt/tau_mem`` for CubaLIF -- the CubaLIF's ``dt/tau_syn`` input factor
  is folded in too) multiplies the weights; an Affine bias and the leak towards
  ``v_leak - v_reset`` become the neuron's constant bias;
* per destination node, ``scale = wmax / max|W_eff|`` (limited so the threshold
  fits ``vth_mant``'s 17 bits); weights ``round(W_eff scale)``, threshold
  ``vth_mant = round((v_threshold - v_reset) scale)``, bias in units of
  ``scale * 64`` as ``bias_mant << bias_exp``.

Ranges: ``dt/tau_mem`` (LIF ``tau``, CubaLIF ``tau_mem``) must lie in
``[1/4096, 4095/4096]`` (``dv = round(4096 dt/tau)`` is a 12-bit field, 1..4095:
below, the leak would round to nothing; ``dt/tau = 1`` would need ``dv = 4096``);
``dt/tau_syn`` must lie in ``[1/4096, 1]`` (``du + 1 = round(4096 dt/tau_syn)``,
1..4096). Every parameter must be finite.

Files: before ``nir.read`` loads anything, every HDF5 dataset's declared size is
checked: at most ``num_cores x synapses_per_core`` elements each (the chip's
synapse memory bounds any weight matrix), at most that plus
``NIR_VALUES_PER_NEURON x num_cores x neurons_per_core`` in all; populations
must fit the chip's neurons.

Delays: a spike is integrated by its targets one step after it was emitted
(the chip's rule); NIR graphs exported from discrete-time simulators usually
have the same one-step delay per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurovm.config import BIAS_MANT_BITS, DECAY_UNITY, DEFAULT_CONFIG, VTH_BITS, ChipConfig

__all__ = ["NirError", "NirNetwork", "import_nir"]

_NEURON_TYPES = ("LIF", "CubaLIF", "IF")
_SYNAPSE_TYPES = ("Affine", "Linear")
_BIAS_MANT_MAX = (1 << (BIAS_MANT_BITS - 1)) - 1
_VTH_MANT_MAX = (1 << VTH_BITS) - 1
_DECAY_MAX = DECAY_UNITY - 1          # dv, du: 12-bit fields
#: Numbers a NIR file may hold per neuron of the chip beyond its weight matrices (LIF/CubaLIF
#: parameters, Affine biases, shapes): a bound on what reading a file may allocate.
NIR_VALUES_PER_NEURON = 32
#: Relative slack on the dt/tau bounds for floating-point noise (1e-3/0.256 is not exactly 1/256).
_RANGE_EPS = 1e-9


class NirError(ValueError):
    """A NIR graph that cannot be imported; the message names the node and the reason."""


@dataclass
class NirNetwork:
    """An imported NIR graph: the chip network plus how its populations relate to NIR nodes."""

    network: object                      # neurovm.mapper.Network
    inputs: dict = field(default_factory=dict)      # NIR Input node -> population name (fed by injection)
    outputs: list = field(default_factory=list)     # neuron populations connected to an Output node
    scales: dict = field(default_factory=dict)      # neuron node -> quantisation scale (integer units per NIR unit)


def _flat(x, what: str, node: str) -> np.ndarray:
    """``x`` as a flat float64 array of finite real numbers, or a NirError naming node, parameter, index, value."""
    try:
        a = np.asarray(x)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"dtype {a.dtype} is not a real number type")
        a = a.astype(np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise NirError(f"node {node!r}: {what} is not an array of real numbers ({e})") from None
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise NirError(f"node {node!r}: {what} has non-finite values ({a[bad[0]]} at flat index {int(bad[0])})")
    return a


def _check_file_sizes(path: Path, config: ChipConfig) -> None:
    """Refuse a NIR (HDF5) file whose datasets declare more numbers than a network for ``config`` can
    hold, before ``nir.read`` allocates them (see the module docstring)."""
    import h5py

    per_array = config.num_cores * config.synapses_per_core
    total_limit = per_array + NIR_VALUES_PER_NEURON * config.num_cores * config.neurons_per_core
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append((name, obj.shape, int(obj.size or 0)))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    total = 0
    for name, shape, size in found:
        if size > per_array:
            raise NirError(f"{path}: dataset {name!r} has shape {shape} ({size} values); at most {per_array} "
                           f"(num_cores={config.num_cores} x synapses_per_core={config.synapses_per_core})")
        total += size
    if total > total_limit:
        raise NirError(f"{path}: the datasets hold {total} values in all; at most {total_limit} for this chip "
                       f"(synapse memory + {NIR_VALUES_PER_NEURON} per neuron)")


def _decays(kind: str, n: str, dt: float, tau_mem: np.ndarray, tau_syn: np.ndarray | None):
    """``dv`` (and ``du`` for CubaLIF) from ``dt/tau``, or a NirError when a ratio is outside its range."""
    k_mem = dt / tau_mem
    _check_ratio(n, dt, "tau" if kind == "LIF" else "tau_mem", tau_mem, k_mem, _DECAY_MAX, "4095/4096",
                 "dv = round(4096 dt/tau) must be 1..4095")
    dv = np.rint(DECAY_UNITY * k_mem)
    if tau_syn is None:
        return k_mem, dv, None, None
    k_syn = dt / tau_syn
    _check_ratio(n, dt, "tau_syn", tau_syn, k_syn, DECAY_UNITY, "1", "du + 1 = round(4096 dt/tau_syn) must be 1..4096")
    return k_mem, dv, k_syn, np.rint(DECAY_UNITY * k_syn) - 1


def _check_ratio(n, dt, name, tau, k, top: int, top_text: str, rule: str) -> None:
    """``1 <= 4096 k <= top`` (within floating-point noise), else a NirError naming node, neuron and values."""
    units = DECAY_UNITY * k
    bad = np.flatnonzero((units < 1 - _RANGE_EPS) | (units > top * (1 + _RANGE_EPS)))
    if bad.size:
        i = int(bad[0])
        raise NirError(f"node {n!r}: dt={dt} against its time constants gives decays outside the chip's range: "
                       f"neuron {i} has dt/{name} = {float(k[i]):.6g} ({name}={float(tau[i]):.6g}); "
                       f"dt/{name} must lie in [1/4096, {top_text}] ({rule}); choose another dt")


def _size_of(node) -> int:
    for attr in ("tau", "tau_mem", "r", "v_threshold"):
        if hasattr(node, attr):
            return int(np.asarray(getattr(node, attr)).size)
    raise AssertionError(node)


def _population_sizes(nodes: dict, kind: dict, config: ChipConfig) -> dict[str, int]:
    """Neurons of each Input and neuron node: each at least 1, all together within the chip's neurons."""
    capacity = config.num_cores * config.neurons_per_core
    sizes = {}
    for n, node in nodes.items():
        if kind[n] == "Input":
            shape = node.input_type.get("input", node.output_type.get("output"))
            dims = [int(d) for d in np.ravel(np.asarray(shape))] if shape is not None else []
            sizes[n] = int(np.prod(dims, dtype=object)) if dims and min(dims) >= 0 else -1
        elif kind[n] in _NEURON_TYPES:
            sizes[n] = _size_of(node)
        else:
            continue
        if not 1 <= sizes[n] <= capacity:
            raise NirError(f"node {n!r}: {sizes[n] if sizes[n] >= 0 else 'a negative number of'} neurons; "
                           f"1..{capacity} are allowed (num_cores={config.num_cores} x "
                           f"neurons_per_core={config.neurons_per_core})")
    total = sum(sizes.values())
    if total > capacity:
        raise NirError(f"the graph's populations have {total} neurons in all; the chip holds {capacity} "
                       f"(num_cores={config.num_cores} x neurons_per_core={config.neurons_per_core})")
    return sizes


def import_nir(graph, dt: float = 1e-3, config: ChipConfig = DEFAULT_CONFIG) -> NirNetwork:
    """Convert a NIR graph (``nir.NIRGraph`` or the path of a ``.nir`` file) to a chip network.

    Parameters
    ----------
    dt : float
        The simulation step in the graph's time unit (one chip timestep).
    """
    import nir

    from neurovm.mapper import Network

    if isinstance(graph, (str, Path)):
        path = Path(graph)
        if not path.exists():
            raise NirError(f"{path}: no such file")
        try:
            _check_file_sizes(path, config)
            graph = nir.read(path)
        except NirError:
            raise
        except Exception as e:   # noqa: BLE001 - h5py/format errors: one clear message
            raise NirError(f"{path}: not a readable NIR file ({type(e).__name__}: {e})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise NirError(f"expected a nir.NIRGraph or a path, not {type(graph).__name__}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.integer, np.floating)) \
            or not np.isfinite(dt) or not dt > 0:
        raise NirError(f"dt must be a positive finite number, not {dt!r}")
    dt = float(dt)
    nodes = graph.nodes
    for name, node in nodes.items():
        kind = type(node).__name__
        if kind not in _NEURON_TYPES + _SYNAPSE_TYPES + ("Input", "Output"):
            raise NirError(f"node {name!r}: unsupported NIR node type {kind}; supported: Input, Output, "
                           f"{', '.join(_SYNAPSE_TYPES + _NEURON_TYPES)}")
    preds = {n: [a for a, b in graph.edges if b == n] for n in nodes}
    succs = {n: [b for a, b in graph.edges if a == n] for n in nodes}
    kind = {n: type(v).__name__ for n, v in nodes.items()}

    sizes = _population_sizes(nodes, kind, config)
    # synapse layers: source population -> weight -> destination neuron nodes
    proj = {}   # dest neuron node -> list of (source population, W (out, in), bias)
    for n, node in nodes.items():
        if kind[n] not in _SYNAPSE_TYPES:
            continue
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise NirError(f"node {n!r}: {kind[n]} weight must be 2-D (out, in), not shape {w.shape}")
        w = _flat(w, "weight", n).reshape(w.shape)
        src = preds[n]
        if len(src) != 1 or src[0] not in sizes:
            raise NirError(f"node {n!r}: a {kind[n]} must have exactly one source, an Input or a neuron node "
                           f"(it has {src})")
        if sizes[src[0]] != w.shape[1]:
            raise NirError(f"node {n!r}: weight takes {w.shape[1]} inputs, {src[0]!r} has {sizes[src[0]]} neurons")
        bias = _flat(node.bias, "bias", n) if kind[n] == "Affine" else np.zeros(w.shape[0])
        for d in succs[n]:
            if kind[d] not in _NEURON_TYPES:
                raise NirError(f"edge {n!r} -> {d!r}: a {kind[n]} must feed neuron nodes "
                               f"({', '.join(_NEURON_TYPES)}), not {kind[d]}")
            if sizes[d] != w.shape[0]:
                raise NirError(f"edge {n!r} -> {d!r}: {w.shape[0]} outputs into {sizes[d]} neurons")
            proj.setdefault(d, []).append((src[0], w, np.broadcast_to(bias, (w.shape[0],))))
    for n in nodes:
        if kind[n] in _NEURON_TYPES:
            for p in preds[n]:
                if kind[p] not in _SYNAPSE_TYPES:
                    raise NirError(f"edge {p!r} -> {n!r}: neuron nodes take input only through Affine/Linear "
                                   f"nodes, not directly from a {kind[p]}")

    net = Network()
    pops = {}
    out = NirNetwork(net)
    for n in nodes:        # populations in graph order: inputs first as they appear
        if kind[n] == "Input":
            pops[n] = net.population(n, sizes[n], report=False)
            out.inputs[n] = n
    wmax = config.weight_max
    gains = {}
    for n, node in nodes.items():
        if kind[n] not in _NEURON_TYPES:
            continue
        size = sizes[n]
        full = lambda attr, default=0.0: np.broadcast_to(  # noqa: E731
            _flat(getattr(node, attr), attr, n) if hasattr(node, attr) else np.full(size, default), (size,))
        r = full("r", 1.0)
        v_th, v_reset = full("v_threshold"), full("v_reset", 0.0)
        if kind[n] == "IF":
            dv, du, gain, leak = np.zeros(size), np.full(size, float(_DECAY_MAX)), r, np.zeros(size)
        else:
            taus = ("tau",) if kind[n] == "LIF" else ("tau_mem", "tau_syn")
            for t in taus:
                bad = np.flatnonzero(full(t) <= 0)
                if bad.size:
                    raise NirError(f"node {n!r}: time constants must be positive ({t}={float(full(t)[bad[0]])} "
                                   f"for neuron {int(bad[0])})")
            k_mem, dv, k_syn, du = _decays(kind[n], n, dt, full(taus[0]), full("tau_syn") if len(taus) > 1 else None)
            leak = k_mem * (full("v_leak") - v_reset)
            if kind[n] == "LIF":
                du, gain = np.full(size, float(_DECAY_MAX)), r * k_mem
            else:
                gain = full("w_in", 1.0) * k_syn * r * k_mem
        incoming = proj.get(n, [])
        w_eff = [w * gain[:, None] for _, w, _ in incoming]
        top = max([np.abs(w).max() for w in w_eff if w.size] + [1e-12])
        thr = v_th - v_reset
        if (thr < 0).any():
            raise NirError(f"node {n!r}: v_threshold below v_reset is not supported")
        scale = wmax / top
        scale = min(scale, _VTH_MANT_MAX / max(float(thr.max()), 1e-12))
        bias_raw = (sum((b * gain for _, _, b in incoming), np.zeros(size)) + leak) * scale * 64
        exp = np.zeros(size, dtype=np.int64)
        mant = np.rint(bias_raw).astype(np.int64)
        while (np.abs(mant) > _BIAS_MANT_MAX).any() and exp.max() < 7:
            over = np.abs(mant) > _BIAS_MANT_MAX
            exp[over] += 1
            mant = np.rint(bias_raw / (1 << exp)).astype(np.int64)
        if (np.abs(mant) > _BIAS_MANT_MAX).any():
            raise NirError(f"node {n!r}: a bias or leak is too large for the chip at this weight scale")
        pops[n] = net.population(n, size, report=any(kind[s] == "Output" for s in succs[n]),
                                 du=du.astype(np.int64), dv=dv.astype(np.int64), refract=0,
                                 vth_mant=np.rint(thr * scale).astype(np.int64), bias_mant=mant, bias_exp=exp)
        out.scales[n] = float(scale)
        gains[n] = gain
        if pops[n].report:
            out.outputs.append(n)
    for d, incoming in proj.items():
        for src, w, _ in incoming:
            wq = np.rint(w * gains[d][:, None] * out.scales[d]).astype(np.int64)
            j, i = np.nonzero(wq)
            net.connect(pops[src], pops[d], np.stack([i, j, wq[j, i]], axis=1))
    return out
