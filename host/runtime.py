"""The hypervisor: tenant VMs on one chip.

:class:`Chip` is a :class:`~neurovm.host.client.ChipClient` that also keeps
the books a hypervisor needs: which physical cores are free, which VM owns
which, and what each VM has loaded.  :meth:`Chip.create_vm` returns a
:class:`VM`, the handle a tenant uses::

    chip = neurovm.open("emulator")
    vm = chip.create_vm("alice", cores=2)
    vm.load(network)                        # networkx DiGraph, Network, MappedNetwork or .nvmap path
    out = vm.run(100, inputs={"in": trains})
    vm.telemetry()
    vm.destroy()

The chip has one clock: a RUN steps every core, so every VM advances together
(:meth:`Chip.run` feeds and collects several VMs in one run; :meth:`VM.run`
is that with one VM's inputs).  Spikes are sorted to their owners; a VM never
sees another VM's spikes, cores or counters -- the MMU enforces it in
hardware, the runtime only keeps the tables.  Every refused request raises
:class:`VMError` (or, for a bad step count or value, :class:`RequestError`)
naming the VM and the reason, and leaves the chip and the runtime's books
exactly as they were: requests are validated completely before the first word
is sent.  Every operation of several exchanges (create, load, run with inputs,
relocate, destroy, telemetry...) holds the chip's lock, so a :class:`Chip` may
be shared by threads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from neurovm.config import HV_VM
from neurovm.formats import (ALL_DOMAINS, GUEST_COUNTERS, LEARN_REGIONS, REGIONS, Counter, LearnRegion, Region,
                             domain_bit, region_specs)
from neurovm.image import ImageError, LearningRule

from . import protocol as P
from .client import ChipClient, ChipError, RequestError

__all__ = ["Chip", "VM", "VMError", "SpikeTrains", "VMContext", "LearningUnavailable"]

#: Regions that hold a core's whole state: copied on relocation, in this order.
_CORE_REGIONS = tuple(Region)
_STATE_REGIONS = (Region.STATE_U, Region.STATE_V, Region.STATE_REF, Region.ACC)


class VMError(RuntimeError):
    """A tenant request the hypervisor refuses; the chip is left as it was."""


class LearningUnavailable(VMError, NotImplementedError):
    """On-chip learning (§24) asked of a backend or chip that does not implement it."""


#: Backends (by name prefix) that run the learning engine of §24: the golden emulator and the
#: Verilator model of the HDL (hdl/learning.py, co-simulated word for word).  Not yet the FPGA.
_LEARNING_BACKENDS = ("emulator", "verilator")


def _atomic(method):
    """Run ``method`` holding the chip's lock (a Chip's own, a VM's chip's): its exchanges
    do not interleave with another thread's."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with (self._hv if isinstance(self, VM) else self).lock:
            return method(self, *args, **kwargs)
    return locked


