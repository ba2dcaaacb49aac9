"""Fair shares: the service's run queue is served round-robin by tenant (spec §23, scheduler).

In-process (a :class:`ServiceHypervisor` over an emulator chip, no HTTP): the test holds the
hypervisor's lock while the requests queue up, so the order in which they are served is the
scheduler's choice alone, never a race between request threads.
"""

from __future__ import annotations

import threading
import time

import pytest

import neurovm
from neurovm.host.service.hypervisor import ServiceHypervisor
from neurovm.host.service.registry import Registry

from .test_runtime import trains, two_layer


@pytest.fixture
def hypervisor(tmp_path):
    registry = Registry(tmp_path / "registry.sqlite")
    hv = ServiceHypervisor(registry, [neurovm.open()], tmp_path, quantum=1000)
    yield hv
    registry.close()


def _tenant(hv, name: str, **quota):
    return hv.registry.authenticate(hv.registry.add_tenant(name, quota))


def _queue_while_held(hv, requests, expect_queued):
    """Start one thread per ``(key, tenant, vm, steps, inputs)`` request, in order, while holding the
    hypervisor's lock; release it once ``expect_queued`` (tenant -> jobs) are all queued.  Returns
    the threads and the dict of results by key."""
    results, threads = {}, []

    def call(key, tenant, vm, steps, inputs):
        results[key] = hv.run(tenant, vm, steps, inputs)

    with hv.lock:
        for req in requests:
            threads.append(threading.Thread(target=call, args=req))
            threads[-1].start()
            tenant = req[1].name
            deadline = time.monotonic() + 30
            while hv.batcher.queued().get(tenant, 0) < sum(1 for t in threads if t._args[1].name == tenant):
                assert time.monotonic() < deadline, hv.batcher.queued()
                time.sleep(0.005)
        assert hv.batcher.queued() == expect_queued
    for t in threads:
        t.join(120)
    return results


def test_a_flooding_tenant_cannot_starve_a_single_request(hypervisor):
    """20 long runs of one tenant are queued before another tenant's single short run: the short run is
    served in the second turn, before most of the flood (FIFO would serve it last)."""
    hv = hypervisor
    flood, single = _tenant(hv, "flood", vms=20, cores=20), _tenant(hv, "single")
    for i in range(20):
        hv.create_vm(flood, f"f{i}", 1)
        hv.load(flood, f"f{i}", _nvmap(hv, two_layer(100 + i, n_out=20)))
    hv.create_vm(single, "s", 1)
    hv.load(single, "s", _nvmap(hv, two_layer(7, n_out=20)))
    requests = [(f"f{i}", flood, f"f{i}", 200, {"in": trains(i, 200, 12)}) for i in range(20)]
    requests.append(("s", single, "s", 10, {"in": trains(99, 10, 12)}))
    results = _queue_while_held(hv, requests, {"flood": 20, "single": 1})

    assert len(results) == 21
    served = hv.batcher.recent(21)
    turn_of_single = next(turn for turn, tenant, _ in served if tenant == "single")
    flood_before = sum(1 for turn, tenant, _ in served if tenant == "flood" and turn < turn_of_single)
    assert turn_of_single == served[0][0] + 1, served       # the very next turn after the flood's first
    assert flood_before <= 4 < 20 - flood_before, served    # one batch of the flood (4 cores), not most of it
    ref = neurovm.open().create_vm("x", cores=1).load(two_layer(7, n_out=20))
    assert results["s"][0] == ref.run(10, {"in": trains(99, 10, 12)})
    ref = neurovm.open().create_vm("x", cores=1).load(two_layer(119, n_out=20))
    assert results["f19"][0] == ref.run(200, {"in": trains(19, 200, 12)})


def test_turns_rotate_over_tenants_one_request_each(hypervisor):
    """Three tenants with three queued runs each (step counts that cannot share a RUN): the turns go
    a, b, c, a, b, c, ... whatever order the requests arrived in within a tenant."""
    hv = hypervisor
    tenants = {name: _tenant(hv, name) for name in "abc"}
    for k, (name, t) in enumerate(tenants.items()):
        for j in range(3):
            hv.create_vm(t, f"v{j}", 1)
            hv.load(t, f"v{j}", _nvmap(hv, two_layer(10 * k + j, n_out=16)))
    requests = [(f"{name}{j}", t, f"v{j}", 10 * (k + 1) + j, {}) for k, (name, t) in enumerate(tenants.items())
                for j in range(3)]
    results = _queue_while_held(hv, requests, {"a": 3, "b": 3, "c": 3})
    served = hv.batcher.recent(9)
    assert [tenant for _, tenant, _ in served] == list("abcabcabc")
    assert [vm for _, _, vm in served] == ["v0"] * 3 + ["v1"] * 3 + ["v2"] * 3   # FIFO within a tenant
    assert len({turn for turn, _, _ in served}) == 9
    assert all(results[k][0].steps == steps for k, _, _, steps, _ in requests)


def _nvmap(hv, net) -> bytes:
    """``.nvmap`` bytes of ``net`` mapped for the hypervisor's chip."""
    from neurovm.mapper import map_network

    path = hv.tmp / f"net-{id(net)}.nvmap"
    map_network(net, hv.config).save(path)
    data = path.read_bytes()
    path.unlink()
    return data
