"""Batching tenants' run requests into gated RUNs, served round-robin by tenant (spec §23).

Each run request (or slice of a long run) becomes a :class:`RunJob` queued under its tenant.
The chip is served one *turn* at a time: whichever request thread holds the hypervisor's lock
takes the next turn -- not necessarily its own job -- and releases the lock after it, so other
requests (loads, state reads) get in between turns.  A thread whose job is still queued takes
turns until some turn has served it.

A turn belongs to the tenant at the head of the rotation that has queued jobs: its oldest job
leads the batch.  Queued jobs of other VMs with the same step count that fit on one chip with
it join that RUN, first one per other tenant (in rotation order), then further jobs; their VMs
are made resident on one chip and stepped by one ``chip.run(steps, {vm: inputs, ...})`` -- a
gated RUN whose domains are exactly those VMs (§6.1), so each VM's spikes, state and counters
are what it would get running alone.  After the turn every tenant it served moves to the back
of the rotation.  So a tenant with many queued requests cannot starve one with a single request:
with T tenants waiting, a queued job is served within T turns, and a turn lasts at most one
request or one ``--quantum`` slice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from .errors import ServiceError

__all__ = ["RunJob", "RunBatcher"]

#: How many served jobs :attr:`RunBatcher.served` remembers (for ``GET /admin/scheduler`` and tests).
HISTORY = 256


@dataclass(eq=False)
class RunJob:
    """One run request: the VM, steps and inputs, whether to keep the output (``limit``: the VM's
    outputs quota), whether to commit it (False for a slice of a longer run), and (once served) its
    outcome."""

    svm: object
    steps: int
    inputs: dict
    keep: bool = False
    limit: int = 0
    commit: bool = True
    done: bool = False
    result: object = None
    error: BaseException | None = None
    batch_size: int = 0
    _event: threading.Event = field(default_factory=threading.Event)

    @property
    def tenant(self) -> str:
        """The name of the tenant that owns the job's VM."""
        return self.svm.tenant

    def finish(self, result=None, error: BaseException | None = None, batch_size: int = 1) -> None:
        self.result, self.error, self.batch_size, self.done = result, error, batch_size, True
        self._event.set()


class RunBatcher:
    """The run queue of one :class:`~neurovm.host.service.hypervisor.ServiceHypervisor`: one FIFO per
    tenant, served round-robin by tenant.

    Parameters
    ----------
    lock : threading.RLock
        The hypervisor's lock (held for one turn at a time).
    serve : callable
        ``serve(jobs)``: runs a batch (all jobs' VMs in one gated RUN) and finishes every job.
    fits : callable
        ``fits(jobs)``: whether these jobs' VMs can be resident on one chip together.
    """

    def __init__(self, lock, serve, fits):
        self._lock, self._serve, self._fits = lock, serve, fits
        self._queues: OrderedDict[str, deque[RunJob]] = OrderedDict()   # rotation order: next turn first
        self._qlock = threading.Lock()
        self.batches = 0
        self.largest = 0
        self.serving = False    # a batch is running now
        #: ``(turn, tenant, VM name)`` of the most recently served jobs, oldest first (read it with :meth:`recent`)
        self.served: deque[tuple[int, str, str]] = deque(maxlen=HISTORY)

    def queued(self) -> dict[str, int]:
        """Jobs waiting per tenant, in rotation order (the next turn's tenant first)."""
        with self._qlock:
            return {t: len(q) for t, q in self._queues.items() if q}

    def recent(self, n: int = 32) -> list[tuple[int, str, str]]:
        """The last ``n`` served jobs as ``(turn, tenant, VM name)``, oldest first."""
        with self._qlock:
            return list(self.served)[-n:]

    def submit(self, job: RunJob):
        """Queue ``job``; take turns serving the queue until ``job`` is served; its result, or raise its error."""
        with self._qlock:
            self._queues.setdefault(job.tenant, deque()).append(job)
        while not job.done:
            with self._lock:
                if not job.done and not self._turn():
                    job.finish(error=ServiceError("the run request was lost from the scheduler's queue; "
                                                  "the VM is unchanged"))
        job._event.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _turn(self) -> bool:
        """Serve the next batch (called with the hypervisor's lock held); False when nothing was queued."""
        batch = self._take()
        if not batch:
            return False
        self.largest = max(self.largest, len(batch))
        self.serving = True
        try:
            self._serve(batch)
        finally:
            self.serving = False
        return True

    def _take(self) -> list[RunJob]:
        """The next turn's batch, removed from the queues; its tenants moved to the back of the rotation."""
        with self._qlock:
            order = [t for t, q in self._queues.items() if q]
            if not order:
                return []
            lead = self._queues[order[0]][0]
            batch = [lead]
            heads = [self._queues[t][0] for t in order[1:]]                       # one per other tenant first
            rest = [j for t in order for j in self._queues[t] if j is not lead and j not in heads]
            for job in heads + rest:
                if job.steps == lead.steps and all(j.svm is not job.svm for j in batch) \
                        and self._fits(batch + [job]):
                    batch.append(job)
            self.batches += 1
            self.served.extend((self.batches, j.tenant, j.svm.name) for j in batch)
            for job in batch:
                self._queues[job.tenant].remove(job)
            for tenant in dict.fromkeys(j.tenant for j in batch):                # served: to the back
                self._queues.move_to_end(tenant)
            for tenant in [t for t, q in self._queues.items() if not q]:
                del self._queues[tenant]
        return batch