@dataclass
class SpikeTrains:
    """Spikes of one VM's reporting neurons over one run.

    ``step`` is 0-based within the run; ``neuron`` is the global id in the
    loaded network.  ``n_neurons`` and ``steps`` give the raster's extent.
    """

    step: np.ndarray
    neuron: np.ndarray
    n_neurons: int
    steps: int

    def counts(self) -> np.ndarray:
        """Spikes per neuron (length ``n_neurons``)."""
        return np.bincount(self.neuron, minlength=self.n_neurons)

    def dense(self) -> np.ndarray:
        """Boolean raster of shape ``(steps, n_neurons)``."""
        out = np.zeros((self.steps, self.n_neurons), dtype=bool)
        out[self.step, self.neuron] = True
        return out

    def __len__(self) -> int:
        return int(self.step.size)

    def __eq__(self, other) -> bool:
        return (isinstance(other, SpikeTrains) and self.steps == other.steps and self.n_neurons == other.n_neurons
                and np.array_equal(self.step, other.step) and np.array_equal(self.neuron, other.neuron))

    def raster(self, path, title: str = "") -> None:
        """Save a raster plot (PNG) of the spikes."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
        ax.scatter(self.step, self.neuron, s=2, marker="|", color="k")
        ax.set_xlim(-0.5, self.steps - 0.5)
        ax.set_ylim(-0.5, max(self.n_neurons, 1) - 0.5)
        ax.set_xlabel("timestep")
        ax.set_ylabel("neuron")
        ax.set_title(title or f"{len(self)} spikes")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _free_rectangle(free: list[int], k: int, config) -> list[int] | None:
    """The first ``w x h = k`` rectangle of the mesh whose cores are all free, or None.

    Squarest shapes first (wider before taller), then row-major position. XY routes between
    two cores of a rectangle never leave it, so a VM on one shares no router (§7.0)."""
    W, H = config.mesh_width, config.mesh_height
    shapes = sorted({(w, k // w) for w in range(1, k + 1) if k % w == 0 and w <= W and k // w <= H},
                    key=lambda s: (abs(s[0] - s[1]), -s[0]))
    free_set = set(free)
    for w, h in shapes:
        for y in range(H - h + 1):
            for x in range(W - w + 1):
                cells = [(y + dy) * W + x + dx for dy in range(h) for dx in range(w)]
                if free_set.issuperset(cells):
                    return sorted(cells)
    return None


def _allocate_cores(free: list[int], k: int, config) -> list[int]:
    """``k`` free cores for a new VM: a free rectangle when one exists, else the most compact set."""
    return _free_rectangle(free, k, config) or _compact_cores(free, k, config)


def _compact_cores(free: list[int], k: int, config) -> list[int]:
    """``k`` of the ``free`` cores close together on the mesh (smallest sum of pairwise hops)."""
    xy = np.array([config.core_xy(p) for p in free])
    hops = np.abs(xy[:, None, :] - xy[None, :, :]).sum(axis=2)
    best, best_cost = None, None
    for seed in range(len(free)):
        pick = np.argsort(hops[seed], kind="stable")[:k]
        cost = hops[np.ix_(pick, pick)].sum()
        if best_cost is None or cost < best_cost:
            best, best_cost = pick, cost
    return sorted(int(free[i]) for i in best)


class Chip(ChipClient):
    """A chip plus the hypervisor's books: free cores, VMs and what they run."""

    def __init__(self, backend):
        super().__init__(backend)
        self._vms: dict[int, VM] = {}

    # ---- the books ------------------------------------------------------------------
    @property
    def vms(self) -> list["VM"]:
        """Live VMs, by id."""
        with self.lock:
            return [self._vms[i] for i in sorted(self._vms)]

    def vm(self, name: str) -> "VM":
        """The live VM called ``name``."""
        with self.lock:
            found = [v for v in self._vms.values() if v.name == name]
        if found:
            return found[0]
        raise VMError(f"no VM named {name!r}; live VMs: {[v.name for v in self.vms] or 'none'}")

    @property
    def free_cores(self) -> list[int]:
        """Physical cores no VM holds."""
        with self.lock:
            used = {p for v in self._vms.values() for p in v.pcores}
        return [p for p in range(self.config.num_cores) if p not in used]

    # ---- VM life cycle --------------------------------------------------------------
    @_atomic
    def create_vm(self, name: str, cores: int = 1) -> "VM":
        """Allocate ``cores`` physical cores (close together on the mesh) to a new VM and map them
        as its vcores 0..cores-1.  Refuses (VMError) when the name is taken, no VM id is left,
        ``cores`` exceeds the per-VM table, or the chip has too few free cores."""
        cfg = self.config
        if not isinstance(name, str) or not name:
            raise VMError(f"a VM needs a non-empty name, not {name!r}")
        if any(v.name == name for v in self._vms.values()):
            raise VMError(f"VM {name!r} already exists")
        if isinstance(cores, (bool, np.bool_)) or not isinstance(cores, (int, np.integer)) \
                or not 1 <= cores <= cfg.vcores_per_vm:
            raise VMError(f"VM {name!r}: cores must be 1..{cfg.vcores_per_vm} (vcores_per_vm), not {cores!r}")
        ids = [i for i in range(cfg.max_vms) if i not in self._vms]
        if not ids:
            raise VMError(f"VM {name!r}: the chip is full, all {cfg.max_vms} VM ids are in use "
                          f"({', '.join(v.name for v in self.vms)})")
        free = self.free_cores
        if cores > len(free):
            raise VMError(f"VM {name!r}: the chip is full, {cores} cores asked, {len(free)} free "
                          f"of {cfg.num_cores}")
        vm = VM(self, ids[0], name, _allocate_cores(free, int(cores), cfg))
        mapped: list[int] = []
        try:
            for vc, pc in enumerate(vm.pcores):
                self.reset(pc)          # a fresh VM starts from zeroed memories and counters
                self.map(vm.id, vc, pc)
                mapped.append(vc)
        except ChipError as e:
            for vc in mapped:           # give back the entries already made
                self.unmap(vm.id, vc)
            vm._release()
            raise VMError(f"VM {name!r}: the chip refused its MMU entries ({e})") from None
        self._vms[vm.id] = vm
        return vm

    @_atomic
    def reset(self, pcore: int | None = None) -> None:
        """Reset the whole chip (which also ends every VM), or scrub one physical core."""
        super().reset(pcore)
        if pcore is None:
            for v in list(self._vms.values()):
                v._alive = False
            self._vms.clear()

    # ---- running ---------------------------------------------------------------------
    @_atomic
    def run(self, steps: int, inputs: dict | None = None, inject: dict | None = None, domains: int | None = None):
        """Run ``steps`` timesteps: of the VMs in ``inputs`` (a gated RUN, §6.1), or of every core.

        Parameters
        ----------
        inputs : dict, optional
            ``{vm: vm_inputs}`` (see :meth:`VM.run`).  Only these VMs step (every other
            core is frozen), and the result is ``{vm: SpikeTrains}`` for each of them.
        inject : dict, optional
            Low-level ``{step: [(vm id, vcore, axon), ...]}`` (see
            :meth:`ChipClient.run`); without ``inputs`` the raw :class:`RunResult`
            is returned.  With ``inputs`` these spikes are injected too.
        domains : int, optional
            Without ``inputs``: the RUN's domain bit set (§8.1; default every core).  With
            ``inputs`` the domains are those VMs', and giving ``domains`` too is an error.

        Raises
        ------
        RequestError
            ``steps`` is not a positive integer (bool included), or an ``inject`` entry is bad.
        VMError
            An input names a VM that is not live on this chip, or is wrong for its VM.
        """
        steps = P.check_steps(steps)
        if inputs is None:
            return super().run(steps, inject, ALL_DOMAINS if domains is None else domains)
        if domains is not None:
            raise VMError("run: give either inputs (the VMs that step) or domains, not both")
        if not isinstance(inputs, dict):
            raise VMError(f"inputs must be a dict {{vm: {{population: spikes}}}}, not {type(inputs).__name__}")
        plan: dict[int, list] = {s: list(v) for s, v in (inject or {}).items()}
        for vm, vin in inputs.items():
            if not isinstance(vm, VM) or self._vms.get(vm.id) is not vm:
                raise VMError(f"{vm!r} is not a live VM of this chip")
            for s, triples in vm._injections(steps, vin).items():
                plan.setdefault(s, []).extend(triples)
        stepping = [vm for vm in self.vms if vm in inputs]
        for vm in stepping:
            if vm.mapped is None:
                raise VMError(f"VM {vm.name!r}: no network loaded")
        # a gated RUN (§6.1): only the named VMs step, every other core is frozen
        res = super().run(steps, plan or None, domains=sum(domain_bit(vm.id) for vm in stepping))
        out = {}
        for vm in stepping:
            sp = res.for_vm(vm.id)
            neuron = vm.mapped.neuron_of(sp["vcore"], sp["neuron"]) if sp.size else np.zeros(0, np.int64)
            step = res.step_of(sp)
            order = np.lexsort((neuron, step))
            out[vm] = SpikeTrains(step[order], neuron[order], vm.mapped.n, int(steps))
            vm.steps_run += int(steps)
        return out

    @_atomic
    def status(self) -> list[dict]:
        """One row per live VM: id, name, physical cores, network size and telemetry."""
        rows = []
        for vm in self.vms:
            row = {"vm": vm.id, "name": vm.name, "pcores": list(vm.pcores),
                   "neurons": vm.mapped.n if vm.mapped is not None else 0,
                   "synapses": int(sum(int(np.sum(img.syn_len)) for img in vm.mapped.images.values()))
                   if vm.mapped is not None else 0}
            row.update(vm.telemetry())
            row["foreign_transit"] = vm.foreign_transit()
            rows.append(row)
        return rows

    @_atomic
    def relocate(self, vm: "VM", vcore: int, pcore: int) -> None:
        """Move ``vm``'s ``vcore`` to the free physical core ``pcore`` (privileged: it chooses physical
        cores): copy all its memories (network and state), point the MMU at the new core, scrub the
        old one.  Nothing is recompiled: fan-out tables name virtual cores, so the network runs on
        unchanged."""
        if not isinstance(vm, VM) or self._vms.get(vm.id) is not vm:
            raise VMError(f"{vm!r} is not a live VM of this chip")
        vm._relocate(vcore, pcore)

    def save_context(self, vm: "VM") -> "VMContext":
        """Read ``vm``'s complete context -- every region of each of its cores, ACC included, its counter
        totals, steps and loaded network -- into host memory.  Nothing on the chip changes.

        With :meth:`restore_context` (onto the same or another VM, possibly other physical cores or
        another chip) the VM continues bit for bit as if it had never left (§23)."""
        with self.lock:
            if not isinstance(vm, VM) or self._vms.get(vm.id) is not vm:
                raise VMError(f"{vm!r} is not a live VM of this chip")
            return _save_context(self, vm)

    def restore_context(self, vm: "VM", ctx: "VMContext") -> None:
        """Make ``vm`` (a live VM of this chip with as many cores as the context) hold ``ctx``: its cores
        are scrubbed and every region written through the hypervisor's physical addressing; its
        counters, steps and network are the context's.  A context that does not fit is refused
        (VMError) before anything is written."""
        with self.lock:
            if not isinstance(vm, VM) or self._vms.get(vm.id) is not vm:
                raise VMError(f"{vm!r} is not a live VM of this chip")
            _restore_context(self, vm, ctx)


