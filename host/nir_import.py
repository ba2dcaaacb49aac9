"""Import NIR graphs (the neuromorphic intermediate representation) as chip networks.

Supported nodes: ``Input``, ``Output``; synapse nodes ``Affine``, ``Linear``,
``Conv2d``, ``SumPool2d``, ``AvgPool2d``, ``Flatten``, ``Scale``; spiking neuron
nodes ``LIF``, ``CubaLIF``, ``IF``; non-spiking readouts ``LI``, ``CubaLI``.  Every
other node type is refused, naming the node and its type.  Structure: between a
source population (``Input`` or a neuron node) and a neuron node runs a chain of
synapse nodes, each with one source; the chain is composed (the layer IR of
:mod:`neurovm.host.importers.layers`) into one sparse matrix and bias, so a
convolution or a pool costs synapses, not a population.  Spiking nodes connect
to ``Output`` to be reported; a readout's membrane is read (``NirNetwork.readouts``:
NIR ``v`` = chip ``v / (64 scale)``), its threshold set out of reach
(``vth_mant = 2^17 - 1``) and its scale limited so ``v`` cannot saturate.

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

from neurovm.config import ACT_SHIFT, BIAS_MANT_BITS, DECAY_UNITY, DEFAULT_CONFIG, V_MAX, VTH_BITS, ChipConfig

__all__ = ["NirError", "NirNetwork", "import_nir"]

_SPIKING_TYPES = ("LIF", "CubaLIF", "IF")
_READOUT_TYPES = ("LI", "CubaLI")     # non-spiking: the chip neuron's threshold is out of reach, v is read
_NEURON_TYPES = _SPIKING_TYPES + _READOUT_TYPES
_SYNAPSE_TYPES = ("Affine", "Linear", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "Scale")
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
    readouts: list = field(default_factory=list)    # LI / CubaLI nodes: read v (NIR v = chip v / (64 scale))


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

    if isinstance(graph, (str, Path)):
        graph = _read(Path(graph), config)
    if not isinstance(graph, nir.NIRGraph):
        raise NirError(f"expected a nir.NIRGraph or a path, not {type(graph).__name__}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.integer, np.floating)) \
            or not np.isfinite(dt) or not dt > 0:
        raise NirError(f"dt must be a positive finite number, not {dt!r}")
    dt = float(dt)
    nodes = graph.nodes
    kind = {n: type(v).__name__ for n, v in nodes.items()}
    for name in nodes:
        if kind[name] not in _NEURON_TYPES + _SYNAPSE_TYPES + ("Input", "Output"):
            raise NirError(f"node {name!r}: unsupported NIR node type {kind[name]}; supported: Input, Output, "
                           f"{', '.join(_SYNAPSE_TYPES + _NEURON_TYPES)}")
    preds = {n: [a for a, b in graph.edges if b == n] for n in nodes}
    succs = {n: [b for a, b in graph.edges if a == n] for n in nodes}
    sizes = _population_sizes(nodes, kind, config)
    shapes = {n: _population_shape(nodes[n], kind[n], sizes[n]) for n in sizes}
    _check_synapse_targets(kind, succs)
    proj = _projections(nodes, kind, preds, sizes, shapes, config)
    return _build(nodes, kind, succs, sizes, proj, dt, config)


def _read(path: Path, config: ChipConfig):
    import nir

    if not path.exists():
        raise NirError(f"{path}: no such file")
    try:
        _check_file_sizes(path, config)
        return nir.read(path)
    except NirError:
        raise
    except Exception as e:   # noqa: BLE001 - h5py/format errors: one clear message
        raise NirError(f"{path}: not a readable NIR file ({type(e).__name__}: {e})") from None


def _population_shape(node, kind: str, size: int) -> tuple:
    """The tensor shape of a population (an Input's type, a neuron node's parameter shape)."""
    if kind == "Input":
        shape = node.input_type.get("input", node.output_type.get("output"))
        return tuple(int(d) for d in np.ravel(np.asarray(shape)))
    for attr in ("tau", "tau_mem", "r", "v_threshold"):
        if hasattr(node, attr) and np.ndim(getattr(node, attr)) >= 1:
            shape = tuple(int(d) for d in np.shape(getattr(node, attr)))
            if int(np.prod(shape)) == size:
                return shape
    return (size,)


def _check_synapse_targets(kind: dict, succs: dict) -> None:
    """Synapse nodes feed synapse or neuron nodes only; neuron nodes take input only from synapse nodes."""
    for n, targets in succs.items():
        for d in targets:
            if kind[n] in _SYNAPSE_TYPES and kind[d] not in _NEURON_TYPES + _SYNAPSE_TYPES:
                raise NirError(f"edge {n!r} -> {d!r}: a {kind[n]} must feed neuron nodes "
                               f"({', '.join(_NEURON_TYPES)}), not {kind[d]}")
            if kind[d] in _NEURON_TYPES and kind[n] not in _SYNAPSE_TYPES:
                raise NirError(f"edge {n!r} -> {d!r}: neuron nodes take input only through Affine/Linear "
                               f"nodes (or a chain of {', '.join(_SYNAPSE_TYPES)}), not directly from a {kind[n]}")


def _projections(nodes, kind, preds, sizes, shapes, config) -> dict:
    """Destination neuron node -> [(source population, W sparse (out, in), bias)], each W the
    composition of the chain of synapse nodes between them (docs/architecture.md §19).

    A population whose parameters are flat takes the tensor shape its first incoming chain
    produces (so a pooling after a flat IF node knows its channels and plane)."""
    import scipy.sparse as sp

    limit = config.num_cores * config.synapses_per_core
    chains = {d: [_chain(p, kind, preds, sizes) for p in preds[d]] for d in nodes if kind[d] in _NEURON_TYPES}
    resolved: set = set()

    def shape_of(pop: str, visiting: frozenset) -> tuple:
        if pop in resolved or kind[pop] == "Input" or len(shapes[pop]) > 1 or pop in visiting or not chains[pop]:
            return shapes[pop]
        source, chain = chains[pop][0]
        _, _, out_shape = _compose(nodes, kind, chain, shape_of(source, visiting | {pop}), limit)
        if int(np.prod(out_shape)) == sizes[pop]:
            shapes[pop] = out_shape
        resolved.add(pop)
        return shapes[pop]

    proj = {}
    for d, incoming in chains.items():
        for source, chain in incoming:
            mat, bias, shape = _compose(nodes, kind, chain, shape_of(source, frozenset()), limit)
            if mat.shape[0] != sizes[d]:
                raise NirError(f"edge {chain[-1]!r} -> {d!r}: {mat.shape[0]} outputs (shape {shape}) into "
                               f"{sizes[d]} neurons")
            proj.setdefault(d, []).append((source, sp.csr_matrix(mat), bias))
    return proj


def _chain(last: str, kind, preds, sizes) -> tuple[str, list]:
    """``(source population, [synapse nodes in order])`` of the chain that ends at synapse node ``last``."""
    chain = [last]
    while True:
        src = preds[chain[0]]
        if len(src) != 1 or (src[0] not in sizes and kind[src[0]] not in _SYNAPSE_TYPES):
            raise NirError(f"node {chain[0]!r}: a {kind[chain[0]]} must have exactly one source, an Input "
                           f"or a neuron node (it has {src})")
        if src[0] in sizes:
            return src[0], chain
        if src[0] in chain:
            raise NirError(f"node {src[0]!r}: a cycle of synapse nodes ({' -> '.join(chain)})")
        chain.insert(0, src[0])


def _compose(nodes, kind, chain: list, shape: tuple, limit: int):
    """One sparse matrix and bias for a chain of synapse nodes applied to a tensor of ``shape``."""
    import scipy.sparse as sp

    from .importers.layers import _step
    from .model import ModelError

    mat, bias = None, np.zeros(int(np.prod(shape)))
    for n in chain:
        op = _ir_op(nodes[n], kind[n], n, shape)
        if op is None:
            continue
        if isinstance(op, tuple):   # a Flatten
            shape = op
            continue
        if isinstance(op, _Reshaped):   # a flat source viewed as (channels, height, width)
            shape, op = op.shape, op.op
        try:
            m, b, shape = _step(op, shape, limit)
        except ModelError as e:
            raise NirError(str(e)) from None
        if m is None:
            continue
        mat = m if mat is None else m @ mat
        bias = m @ bias + b
        if mat.nnz > limit:
            raise NirError(f"node {n!r}: the synapses from {chain[0]!r} to here number {mat.nnz}; the chip's "
                           f"synapse memory holds {limit}")
    if mat is None:
        mat = sp.identity(bias.size, format="csr")
    return mat, bias, shape


def _ir_op(node, kind: str, n: str, shape: tuple):
    """The layer-IR operation of one synapse node (a new shape for Flatten and implicit reshapes)."""
    from .importers import layers as ir

    if kind in ("Affine", "Linear"):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise NirError(f"node {n!r}: {kind} weight must be 2-D (out, in), not shape {w.shape}")
        w = _flat(w, "weight", n).reshape(w.shape)
        if int(np.prod(shape)) != w.shape[1]:
            raise NirError(f"node {n!r}: weight takes {w.shape[1]} inputs, its source gives {int(np.prod(shape))} "
                           f"(shape {shape})")
        bias = _flat(node.bias, "bias", n) if kind == "Affine" else None
        if bias is not None and bias.size not in (1, w.shape[0]):
            raise NirError(f"node {n!r}: bias has {bias.size} values for {w.shape[0]} outputs")
        return ir.Dense(w, None if bias is None else np.broadcast_to(bias, (w.shape[0],)), f"node {n!r}")
    if kind == "Flatten":
        return (int(np.prod(shape)),)
    if kind == "Scale":
        scale = np.asarray(node.scale)
        scale = _flat(scale, "scale", n).reshape(scale.shape)
        return ir.Affine(scale if scale.size > 1 else float(scale.ravel()[0]), 0.0, f"node {n!r}")
    if kind == "Conv2d":
        return _conv(node, n, shape)
    return _pool(node, kind, n)


def _pair(x, n: str, what: str) -> tuple:
    a = np.ravel(np.asarray(x))
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2 or a.dtype.kind not in "iuf" or not np.all(a == np.rint(a)):
        raise NirError(f"node {n!r}: {what} {x!r} must be one or two integers")
    return int(a[0]), int(a[1])


def _conv(node, n: str, shape: tuple):
    from .importers import layers as ir

    w = np.asarray(node.weight)
    if w.ndim != 4:
        raise NirError(f"node {n!r}: Conv2d weight shape {w.shape} is not (out, in, kh, kw) (only 2-D)")
    w = _flat(w, "weight", n).reshape(w.shape)
    if int(node.groups) != 1 or _pair(node.dilation, n, "dilation") != (1, 1):
        raise NirError(f"node {n!r}: Conv2d groups={node.groups}, dilation={node.dilation!r} are not supported "
                       f"(1 and 1)")
    if len(shape) != 3:   # a flat population: the shape the convolution's input_shape and weight give
        hw = tuple(int(d) for d in np.ravel(node.input_shape)) if node.input_shape is not None else ()
        if len(hw) != 2 or w.shape[1] * hw[0] * hw[1] != int(np.prod(shape)):
            raise NirError(f"node {n!r}: Conv2d on a source of shape {shape}: its input_shape {node.input_shape!r} "
                           f"and {w.shape[1]} input channels must give the source's size")
        shape = (w.shape[1],) + hw
    pad = node.padding
    if isinstance(pad, str):
        if pad == "valid":
            pads = (0, 0, 0, 0)
        elif pad == "same" and _pair(node.stride, n, "stride") == (1, 1):
            kh, kw = w.shape[2:]
            pads = ((kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2)
        else:
            raise NirError(f"node {n!r}: Conv2d padding={pad!r} is not supported ('valid', 'same' with stride 1, "
                           f"or integers)")
    else:
        ph, pw = _pair(pad, n, "padding")
        pads = (ph, pw, ph, pw)
    bias = _flat(node.bias, "bias", n) if node.bias is not None and np.size(node.bias) else None
    return _Reshaped(shape, ir.Conv2d(w, None if bias is None or not bias.any() else
                                      np.broadcast_to(bias, (w.shape[0],)), _pair(node.stride, n, "stride"), pads,
                                      f"node {n!r}"))


def _pool(node, kind: str, n: str):
    from .importers import layers as ir

    if any(_pair(node.padding, n, "padding")):
        raise NirError(f"node {n!r}: {kind} padding={node.padding!r} is not supported (0)")
    kernel, stride = _pair(node.kernel_size, n, "kernel_size"), _pair(node.stride, n, "stride")
    return (ir.SumPool2d if kind == "SumPool2d" else ir.AvgPool2d)(kernel, stride, label=f"node {n!r}")


class _Reshaped:
    """Marker: apply ``op`` after viewing the tensor with ``shape`` (a flat source before a Conv2d)."""

    def __init__(self, shape, op):
        self.shape, self.op = shape, op


def _build(nodes, kind, succs, sizes, proj, dt, config) -> NirNetwork:
    """The chip network: one population per Input and neuron node, one connection per projection."""
    from neurovm.mapper import Network

    net = Network()
    pops = {}
    out = NirNetwork(net)
    for n in nodes:        # populations in graph order: inputs first as they appear
        if kind[n] == "Input":
            pops[n] = net.population(n, sizes[n], report=False)
            out.inputs[n] = n
    gains = {}
    for n, node in nodes.items():
        if kind[n] not in _NEURON_TYPES:
            continue
        params, gains[n], out.scales[n] = _neuron_params(node, kind[n], n, sizes[n], proj.get(n, []), dt, config)
        readout = kind[n] in _READOUT_TYPES
        pops[n] = net.population(n, sizes[n], report=not readout and any(kind[s] == "Output" for s in succs[n]),
                                 **params)
        if readout:
            out.readouts.append(n)
        elif pops[n].report:
            out.outputs.append(n)
    for d, incoming in proj.items():
        for src, w, _ in incoming:
            wq = (w.multiply(gains[d][:, None]) * out.scales[d]).tocoo()
            vals = np.rint(wq.data).astype(np.int64)
            keep = vals != 0
            net.connect(pops[src], pops[d], np.stack([wq.col[keep], wq.row[keep], vals[keep]], axis=1))
    return out


def _neuron_params(node, kind: str, n: str, size: int, incoming: list, dt: float, config: ChipConfig):
    """``(population parameters, gain per neuron, scale)`` of one neuron node (the module docstring's table)."""
    full = lambda attr, default=0.0: np.broadcast_to(  # noqa: E731
        _flat(getattr(node, attr), attr, n) if hasattr(node, attr) else np.full(size, default), (size,))
    r = full("r", 1.0)
    readout = kind in _READOUT_TYPES
    v_th = full("v_threshold") if not readout else np.zeros(size)
    v_reset = full("v_reset", 0.0)
    if kind == "IF":
        dv, du, gain, leak = np.zeros(size), np.full(size, float(_DECAY_MAX)), r, np.zeros(size)
    else:
        taus = ("tau",) if kind in ("LIF", "LI") else ("tau_mem", "tau_syn")
        for t in taus:
            bad = np.flatnonzero(full(t) <= 0)
            if bad.size:
                raise NirError(f"node {n!r}: time constants must be positive ({t}={float(full(t)[bad[0]])} "
                               f"for neuron {int(bad[0])})")
        k_mem, dv, k_syn, du = _decays("LIF" if kind in ("LIF", "LI") else kind, n, dt, full(taus[0]),
                                       full("tau_syn") if len(taus) > 1 else None)
        leak = k_mem * (full("v_leak") - v_reset)
        if kind in ("LIF", "LI"):
            du, gain = np.full(size, float(_DECAY_MAX)), r * k_mem
        else:
            gain = full("w_in", 1.0) * k_syn * r * k_mem
    top = max([abs(w.multiply(gain[:, None])).max() for _, w, _ in incoming if w.nnz] + [1e-12])
    thr = v_th - v_reset
    if (thr < 0).any():
        raise NirError(f"node {n!r}: v_threshold below v_reset is not supported")
    scale = config.weight_max / top
    scale = min(scale, _VTH_MANT_MAX / max(float(thr.max()), 1e-12))
    bias = sum((b * gain for _, _, b in incoming), np.zeros(size)) + leak
    if readout:   # v must not saturate even when every input spikes every step (its steady state)
        drive = sum((np.asarray(abs(w.multiply(gain[:, None])).sum(axis=1)).ravel() for _, w, _ in incoming),
                    np.zeros(size)) + np.abs(bias)
        settle = (dt / full(taus[0])) * (dt / full("tau_syn") if kind == "CubaLI" else 1.0)
        scale = min(scale, V_MAX / ((1 << ACT_SHIFT) * max(float((drive / settle).max()), 1e-12)))
    bias_raw = bias * scale * 64
    exp = np.zeros(size, dtype=np.int64)
    mant = np.rint(bias_raw).astype(np.int64)
    while (np.abs(mant) > _BIAS_MANT_MAX).any() and exp.max() < 7:
        over = np.abs(mant) > _BIAS_MANT_MAX
        exp[over] += 1
        mant = np.rint(bias_raw / (1 << exp)).astype(np.int64)
    if (np.abs(mant) > _BIAS_MANT_MAX).any():
        raise NirError(f"node {n!r}: a bias or leak is too large for the chip at this weight scale")
    vth = np.full(size, _VTH_MANT_MAX, dtype=np.int64) if readout else np.rint(thr * scale).astype(np.int64)
    params = {"du": du.astype(np.int64), "dv": dv.astype(np.int64), "refract": 0, "vth_mant": vth,
              "bias_mant": mant, "bias_exp": exp}
    return params, gain, float(scale)
