"""The service's hypervisor: tenants' VMs on the daemon's chip(s), swapped, persisted and billed.

:class:`ServiceHypervisor` is what the HTTP server calls.  It owns the chips (one
:class:`~neurovm.host.runtime.Chip` per ``--chips``), keeps every tenant VM as a
:class:`ServiceVM` -- resident on a chip, or swapped out as a
:class:`~neurovm.host.runtime.VMContext` in host memory -- and after every completed request
stores the VM's context in the registry (one SQLite transaction), so a ``kill -9`` loses at
most the request in flight, and never half of it.

Tenants name VMs by their own names; a name the caller does not hold is "not found" whether or
not another tenant holds it.  Quotas are checked before anything changes.  When a VM must run
and its chip has no room, the least recently used resident VMs that are not in the request are
swapped out (their whole context saved through the hypervisor's READ) and the VM is restored
onto free cores -- possibly other physical cores or the other chip (spec §23).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurovm.formats import Region

from ..client import ChipError, RequestError
from ..runtime import Chip, SpikeTrains, VMContext, VMError
from .errors import BadRequest, Busy, Conflict, NotFound, QuotaError, ServiceError
from .registry import Registry, Tenant
from .scheduler import RunBatcher, RunJob

__all__ = ["ServiceHypervisor", "ServiceVM", "RunReport", "encode_context", "decode_context"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: Environment variable of the crash tests: ``load`` or ``run`` makes the server stop (sleep) after
#: the chip has done the request and before the registry commits it, leaving ``DATA/paused-<op>``.
PAUSE_ENV = "NEUROVM_SERVICE_PAUSE"


@dataclass
class ServiceVM:
    """A tenant VM: its registry id, owner, name, size, and where it is now (chip VM or saved context)."""

    id: int
    tenant: str
    name: str
    cores: int
    context: VMContext
    network: bytes | None = None
    chip: int | None = None
    vm: object = None
    last_used: float = field(default_factory=time.monotonic)
    #: held for the whole of one request on this VM (a sliced run included): requests on one VM never interleave
    busy: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def resident(self) -> bool:
        return self.vm is not None


@dataclass
class RunReport:
    """What one run cost: steps, and the VM's counter increments (for the metrics)."""

    steps: int
    syn_ops: int
    energy_pj: float


def encode_context(ctx: VMContext) -> bytes:
    """A context's words, counters and steps as ``.npz`` bytes (its network is stored apart)."""
    buf = io.BytesIO()
    arrays = {f"region.{r.name}": np.asarray(ctx.regions[r], dtype=np.uint32) for r in ctx.regions}
    np.savez_compressed(buf, counters=np.asarray(ctx.counters, dtype=np.int64),
                        meta=np.array([ctx.cores, ctx.steps_run], dtype=np.int64), **arrays)
    return buf.getvalue()