class VM:
    """A tenant's capability: a VM id, its physical cores (index = vcore), and what it has loaded.

    Created by :meth:`Chip.create_vm`; not constructed directly.  A handle exposes only
    operations on its own VM (``load``, ``run``, ``reset_state``, ``state``, ``telemetry``,
    ``foreign_transit``, ``destroy``); each goes out under the VM's own id, as one unit under
    the chip's lock.  Privileged operations -- mapping, raw reads and writes by physical core,
    RESET, RUNs of other VMs, relocation to a physical core -- are the hypervisor's
    (:class:`Chip`) and are not reachable through the handle's API (spec §7.0; within one Python
    process this is an API boundary, across processes the service makes it a real one).
    """

    def __init__(self, chip: Chip, vm_id: int, name: str, pcores: list[int]):
        self._hv = chip
        self.id = vm_id
        self.name = name
        self.pcores = list(pcores)
        self.mapped = None
        self.steps_run = 0
        self._alive = True
        self._counter_base = np.zeros(GUEST_COUNTERS, dtype=np.int64)   # counters of cores given back

    def __repr__(self) -> str:
        state = "" if self._alive else ", destroyed"
        return f"VM({self.name!r}, id={self.id}, pcores={self.pcores}{state})"

    def __hash__(self) -> int:
        return id(self)

    def _check_alive(self):
        if not self._alive:
            raise VMError(f"VM {self.name!r} has been destroyed")

    def _release(self):
        self._alive = False
        self._hv._vms.pop(self.id, None)

    # ---- loading ------------------------------------------------------------------------
    @_atomic
    def load(self, network, weight_exp: int = 0) -> "VM":
        """Map (if needed) and load a network onto this VM's cores.

        ``network`` is a networkx ``DiGraph``, a :class:`neurovm.mapper.Network`, a
        :class:`~neurovm.mapper.MappedNetwork`, or the path of a ``.nvmap`` file.
        Everything is validated before the first word is sent (it fits the VM, the file
        is good, the placement names each of the VM's cores at most once, every image is
        legal for this chip): a refused load raises :class:`VMError` and leaves the chip
        and the VM as they were (a network loaded before stays loaded and working).  If
        the chip still refuses a word while loading, the VM's cores are scrubbed and it is
        left empty -- never half loaded.
        """
        self._check_alive()
        mapped = self._prepare(network, weight_exp)
        self.mapped = None      # from here on the cores no longer hold the old network
        self._scrub()
        try:
            # vcores follow the placement; the VM's other cores stay mapped after them
            placed = [int(p) for p in mapped.pcore_of_vcore]
            order = placed + [p for p in self.pcores if p not in placed]
            self._remap(order)
            for vc, img in mapped.images.items():
                self._hv.load_core(self.id, vc, img)
        except (ChipError, ImageError) as e:
            self._scrub()
            self.mapped = None
            raise VMError(f"VM {self.name!r}: loading failed and was rolled back: {e}") from None
        self.mapped = mapped
        return self

    def _prepare(self, network, weight_exp: int):
        """The network as a :class:`MappedNetwork` placed on this VM's cores, fully validated;
        :class:`VMError` naming what is wrong otherwise.  Sends nothing."""
        from neurovm.mapper import MapError, MappedNetwork, Network, map_network

        cfg = self._hv.config
        try:
            if isinstance(network, (str, Path)):
                network = _read_mapped(network)
            if isinstance(network, MappedNetwork):
                mapped = self._placed(network)
            elif isinstance(network, Network) or _is_digraph(network):
                mapped = map_network(network, cfg, free_cores=self.pcores, weight_exp=weight_exp)
            else:
                raise VMError(f"VM {self.name!r}: cannot load a {type(network).__name__}; give a networkx "
                              "DiGraph, a Network, a MappedNetwork or the path of a .nvmap file")
        except (MapError, ImageError) as e:
            raise VMError(f"VM {self.name!r}: {e}") from None
        _check_mapped(mapped, cfg, self.pcores, f"VM {self.name!r}")
        # a private copy of the placement: relocation updates it without touching the caller's object
        return replace(mapped, pcore_of_vcore=np.asarray(mapped.pcore_of_vcore, dtype=np.int64).copy())

    def _placed(self, mapped):
        """A MappedNetwork checked against this VM and re-placed onto its cores if placed elsewhere."""
        cfg = self._hv.config
        who = f"VM {self.name!r}"
        if mapped.config != cfg:
            diff = [k for k, v in mapped.config.to_dict().items() if cfg.to_dict().get(k) != v]
            raise VMError(f"{who}: the network was mapped for another chip configuration "
                          f"({', '.join(f'{k}={getattr(mapped.config, k)} here {getattr(cfg, k)}' for k in diff)})")
        if len(mapped.images) > len(self.pcores):
            raise VMError(f"{who}: the network needs {len(mapped.images)} cores, the VM has {len(self.pcores)}")
        placement = _placement_list(mapped, who)
        if len(placement) != len(mapped.images):
            raise VMError(f"{who}: the network's placement pcore_of_vcore {placement} has {len(placement)} "
                          f"entries for {len(mapped.images)} vcores")
        twice = sorted({p for p in placement if placement.count(p) > 1})
        if twice:
            raise VMError(f"{who}: the network's placement pcore_of_vcore {placement} names core "
                          f"{twice[0]} more than once (a physical core holds one vcore)")
        if not set(placement) <= set(self.pcores):
            mapped = _replace(mapped, self.pcores)
        return mapped

    def _remap(self, order: list[int]) -> None:
        """Make vcore i -> order[i] (unmap all first: a pcore can only have one owner)."""
        for vc in range(len(self.pcores)):
            self._hv.unmap(self.id, vc)
        for vc, pc in enumerate(order):
            self._hv.map(self.id, vc, pc)
        self.pcores = list(order)

    @_atomic
    def _scrub(self) -> None:
        """Zero every core of the VM (memories and counters), keeping the counts in the VM's telemetry."""
        self._counter_base += self._core_counters().sum(axis=0)
        for pc in self.pcores:
            self._hv.reset(pc)

    # ---- running --------------------------------------------------------------------------
    def _injections(self, steps: int, inputs) -> dict[int, list]:
        """``{step: [(vm, vcore, axon), ...]}`` for the input spike trains."""
        if not inputs:
            return {}
        if self.mapped is None:
            raise VMError(f"VM {self.name!r}: no network loaded, nothing to feed inputs to")
        plan: dict[int, list] = {}
        for key, trains in inputs.items():
            try:
                ids = self.mapped.neurons(key)
            except KeyError as e:
                raise VMError(f"VM {self.name!r}: input {key!r}: {e.args[0]}") from None
            arr = np.asarray(trains)
            if arr.dtype == bool or (arr.ndim == 2 and np.isin(arr, (0, 1)).all()):
                if arr.ndim == 1 and ids.size == 1:
                    arr = arr[:, None]
                if arr.ndim != 2 or arr.shape[1] != ids.size or arr.shape[0] > steps:
                    raise VMError(f"VM {self.name!r}: input {key!r} must be a (steps <= {steps}, {ids.size}) "
                                  f"spike raster, not shape {arr.shape}")
                t, j = np.nonzero(arr)
            else:   # spike times of a single neuron
                if ids.size != 1:
                    raise VMError(f"VM {self.name!r}: input {key!r} names {ids.size} neurons; give a "
                                  f"(steps, {ids.size}) boolean raster")
                try:
                    t = P.as_words(arr, "spike time", 0, steps - 1)
                except RequestError as e:
                    raise VMError(f"VM {self.name!r}: input {key!r}: {e} (spike times are steps "
                                  f"0..{steps - 1} of this run)") from None
                j = np.zeros(t.size, dtype=np.int64)
            src, vcore, axon = self.mapped.fanout_of(ids)
            for s, jj in zip(t.tolist(), j.tolist()):
                sel = src == ids[jj]
                plan.setdefault(s, []).extend((self.id, int(c), int(a)) for c, a in zip(vcore[sel], axon[sel]))
        return plan

    def run(self, steps: int, inputs: dict | None = None, learn: bool | None = None) -> SpikeTrains:
        """Run the chip ``steps`` timesteps feeding this VM's inputs; return its spikes.

        ``inputs`` maps a population name (or a neuron id) to a boolean raster
        ``(steps, population size)`` -- or, for one neuron, a list of spike times.
        A spike fed at step ``s`` reaches the targets as if the input neuron had
        spiked at step ``s-1``: it is integrated at step ``s``.
        Only this VM steps (a gated RUN, §6.1): every other VM is frozen meanwhile, so
        neither changes the other's results.

        ``learn`` (§24): True learns during this run with the VM's rule (:meth:`set_learning`;
        the default :class:`~neurovm.image.LearningRule` if none was set), False runs with learning
        off, None (default) leaves each core's LEARN_RULE.enable as it is.  The enable bit is
        restored after the run.  :class:`LearningUnavailable` if the chip has no learning engine.
        """
        steps = P.check_steps(steps)
        self._check_alive()
        if self.mapped is None:
            raise VMError(f"VM {self.name!r}: no network loaded")
        if learn is None:
            return self._hv.run(steps, {self: inputs or {}})[self]
        if not isinstance(learn, (bool, np.bool_)):
            raise VMError(f"VM {self.name!r}: run: learn must be True, False or None, not {learn!r}")
        with self._hv.lock:
            before = [self._read_region(vc, LearnRegion.LEARN_RULE, 0, 1) for vc in range(len(self.pcores))]
            if learn and not any(int(w[0]) for w in before):     # never set: the default rule
                self.set_learning(LearningRule(enable=0))
                before = [self._read_region(vc, LearnRegion.LEARN_RULE, 0, 1) for vc in range(len(self.pcores))]
            enable = LEARN_RULE_ENABLE
            for vc, w in enumerate(before):
                self._write_region(vc, LearnRegion.LEARN_RULE, 0, [(int(w[0]) & ~enable.mask) | enable.put(int(learn))])
            try:
                return self._hv.run(steps, {self: inputs or {}})[self]
            finally:
                for vc, w in enumerate(before):
                    self._write_region(vc, LearnRegion.LEARN_RULE, 0, [int(w[0])])

    # ---- on-chip learning (§24) ------------------------------------------------------------
    def _check_learning(self) -> None:
        """:class:`LearningUnavailable` unless this chip's backend runs the learning engine."""
        hv = self._hv
        if not hv.config.learning:
            raise LearningUnavailable(f"VM {self.name!r}: the {hv.backend.name} chip has no learning engine "
                                      "(ChipConfig.learning=0; build the chip with learning=1)")
        if not hv.backend.name.startswith(_LEARNING_BACKENDS):
            raise LearningUnavailable(f"VM {self.name!r}: on-chip learning is not implemented by the "
                                      f"{hv.backend.name} backend yet (the emulator and the Verilator model "
                                      "of the HDL learn, §24)")

    def _read_region(self, vcore: int, region, addr: int, count: int) -> np.ndarray:
        """``count`` words of a region of one of this VM's vcores (the §24 learning regions too),
        read under the VM's own id."""
        self._check_learning()
        return self._hv.read(self.id, vcore, region, addr, count)

    def _write_region(self, vcore: int, region, addr: int, words) -> None:
        self._check_learning()
        self._hv.write(self.id, vcore, region, addr, words)

    @_atomic
    def set_learning(self, rule: LearningRule, vcores=None) -> None:
        """Write the learning settings ``rule`` (LEARN_RULE and LEARN_CFG) to the VM's cores (all, or
        the given vcores), under the VM's own id.  ``rule.enable`` = 1 learns in every later run;
        :meth:`run` with ``learn=`` overrides it for one run."""
        self._check_alive()
        self._check_learning()
        if not isinstance(rule, LearningRule):
            raise VMError(f"VM {self.name!r}: set_learning needs a LearningRule, not {type(rule).__name__}")
        try:
            rule_word, cfg_words = rule.rule_word(), rule.cfg_words()
        except ImageError as e:
            raise VMError(f"VM {self.name!r}: {e}") from None
        targets = range(len(self.pcores)) if vcores is None else list(vcores)
        bad = [vc for vc in targets if not isinstance(vc, (int, np.integer)) or not 0 <= vc < len(self.pcores)]
        if bad:
            raise VMError(f"VM {self.name!r}: set_learning: vcores {bad} do not exist (0..{len(self.pcores) - 1})")
        for vc in targets:
            self._write_region(vc, LearnRegion.LEARN_CFG, 0, cfg_words)
            self._write_region(vc, LearnRegion.LEARN_RULE, 0, [rule_word])

    @_atomic
    def weights(self) -> dict[int, np.ndarray]:
        """``{vcore: weights}``: the current (learned) weight of every synapse entry of each loaded
        core image, in the image's entry order (what :meth:`load` wrote, changed by learning)."""
        self._check_alive()
        if self.mapped is None:
            raise VMError(f"VM {self.name!r}: no network loaded")
        fmt = region_specs(self._hv.config)[Region.SYN].fmt
        out = {}
        for vc, img in self.mapped.images.items():
            n = len(img.weight)
            words = self._hv.read(self.id, vc, Region.SYN, 0, n) if n else np.zeros(0, dtype=np.uint32)
            out[vc] = fmt["weight"].get(words.astype(np.int64))
        return out

    @_atomic
    def traces(self) -> dict[int, dict[str, np.ndarray]]:
        """``{vcore: {"x", "x0", "pend", "y", "y0"}}``: each core's pre traces (per axon) and post
        traces (per neuron), read under the VM's own id (§24.1)."""
        self._check_alive()
        cfg, out = self._hv.config, {}
        specs = region_specs(cfg)
        for vc in range(len(self.pcores)):
            row = {}
            for region in (LearnRegion.PRE_TRACE, LearnRegion.POST_TRACE):
                spec = specs[region]
                words = self._read_region(vc, region, 0, spec.size(cfg)).astype(np.int64)
                row.update({name: f.get(words) for name, f in spec.fmt.fields.items()})
            out[vc] = row
        return out

    @_atomic
    def reset_state(self) -> None:
        """Zero u, v, ref and acc of every neuron (the network stays loaded)."""
        self._check_alive()
        n = self._hv.config.neurons_per_core
        for vc in range(len(self.pcores)):
            for region in _STATE_REGIONS:
                self._hv.write(self.id, vc, region, 0, np.zeros(n, dtype=np.int64))
            if self._hv.config.learning:    # and the traces (§24): learned weights stay
                for region in (LearnRegion.PRE_TRACE, LearnRegion.POST_TRACE):
                    size = region_specs(self._hv.config)[region].size(self._hv.config)
                    self._hv.write(self.id, vc, region, 0, np.zeros(size, dtype=np.int64))

    @_atomic
    def state(self) -> dict[str, np.ndarray]:
        """u, v, ref and acc of every neuron of the loaded network, by global id."""
        self._check_alive()
        if self.mapped is None:
            raise VMError(f"VM {self.name!r}: no network loaded")
        out = {k: np.zeros(self.mapped.n, dtype=np.int64) for k in ("u", "v", "ref", "acc")}
        for vc in self.mapped.images:
            mine = np.flatnonzero(self.mapped.core_of == vc)
            st = self._hv.read_state(self.id, vc, int(self.mapped.local[mine].max()) + 1)
            for k in out:
                out[k][mine] = st[k][self.mapped.local[mine]]
        return out

    # ---- telemetry ----------------------------------------------------------------------------
    def _core_counters(self) -> np.ndarray:
        """Counters 0 .. GUEST_COUNTERS-1 of every vcore, read under the VM's own id (§9.1)."""
        return np.array([self._hv.counters(self.id, vc) for vc in range(len(self.pcores))], dtype=np.int64) \
            .reshape(len(self.pcores), GUEST_COUNTERS)

    @_atomic
    def telemetry(self) -> dict:
        """The VM's counters summed over its cores (and cores it gave back), and the energy estimate."""
        from neurovm.emulator.energy import EnergyModel

        self._check_alive()
        c = self._counter_base + self._core_counters().sum(axis=0)
        out = {Counter(i).name.lower(): int(c[i]) for i in range(GUEST_COUNTERS)}
        # routers the VM's own packets passed (XY: |dx| + |dy| + 1 each), not the router counters,
        # which count other VMs' traffic crossing this VM's cores too (§9.1)
        out["packets_routed"] = int(c[Counter.PACKETS_SENT] + c[Counter.HOPS_X] + c[Counter.HOPS_Y])
        out["steps"] = self.steps_run
        out["energy_pj"] = float(EnergyModel().energy_pj(c))
        return out

    def foreign_transit(self) -> float:
        """Fraction of the VM's fan-out routes whose XY route passes a router of a core that is not
        the VM's (each entry is one packet every time its neuron spikes); 0 on a rectangle (§7.0)."""
        from neurovm.emulator.mesh import xy_route

        self._check_alive()
        if self.mapped is None:
            return 0.0
        mine, cfg = set(self.pcores), self._hv.config
        routes = crossing = 0
        for q, img in self.mapped.images.items():
            start, length = (np.asarray(a, dtype=np.int64) for a in (img.fo_start, img.fo_len))
            entries = np.concatenate([np.arange(a, a + n) for a, n in zip(start, length)] or [np.zeros(0, int)])
            for dst in np.asarray(img.fo_vcore, dtype=np.int64)[entries]:   # one per neuron's fan-out entry
                if 0 <= dst < len(self.pcores):
                    routes += 1
                    crossing += not mine.issuperset(xy_route(cfg, self.pcores[q], self.pcores[int(dst)]))
        return crossing / routes if routes else 0.0

    # ---- relocation (the hypervisor's: Chip.relocate) and teardown ------------------------------
    def _relocate(self, vcore: int, pcore: int) -> None:
        """Move ``vcore`` to the free physical core ``pcore``: copy all its memories (network and
        state), point the MMU at the new core, scrub the old one.  Nothing is recompiled: fan-out
        tables name virtual cores, so the network runs on unchanged."""
        self._check_alive()
        for what, value in (("vcore", vcore), ("pcore", pcore)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise VMError(f"VM {self.name!r}: relocate: {what} must be an integer, not {value!r}")
        vcore, pcore = int(vcore), int(pcore)
        if not 0 <= vcore < len(self.pcores):
            raise VMError(f"VM {self.name!r}: vcore {vcore} does not exist (it has {len(self.pcores)})")
        if pcore not in self._hv.free_cores:
            owner = next((v.name for v in self._hv.vms if pcore in v.pcores), None)
            why = f"held by VM {owner!r}" if owner else f"not a core of this chip (0..{self._hv.config.num_cores - 1})"
            raise VMError(f"VM {self.name!r}: cannot relocate vcore {vcore} to core {pcore}: it is {why}")
        old = self.pcores[vcore]
        cfg = self._hv.config
        self._hv.reset(pcore)
        for region, spec in region_specs(cfg).items():     # the learning regions too (§24)
            words = self._hv.read(HV_VM, old, region, 0, spec.size(cfg))
            if words.any():
                self._hv.write(HV_VM, pcore, region, 0, words.astype(np.int64))
        self._counter_base += self._hv.counters(self.id, vcore)
        self._hv.map(self.id, vcore, pcore)     # releases the old core's owner register
        self._hv.reset(old)
        self.pcores[vcore] = pcore
        if self.mapped is not None and vcore < len(self.mapped.pcore_of_vcore):
            self.mapped.pcore_of_vcore = self.mapped.pcore_of_vcore.copy()
            self.mapped.pcore_of_vcore[vcore] = pcore

    @_atomic
    def destroy(self) -> None:
        """Unmap and scrub every core of the VM and give them back to the chip."""
        self._check_alive()
        for vc, pc in enumerate(self.pcores):
            self._hv.unmap(self.id, vc)
            self._hv.reset(pc)
        self._release()


#: LEARN_RULE's enable bit (§24.1), flipped by ``VM.run(learn=...)``.
LEARN_RULE_ENABLE = LEARN_REGIONS[LearnRegion.LEARN_RULE].fmt["enable"]


def _is_digraph(x) -> bool:
    try:
        import networkx as nx
    except ImportError:
        return False
    return isinstance(x, nx.DiGraph)


def _read_mapped(path):
    """A ``.nvmap`` file as a MappedNetwork; VMError naming the file if it cannot be read."""
    from neurovm.mapper import MapError, MappedNetwork

    try:
        return MappedNetwork.load(path)
    except (MapError, ImageError):
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MapError(f"{path}: not a readable mapped-network file ({type(e).__name__}: {e})") from None


def _placement_list(mapped, who: str) -> list[int]:
    try:
        return P.as_words(np.asarray(mapped.pcore_of_vcore).ravel(), "pcore_of_vcore entry", 0, 1 << 16).tolist()
    except RequestError as e:
        raise VMError(f"{who}: the network's placement: {e}") from None


def _check_mapped(mapped, cfg, pcores: list[int], who: str) -> None:
    """VMError unless ``mapped`` can be loaded onto ``pcores`` as it is: vcores 0..k-1, each
    placed on a distinct core of the VM, every image legal for ``cfg``, neurons on real vcores."""
    k = len(mapped.images)
    if sorted(mapped.images) != list(range(k)):
        raise VMError(f"{who}: the network's images are for vcores {sorted(mapped.images)}, not 0..{k - 1}")
    placement = _placement_list(mapped, who)
    if len(placement) != k or len(set(placement)) != k or not set(placement) <= set(pcores):
        raise VMError(f"{who}: the network's placement pcore_of_vcore {placement} is not {k} distinct cores "
                      f"of the VM's {sorted(pcores)}")
    for vc, img in mapped.images.items():
        try:
            img.region_words(cfg)
        except ImageError as e:
            raise VMError(f"{who}: the image of vcore {vc} is illegal: {e}") from None
    core_of, local = np.asarray(mapped.core_of), np.asarray(mapped.local)
    if core_of.shape != local.shape or (core_of.size and (core_of.min() < 0 or core_of.max() >= k
                                                          or local.min() < 0
                                                          or local.max() >= cfg.neurons_per_core)):
        raise VMError(f"{who}: the network's neuron table (core_of, local) names vcores or neurons that "
                      f"its {k} images do not have")


def _replace(mapped, pcores: list[int]):
    """The same images placed onto ``pcores`` (traffic taken from the fan-out tables)."""
    from dataclasses import replace

    from neurovm.mapper import place

    k = len(mapped.images)
    traffic = np.zeros((k, k))
    for q, img in mapped.images.items():
        np.add.at(traffic, (q, np.asarray(img.fo_vcore, dtype=np.int64)), 1.0)
    np.fill_diagonal(traffic, 0)
    return replace(mapped, pcore_of_vcore=place(traffic, mapped.config, pcores))


# ---- saved VM contexts: swapping, persistence and migration (the service's, §23) --------------------
@dataclass
class VMContext:
    """Everything a VM is, held in host memory: its cores' words and what the books say about them.

    ``regions[r]`` is a ``(vcores, size of r)`` uint32 array: region ``r`` (every region the chip
    has, ``formats.region_specs``: the learning regions of §24 too) of each of the VM's vcores, in
    vcore order, read word for word through the hypervisor's physical addressing (§7.0) --
    configuration, state and the pending input in ``ACC`` alike.  ``counters`` are the VM's guest
    counter totals so far (cores given back included), ``steps_run`` its own
    steps, ``mapped`` its loaded network (None when nothing is loaded).
    """

    name: str
    cores: int
    regions: dict
    counters: np.ndarray
    steps_run: int
    mapped: object = None

    @property
    def words(self) -> int:
        """Memory words the context holds (what a save or a restore moves)."""
        return int(sum(a.size for a in self.regions.values()))


def _save_context(chip: Chip, vm: VM) -> VMContext:
    """The whole context of ``vm`` (see :meth:`Chip.save_context`); the chip is not changed."""
    cfg = chip.config
    regions = {}
    for spec in region_specs(cfg).values():      # the §24 learning regions too, on a learning chip
        words = [chip.read(HV_VM, pc, spec.region, 0, spec.size(cfg)) for pc in vm.pcores]
        regions[spec.region] = np.stack(words).astype(np.uint32)
    counters = vm._counter_base + vm._core_counters().sum(axis=0)
    mapped = None if vm.mapped is None else replace(
        vm.mapped, pcore_of_vcore=np.asarray(vm.mapped.pcore_of_vcore, dtype=np.int64).copy())
    return VMContext(vm.name, len(vm.pcores), regions, counters.astype(np.int64), int(vm.steps_run), mapped)


def _check_context(chip: Chip, vm: VM, ctx: VMContext) -> None:
    """VMError unless ``ctx`` fits ``vm``: same number of cores, every region of the right shape."""
    cfg = chip.config
    if not isinstance(ctx, VMContext):
        raise VMError(f"VM {vm.name!r}: restore_context needs a VMContext, not {type(ctx).__name__}")
    if ctx.cores != len(vm.pcores):
        raise VMError(f"VM {vm.name!r}: the context holds {ctx.cores} cores, the VM has {len(vm.pcores)}")
    specs = region_specs(cfg)
    extra = sorted(int(r) for r in ctx.regions if int(r) not in specs)
    if extra:
        raise VMError(f"VM {vm.name!r}: the context holds region {extra[0]}, which this chip does not have")
    for spec in specs.values():
        shape = (ctx.cores, spec.size(cfg))
        got = np.shape(ctx.regions.get(spec.region, ()))
        if got != shape:
            raise VMError(f"VM {vm.name!r}: context region {spec.region.name} has shape {got}, not {shape}")
    if ctx.mapped is not None and ctx.mapped.config != cfg:
        raise VMError(f"VM {vm.name!r}: the context's network was mapped for another chip configuration")


def _restore_context(chip: Chip, vm: VM, ctx: VMContext) -> None:
    """Write ``ctx`` onto ``vm``'s cores (see :meth:`Chip.restore_context`)."""
    _check_context(chip, vm, ctx)
    for pc in vm.pcores:
        chip.reset(pc)
    for spec in region_specs(chip.config).values():
        for vc, pc in enumerate(vm.pcores):
            words = np.asarray(ctx.regions[spec.region][vc])
            if words.any():
                chip.write(HV_VM, pc, spec.region, 0, words.astype(np.int64))
    vm._counter_base = np.asarray(ctx.counters, dtype=np.int64).copy()   # the fresh cores count from 0
    vm.steps_run = int(ctx.steps_run)
    vm.mapped = None
    if ctx.mapped is not None:
        k = len(np.asarray(ctx.mapped.pcore_of_vcore))
        vm.mapped = replace(ctx.mapped, pcore_of_vcore=np.asarray(vm.pcores[:k], dtype=np.int64))