def decode_context(blob: bytes, name: str, mapped) -> VMContext:
    """The context :func:`encode_context` wrote, with its network ``mapped``."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        regions = {_region_named(k[len("region."):]): z[k] for k in z.files if k.startswith("region.")}
        cores, steps = (int(v) for v in z["meta"])
        return VMContext(name, cores, regions, z["counters"].astype(np.int64), steps, mapped)


def _region_named(name: str):
    """The Region (or §24 LearnRegion) called ``name``."""
    from neurovm.formats import LearnRegion

    return Region[name] if name in Region.__members__ else LearnRegion[name]


def _empty_context(name: str, cores: int, config) -> VMContext:
    from neurovm.formats import region_specs

    regions = {s.region: np.zeros((cores, s.size(config)), dtype=np.uint32) for s in region_specs(config).values()}
    from neurovm.formats import GUEST_COUNTERS

    return VMContext(name, cores, regions, np.zeros(GUEST_COUNTERS, dtype=np.int64), 0, None)


class ServiceHypervisor:
    """The daemon's chips, tenant VMs and registry.

    Parameters
    ----------
    registry : Registry
        The data folder's registry; VMs recorded there are restored (swapped out, resumed on first use).
    chips : list of Chip
        The chips this daemon owns exclusively (same configuration).
    data : Path
        The data folder (temporary files for uploaded models and networks go in ``data/tmp``).
    quantum : int
        A run of more steps goes to the chip in slices of this many steps, each queued anew, so that
        other tenants' requests are served in between (time sharing); it is committed once, at the end.
    """

    def __init__(self, registry: Registry, chips: list[Chip], data: Path, quantum: int = 1000):
        if not chips or len({c.config for c in chips}) != 1:
            raise ValueError("the service needs one or more chips of one configuration")
        self.registry = registry
        self.chips = chips
        self.config = chips[0].config
        self.data = Path(data)
        self.tmp = self.data / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.lock = threading.RLock()
        self.swaps = 0
        self.quantum = int(quantum)
        self._vms: dict[tuple[str, str], ServiceVM] = {}
        self.batcher = RunBatcher(self.lock, self._serve_batch, self._fits_together)
        self._restore()

    # ---- start-up ---------------------------------------------------------------------------------
    def _restore(self) -> None:
        """Every VM of the registry, swapped out at its last committed context."""
        for rec in self.registry.vms():
            mapped = self._network_from_bytes(rec.network) if rec.network else None
            ctx = decode_context(rec.context, _chip_name(rec.tenant, rec.name), mapped)
            self._vms[(rec.tenant, rec.name)] = ServiceVM(rec.id, rec.tenant, rec.name, rec.cores, ctx, rec.network)

    # ---- lookup and quotas -------------------------------------------------------------------------
    def vms_of(self, tenant: str) -> list[ServiceVM]:
        """The tenant's VMs, by registry id."""
        with self.lock:
            return sorted((v for (t, _), v in self._vms.items() if t == tenant), key=lambda v: v.id)

    def find(self, tenant: Tenant, name: str) -> ServiceVM:
        """The caller's VM ``name``; NotFound (the same text whoever else holds the name)."""
        svm = self._vms.get((tenant.name, name)) if isinstance(name, str) else None
        if svm is None:
            raise NotFound(f"no VM named {name!r}")
        return svm

    @contextlib.contextmanager
    def _request(self, tenant: Tenant, name: str):
        """The caller's VM ``name``, held for one request: its busy lock, then the hypervisor's lock."""
        svm = self.find(tenant, name)
        with svm.busy, self.lock:
            if self._vms.get((tenant.name, name)) is not svm:     # destroyed while we waited
                raise NotFound(f"no VM named {name!r}")
            yield svm

    def _check_create(self, tenant: Tenant, name: str, cores) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadRequest(f"VM name {name!r}: use 1..64 letters, digits, '.', '-' or '_'")
        limit = min(self.config.vcores_per_vm, self.config.num_cores)
        if isinstance(cores, bool) or not isinstance(cores, int) or not 1 <= cores <= limit:
            raise BadRequest(f"VM {name!r}: cores must be an integer in 1..{limit} (the chip's per-VM limit), "
                             f"not {cores!r}")
        if (tenant.name, name) in self._vms:
            raise Conflict(f"VM {name!r} already exists")
        mine = self.vms_of(tenant.name)
        q = tenant.quota
        if len(mine) + 1 > q.vms:
            raise QuotaError(f"quota vms={q.vms} of tenant {tenant.name!r}: it holds {len(mine)} VMs already")
        used = sum(v.cores for v in mine)
        if used + cores > q.cores:
            raise QuotaError(f"quota cores={q.cores} of tenant {tenant.name!r}: it holds {used} cores, "
                             f"{cores} more asked")

    @staticmethod
    def check_steps(tenant: Tenant, steps, what: str = "steps") -> int:
        """``steps`` as a positive int within the tenant's steps quota."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise BadRequest(f"{what} must be a positive integer, not {steps!r}")
        if steps > tenant.quota.steps:
            raise QuotaError(f"quota steps={tenant.quota.steps} of tenant {tenant.name!r}: {steps} {what} asked")
        return steps

    # ---- residency: swapping in and out ------------------------------------------------------------
    def _room(self, chip: Chip, cores: int) -> bool:
        return len(chip.free_cores) >= cores and len(chip.vms) < self.config.max_vms

    def _resident(self, idx: int) -> list[ServiceVM]:
        return [v for v in self._vms.values() if v.resident and v.chip == idx]

    def _swap_out(self, svm: ServiceVM) -> None:
        """Save the VM's whole context to host memory and give its cores and VM id back."""
        chip = self.chips[svm.chip]
        svm.context = chip.save_context(svm.vm)
        svm.vm.destroy()
        svm.vm, svm.chip = None, None
        self.swaps += 1

    def _make_room(self, cores: int, keep: set, only: int | None = None) -> int:
        """A chip (``only`` that one, when given) with ``cores`` free cores and a free VM id, swapping out
        its least recently used VMs not in ``keep``; Busy if no such chip can make room."""
        order = list(range(len(self.chips))) if only is None else [only]
        for idx in order:
            if self._room(self.chips[idx], cores):
                return idx
        for idx in order:
            victims = sorted((v for v in self._resident(idx) if v.id not in keep), key=lambda v: v.last_used)
            chip = self.chips[idx]
            while victims and not self._room(chip, cores):
                self._swap_out(victims.pop(0))
            if self._room(chip, cores):
                return idx
        where = "no chip has" if only is None else f"chip {only} has not"
        raise Busy(f"{where} {cores} free cores and a free VM id, and the VMs holding them are in use")

    def _swap_in(self, svm: ServiceVM, keep: set, chip: int | None = None) -> None:
        """Make ``svm`` resident (on ``chip`` when given): restore its context onto free cores."""
        if svm.resident and (chip is None or svm.chip == chip):
            return
        idx = self._make_room(svm.cores, keep | {svm.id}, only=chip)
        if svm.resident:
            self._swap_out(svm)
        vm = self.chips[idx].create_vm(_chip_name(svm.tenant, svm.name), cores=svm.cores)
        try:
            self.chips[idx].restore_context(vm, svm.context)
        except (VMError, ChipError, RequestError):
            vm.destroy()
            raise
        svm.vm, svm.chip = vm, idx

    # ---- persistence ------------------------------------------------------------------------------------
    def _commit(self, svm: ServiceVM, op: str, network: bool = False, output: bytes | None = None) -> VMContext:
        """Read the VM's context back through the hypervisor and store it (one transaction)."""
        ctx = self.chips[svm.chip].save_context(svm.vm)
        blob = encode_context(ctx)
        _pause_for_crash_test(self.data, op)
        self.registry.save_vm(svm.id, blob, network=svm.network, set_network=network, output=output)
        svm.context = ctx
        svm.last_used = time.monotonic()
        return ctx

    def _network_from_bytes(self, blob: bytes):
        """A MappedNetwork from ``.nvmap`` bytes (fully checked by MappedNetwork.load); BadRequest if bad."""
        from neurovm.image import ImageError
        from neurovm.mapper import MapError, MappedNetwork

        fd, path = tempfile.mkstemp(suffix=".nvmap", dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            return MappedNetwork.load(path)
        except (MapError, ImageError) as e:
            raise BadRequest(str(e).replace(path, "the uploaded network")) from None
        finally:
            os.unlink(path)

    # ---- the tenant API ---------------------------------------------------------------------------------
    def create_vm(self, tenant: Tenant, name: str, cores: int) -> ServiceVM:
        """A new VM of ``cores`` cores (quotas checked; others swapped out if the chip is full)."""
        with self.lock:
            self._check_create(tenant, name, cores)
            ctx = _empty_context(_chip_name(tenant.name, name), cores, self.config)
            vm_id = self.registry.add_vm(tenant.id, name, cores, encode_context(ctx))
            svm = ServiceVM(vm_id, tenant.name, name, cores, ctx)
            self._vms[(tenant.name, name)] = svm
            return svm

    def load(self, tenant: Tenant, name: str, network: bytes) -> ServiceVM:
        """Load ``.nvmap`` bytes into the VM (re-placed onto its cores); the old network stays on refusal."""
        with self._request(tenant, name) as svm:
            mapped = self._network_from_bytes(network)
            self._swap_in(svm, set())
            try:
                svm.vm.load(mapped)
            except VMError as e:
                emptied = svm.vm.mapped is None and svm.network is not None   # rolled back to an empty VM
                if emptied:
                    svm.network = None
                self._commit(svm, "load-refused", network=emptied)
                raise BadRequest(_tenant_text(e, svm)) from None
            svm.network = network
            self._commit(svm, "load", network=True)
            return svm

    def run(self, tenant: Tenant, name: str, steps: int, inputs: dict, keep: bool = False):
        """Run the VM ``steps`` steps with ``inputs``; its SpikeTrains and a RunReport.  With ``keep`` the
        output is also kept for :meth:`take_output` (bounded by the outputs quota).  Concurrent requests
        of other VMs with the same steps share one gated RUN (:mod:`.scheduler`).  The checks here take
        no hypervisor lock, so requests queue up while the chip is busy (they are checked again when
        served)."""
        svm = self.find(tenant, name)
        steps = self.check_steps(tenant, steps)
        with svm.busy:
            if self._vms.get((tenant.name, name)) is not svm:
                raise NotFound(f"no VM named {name!r}")
            if keep:
                self._check_outputs(svm, tenant.quota.outputs)
            if svm.context.mapped is None:
                raise BadRequest(f"VM {name!r}: no network loaded")
            inputs = _input_keys(inputs, svm.context.mapped)
            if steps <= self.quantum:
                return self.batcher.submit(RunJob(svm, steps, inputs, keep, limit=tenant.quota.outputs))
            return self._run_sliced(svm, steps, inputs, keep)

    def _run_sliced(self, svm: ServiceVM, steps: int, inputs: dict, keep: bool):
        """A long run as slices of ``quantum`` steps, each queued anew (others are served in between), then
        one commit; a slice refused puts the VM back where the request found it."""
        _check_input_extent(inputs, steps, svm.name)
        start = svm.context
        parts = []
        try:
            for first in range(0, steps, self.quantum):
                n = min(self.quantum, steps - first)
                job = RunJob(svm, n, _slice_inputs(inputs, first, first + n), commit=False)
                parts.append((first, self.batcher.submit(job)[0]))
        except BaseException:
            with self.lock:
                if svm.resident:
                    self.chips[svm.chip].restore_context(svm.vm, start)
                svm.context = start
            raise
        out = SpikeTrains(np.concatenate([p.step + first for first, p in parts]).astype(np.int64),
                          np.concatenate([p.neuron for _, p in parts]).astype(np.int64), parts[0][1].n_neurons, steps)
        with self.lock:
            self._swap_in(svm, set())
            job = RunJob(svm, steps, inputs, keep)
            job.svm.context = start          # the report counts the whole request
            self._finish_run(job, out, 1)
        return job.result

    def _check_outputs(self, svm: ServiceVM, limit: int) -> None:
        if len(self.registry.outputs(svm.id)) >= limit:
            raise Conflict(f"VM {svm.name!r} has {limit} uncollected outputs, its limit (quota outputs={limit}); "
                           f"collect them first")

    def _fits_together(self, jobs: list) -> bool:
        """Whether the jobs' VMs can be resident on one chip at once."""
        return sum(j.svm.cores for j in jobs) <= self.config.num_cores and len(jobs) <= self.config.max_vms

    def _place_together(self, svms: list[ServiceVM]) -> Chip:
        """Make every VM of ``svms`` resident on one chip (swapping others out); that chip."""
        keep = {v.id for v in svms}
        resident = [v.chip for v in svms if v.resident]
        idx = max(set(resident), key=resident.count) if resident else None
        for svm in svms:
            self._swap_in(svm, keep, chip=idx)
            idx = svm.chip
        return self.chips[idx]

    def _serve_batch(self, jobs: list) -> None:
        """Run the jobs' VMs in one gated RUN and commit each; a refused batch is retried job by job."""
        try:
            live = []
            for job in jobs:
                if self._vms.get((job.svm.tenant, job.svm.name)) is not job.svm:
                    job.finish(error=NotFound(f"no VM named {job.svm.name!r}"))
                elif job.svm.context.mapped is None:
                    job.finish(error=BadRequest(f"VM {job.svm.name!r}: no network loaded"))
                elif job.keep and len(self.registry.outputs(job.svm.id)) >= job.limit:
                    job.finish(error=Conflict(f"VM {job.svm.name!r} has {job.limit} uncollected outputs, its "
                                              f"limit (quota outputs={job.limit}); collect them first"))
                else:
                    live.append(job)
            if not live:
                return
            try:
                chip = self._place_together([j.svm for j in live])
                outs = chip.run(live[0].steps, {j.svm.vm: j.inputs for j in live})
            except (VMError, RequestError, Busy) as e:
                if len(live) > 1:
                    for job in live:
                        self._serve_batch([job])
                    return
                err = e if isinstance(e, Busy) else BadRequest(_tenant_text(e, live[0].svm))
                live[0].finish(error=err)
                return
            for job in live:
                self._finish_run(job, outs[job.svm.vm], len(live))
        finally:
            for job in jobs:
                if not job.done:
                    job.finish(error=ServiceError("the run failed inside the server; the VM is unchanged"))

    def _finish_run(self, job, out: SpikeTrains, batch_size: int) -> None:
        """Commit a run job's VM and hand the job its result."""
        from .wire import pack

        before = job.svm.context.counters.copy()
        if not job.commit:          # a slice of a longer run: the request commits once, at its end
            job.svm.context = self.chips[job.svm.chip].save_context(job.svm.vm)
            job.svm.last_used = time.monotonic()
            job.finish((out, None), batch_size=batch_size)
            return
        blob = pack(spikes_arrays(out)) if job.keep else None
        ctx = self._commit(job.svm, "run", output=blob)
        job.finish((out, _report(job.steps, before, ctx.counters)), batch_size=batch_size)

    def take_output(self, tenant: Tenant, name: str) -> bytes:
        """The VM's oldest uncollected output (``.npz`` bytes); NotFound when none waits."""
        with self.lock:
            svm = self.find(tenant, name)
            blob = self.registry.pop_output(svm.id)
        if blob is None:
            raise NotFound(f"VM {name!r} has no uncollected output")
        return blob

    def pending_outputs(self, tenant: Tenant, name: str) -> int:
        with self.lock:
            return len(self.registry.outputs(self.find(tenant, name).id))

    def reset_state(self, tenant: Tenant, name: str) -> None:
        with self._request(tenant, name) as svm:
            self._swap_in(svm, set())
            svm.vm.reset_state()
            self._commit(svm, "reset")

    def state(self, tenant: Tenant, name: str) -> dict[str, np.ndarray]:
        with self._request(tenant, name) as svm:
            if svm.context.mapped is None:
                raise BadRequest(f"VM {name!r}: no network loaded")
            self._swap_in(svm, set())
            svm.last_used = time.monotonic()
            return svm.vm.state()

    def telemetry(self, tenant: Tenant, name: str) -> dict:
        with self._request(tenant, name) as svm:
            self._swap_in(svm, set())
            svm.last_used = time.monotonic()
            out = svm.vm.telemetry()
            out["foreign_transit"] = svm.vm.foreign_transit()
            return out

    def destroy(self, tenant: Tenant, name: str) -> None:
        with self._request(tenant, name) as svm:
            if svm.resident:
                svm.vm.destroy()
            self.registry.delete_vm(svm.id)
            del self._vms[(tenant.name, name)]

    def predict(self, tenant: Tenant, model_bytes: bytes, x: np.ndarray, steps: int | None):
        """Class predictions of an uploaded ``.nvm`` model on ``x``, in a VM of the tenant's that lives for
        this request only (it counts against the VM and core quotas meanwhile)."""
        from ..model import ModelError, load_model

        with self.lock:
            fd, path = tempfile.mkstemp(suffix=".nvm", dir=self.tmp)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(model_bytes)
                model = load_model(path)
            except ModelError as e:
                raise BadRequest(str(e).replace(path, "the uploaded model")) from None
            finally:
                os.unlink(path)
            if model.config != self.config:
                raise BadRequest("the model was converted for another chip configuration than this server's")
            steps = model.steps if steps is None else steps
            n = int(np.asarray(x).shape[0]) if np.ndim(x) == 2 else 1
            self.check_steps(tenant, steps * n, "steps (samples x steps per sample)")
            cores = model.cores_needed()
            probe = f"predict-{os.getpid()}-{time.monotonic_ns()}"
            self._check_create(tenant, probe, cores)
            idx = self._make_room(cores, set())
            try:
                pred, scores = model.predict(x, chip=self.chips[idx], steps=steps, batch=1, return_scores=True,
                                             name=_chip_name(tenant.name, probe), progress=False)
            except ModelError as e:
                raise BadRequest(str(e)) from None
            return pred, scores

    def status(self) -> list[dict]:
        """Every VM (the administrator's view): owner, name, cores, chip, resident or swapped out."""
        with self.lock:
            return [{"tenant": v.tenant, "name": v.name, "cores": v.cores, "chip": v.chip,
                     "pcores": list(v.vm.pcores) if v.resident else None, "loaded": v.context.mapped is not None}
                    for v in sorted(self._vms.values(), key=lambda v: v.id)]

    def migrate(self, tenant_name: str, name: str, chip: int) -> None:
        """Move a VM to chip ``chip`` (administrator; between requests): its context goes with it."""
        with self.lock:
            svm = self._vms.get((tenant_name, name))
            if svm is None:
                raise NotFound(f"no VM named {name!r} of tenant {tenant_name!r}")
            if isinstance(chip, bool) or not isinstance(chip, int) or not 0 <= chip < len(self.chips):
                raise BadRequest(f"chip must be 0..{len(self.chips) - 1}, not {chip!r}")
            self._swap_in(svm, set(), chip=chip)


def spikes_arrays(out: SpikeTrains) -> dict[str, np.ndarray]:
    """A run's SpikeTrains as arrays for the wire."""
    return {"step": out.step.astype(np.int64), "neuron": out.neuron.astype(np.int64),
            "shape": np.array([out.steps, out.n_neurons], dtype=np.int64)}


def _input_keys(inputs: dict, mapped) -> dict:
    """Input names from the wire (strings): a decimal one that names no population is a neuron id."""
    return {int(k) if isinstance(k, str) and k.isdecimal() and k not in mapped.populations else k: v
            for k, v in inputs.items()}


def _is_raster(arr: np.ndarray) -> bool:
    """Whether an input is a spike raster (as the runtime reads it, §17), not a list of spike times."""
    return arr.dtype == bool or (arr.ndim == 2 and arr.dtype.kind in "iuf" and np.isin(arr, (0, 1)).all())


def _check_input_extent(inputs: dict, steps: int, name: str) -> None:
    """BadRequest unless every raster has at most ``steps`` rows and every spike time lies in 0..steps-1
    (what the runtime checks for a whole run, checked before a sliced run starts)."""
    for key, value in inputs.items():
        arr = np.asarray(value)
        if _is_raster(arr):
            if arr.ndim == 0 or arr.shape[0] > steps:
                raise BadRequest(f"VM {name!r}: input {key!r} must be a (steps <= {steps}, n) spike raster, "
                                 f"not shape {arr.shape}")
        elif arr.dtype.kind in "iuf" and arr.size and (arr.min() < 0 or arr.max() > steps - 1):
            raise BadRequest(f"VM {name!r}: input {key!r}: spike times must lie in 0..{steps - 1} (steps of "
                             f"this run)")


def _slice_inputs(inputs: dict, first: int, stop: int) -> dict:
    """The inputs of steps ``first .. stop-1``, renumbered from 0: raster rows, or spike times."""
    out = {}
    for key, value in inputs.items():
        arr = np.asarray(value)
        if _is_raster(arr):
            out[key] = arr[first:stop]
        elif arr.dtype.kind in "iuf":
            flat = arr.ravel()
            out[key] = flat[(flat >= first) & (flat < stop)] - first
        else:
            out[key] = arr if first == 0 else arr[:0]      # the runtime refuses it in the first slice
    return out


def _chip_name(tenant: str, name: str) -> str:
    return f"{tenant}/{name}"


def _tenant_text(e: Exception, svm: ServiceVM) -> str:
    """A runtime error as the tenant sees it: its own VM name, not the chip's."""
    return str(e).replace(repr(_chip_name(svm.tenant, svm.name)), repr(svm.name))


def _report(steps: int, before: np.ndarray, after: np.ndarray) -> RunReport:
    from neurovm.emulator.energy import EnergyModel
    from neurovm.formats import Counter

    delta = np.asarray(after, dtype=np.int64) - np.asarray(before, dtype=np.int64)
    return RunReport(steps, int(delta[Counter.SYN_OPS]), float(EnergyModel().energy_pj(delta)))


def _pause_for_crash_test(data: Path, op: str) -> None:
    """The crash tests' hook (:data:`PAUSE_ENV`): stop between doing ``op`` and committing it."""
    if os.environ.get(PAUSE_ENV) == op:
        (data / f"paused-{op}").write_text(str(os.getpid()))
        time.sleep(3600)
