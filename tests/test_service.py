"""``neurovm serve``: a real server process on 127.0.0.1 and tenants talking to it over HTTP.

Authentication, isolation over the wire (another tenant's VM is "not found"), remote results equal
to in-process ones, quotas, kept outputs, batching, time slicing, oversubscription (swapped VMs
bit-identical to unswapped runs), migration between two chips, metrics and hostile payloads.
``kill -9`` recovery: tests/test_service_recovery.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import neurovm
from neurovm.host.service import AuthError, BadRequest, Conflict, NotFound, QuotaError, TooLarge
from neurovm.host.service.process import ServeProcess as Server

from .test_runtime import trains, two_layer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve") / "data", chips=2, body_timeout=2, quantum=500).start()
    yield s
    s.stop()


def alone(net, steps_list, inputs_list, cores: int = 2):
    """The spike trains of consecutive runs of ``net`` in one in-process VM, alone on a chip."""
    vm = neurovm.open().create_vm("x", cores=cores).load(net)
    return [vm.run(s, {"in": i}) for s, i in zip(steps_list, inputs_list)], vm


# ---- authentication and isolation -------------------------------------------------------------------------
def test_every_request_needs_a_valid_token(server):
    for headers in ({}, {"Authorization": "Bearer nvm.2.wrong"}, {"Authorization": "Bearer nonsense"},
                    {"Authorization": "Basic abc"}):
        r = httpx.get(f"{server.url}/v1/vms", headers=headers)
        assert r.status_code == 401 and "token" in r.json()["error"]
    token = server.add_tenant("carol")
    with pytest.raises(AuthError):
        neurovm.connect(server.url, token[:-2] + "xx").info()
    assert server.connect(token).info()["tenant"] == "carol"
    # a tenant cannot act as administrator, the administrator holds no VMs
    r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    r = httpx.get(f"{server.url}/v1/vms", headers={"Authorization": f"Bearer {server.admin}"})
    assert r.status_code == 403


def test_another_tenants_vm_is_simply_not_found(server):
    alice, bob = server.connect(server.add_tenant("alice1")), server.connect(server.add_tenant("bob1"))
    vm = alice.create_vm("net", cores=1).load(two_layer(1))
    bob_net = bob.create_vm("mine", cores=1)
    assert [v.name for v in bob.vms] == ["mine"]
    texts = {}
    for name in ("net", "ghost"):
        for op in ("state", "telemetry", "destroy", "reset_state"):
            with pytest.raises(NotFound) as e:
                getattr(type(bob_net)(bob, name, 1), op)()
            texts.setdefault(op, set()).add(str(e.value).replace(name, "NAME"))
        with pytest.raises(NotFound):
            type(bob_net)(bob, name, 1).run(5)
    assert all(len(t) == 1 for t in texts.values()), texts      # the same text: nothing leaks
    # alice's VM is untouched and bob may use the same name for his own VM
    bob.create_vm("net", cores=1)
    assert vm.run(10, {"in": trains(3, 10, 12)}) == alone(two_layer(1), [10], [trains(3, 10, 12)], 1)[0][0]
    vm.destroy()


# ---- the client API over the wire ---------------------------------------------------------------------------
def test_remote_vm_equals_in_process_vm(server):
    conn = server.connect(server.add_tenant("dave"))
    ins = [trains(3, 40, 12), trains(4, 30, 12)]
    ref, ref_vm = alone(two_layer(1), [40, 30], ins)
    vm = conn.create_vm("a", cores=2).load(two_layer(1))
    got = [vm.run(40, {"in": ins[0]}), vm.run(30, {"in": ins[1]})]
    assert got == ref and len(ref[0]) > 50
    st, ref_st = vm.state(), ref_vm.state()
    assert all(np.array_equal(st[k], ref_st[k]) for k in ref_st)
    tel, ref_tel = vm.telemetry(), ref_vm.telemetry()
    assert {k: tel[k] for k in ref_tel} == ref_tel
    # arrays travel as binary .npy members, not as JSON lists
    r = conn.request("POST", "/v1/vms/a/run", params={"steps": 3}, content=b"")
    assert r.headers["content-type"] == "application/octet-stream" and r.content[:2] == b"PK"
    vm.reset_state()
    assert not any(a.any() for a in vm.state().values())
    vm.destroy()
    assert conn.vms == []


def test_predict_over_the_wire_equals_in_process(server, tmp_path):
    from neurovm.host.model import SnnModel

    rng = np.random.default_rng(0)
    model = SnnModel(weights=[rng.integers(-60, 100, (5, 8))], bias_mant=[np.zeros(5, int)],
                     bias_exp=[np.zeros(5, int)], vth_mant=[20], input_scale=1.0, steps=16)
    x = rng.random((4, 8))
    conn = server.connect(server.add_tenant("erin"))
    pred, scores = conn.predict(model, x, return_scores=True)
    ref_pred, ref_scores = model.predict(x, batch=1, return_scores=True)
    assert np.array_equal(pred, ref_pred) and np.array_equal(scores, ref_scores)
    assert conn.vms == []        # the request's VM is gone


# ---- quotas and kept outputs -----------------------------------------------------------------------------------
def test_quotas_are_refused_naming_the_quota(server):
    conn = server.connect(server.add_tenant("frank", vms=2, cores=3, steps=50, upload_bytes=8192, outputs=2))
    a = conn.create_vm("a", cores=2).load(two_layer(1, n_in=4, n_out=6))
    with pytest.raises(QuotaError, match=r"quota cores=3 of tenant 'frank'"):
        conn.create_vm("b", cores=2)
    conn.create_vm("b", cores=1)
    with pytest.raises(QuotaError, match=r"quota vms=2 of tenant 'frank'"):
        conn.create_vm("c", cores=1)
    with pytest.raises(QuotaError, match=r"quota steps=50 of tenant 'frank'"):
        a.run(51)
    with pytest.raises(TooLarge, match="upload_bytes"):
        a.run(50, {"in": np.zeros((50, 400), dtype=bool)})
    # kept outputs: bounded per VM, collected in order, equal to the direct result
    first = a.run(20, {"in": trains(1, 20, 4, 0.5)}, keep=True)
    assert first == 1 and a.run(20, keep=True) == 2
    with pytest.raises(Conflict, match=r"2 uncollected outputs.*quota outputs=2"):
        a.run(20, keep=True)
    ref, _ = alone(two_layer(1, n_in=4, n_out=6), [20, 20], [trains(1, 20, 4, 0.5), np.zeros((0, 4), bool)])
    assert a.output() == ref[0] and a.output() == ref[1]
    with pytest.raises(NotFound, match="no uncollected output"):
        a.output()
    # the tenant's other requests still work after every refusal
    assert conn.info()["quota"]["vms"] == 2


def test_request_rate_quota(server):
    conn = server.connect(server.add_tenant("gina", rate=0.5, burst=3))
    for _ in range(3):
        conn.info()
    with pytest.raises(QuotaError, match=r"quota rate=0.5/s \(burst 3\) of tenant 'gina'"):
        conn.info()


def test_hostile_payloads_are_refused_and_others_keep_being_served(server):
    token = server.add_tenant("hank")
    conn = server.connect(token)
    vm = conn.create_vm("a", cores=1).load(two_layer(2))
    for body in (b"garbage", b"PK\x03\x04" + b"\0" * 40):
        with pytest.raises(BadRequest, match="run inputs"):
            conn.request("POST", "/v1/vms/a/run", params={"steps": 5}, content=body)
    with pytest.raises(BadRequest, match="mapped-network|uploaded network"):
        conn.request("PUT", "/v1/vms/a/network", content=b"PK not a network")
    with pytest.raises(BadRequest, match="input 'nope'"):
        vm.run(5, {"nope": np.zeros((5, 3), bool)})
    # a stalled upload does not block anybody else, and is refused when its time is up (2 s here)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"PUT /v1/vms/a/network HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
                  + b"\r\nContent-Length: 100000\r\n\r\nPK")
        assert vm.run(5, {"in": trains(1, 5, 12)}).steps == 5
        s.settimeout(20)
        reply = b""
        while b"did not arrive" not in reply and (chunk := s.recv(4096)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in reply
    assert vm.telemetry()["steps"] == 5


# ---- scheduling: oversubscription and migration ----------------------------------------------------------------
def test_oversubscribed_vms_are_swapped_and_bit_identical(server):
    """Three tenants x one 2-core VM each on a 4-core chip... x2 chips: six 2-core VMs, room for four."""
    conns = [server.connect(server.add_tenant(f"sw{i}", cores=4)) for i in range(3)]
    nets = [two_layer(10 + i) for i in range(6)]
    vms = [conns[i % 3].create_vm(f"v{i}", cores=2).load(nets[i]) for i in range(6)]
    before = server.admin_get("/admin/status").json()["swaps"]
    ins = [[trains(100 * i + r, 15, 12) for r in range(3)] for i in range(6)]
    got = [[] for _ in vms]
    for r in range(3):
        for i, vm in enumerate(vms):
            got[i].append(vm.run(15, {"in": ins[i][r]}))
    assert server.admin_get("/admin/status").json()["swaps"] - before >= 6
    for i in range(6):
        ref, _ = alone(nets[i], [15] * 3, ins[i])
        assert got[i] == ref, i
    for vm in vms:
        vm.destroy()


def test_concurrent_runs_share_one_gated_run_with_results_as_alone(server):
    """While one tenant's long run holds the chip, three others arrive; they are served in one batch."""
    conns = [server.connect(server.add_tenant(f"bt{i}")) for i in range(4)]
    nets = [two_layer(20 + i) for i in range(4)]
    vms = [c.create_vm("b", cores=1).load(n) for c, n in zip(conns, nets)]
    ins = [trains(200 + i, 20, 12) for i in range(4)]
    got = {}
    long_run = threading.Thread(target=lambda: got.update(long=vms[0].run(2000)))
    long_run.start()
    deadline = time.monotonic() + 30
    while not server.admin_get("/admin/scheduler").json()["serving"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    threads = [threading.Thread(target=lambda i=i: got.update({i: vms[i].run(20, {"in": ins[i]})}))
               for i in range(1, 4)]
    for t in threads:
        t.start()
    for t in threads + [long_run]:
        t.join()
    sched = server.admin_get("/admin/scheduler").json()
    assert sched["largest_batch"] >= 2 and sched["queued"] == {}
    assert {(t, vm) for _, t, vm in sched["recent"]} >= {(f"bt{i}", "b") for i in range(4)}   # who was served
    for i in range(1, 4):
        assert got[i] == alone(nets[i], [20], [ins[i]], 1)[0][0], i
    assert got["long"] == alone(nets[0], [2000], [np.zeros((0, 12), bool)], 1)[0][0]
    for vm in vms:
        vm.destroy()


def test_long_runs_are_sliced_and_others_are_served_in_between(server):
    """A 6000-step run goes in 500-step slices (the server's quantum): another tenant's request is answered
    before it ends, and the sliced run, with raster and spike-time inputs, equals one run in-process.
    (Twelve slices: the other request, sent once the run is being served, has them all to arrive in.)"""
    a, b = server.connect(server.add_tenant("rr0")), server.connect(server.add_tenant("rr1"))
    net = two_layer(31)
    long_vm, short_vm = a.create_vm("long", cores=2).load(net), b.create_vm("short", cores=1).load(two_layer(32))
    raster, times = trains(5, 5900, 12, 0.05), [3, 499, 500, 501, 1499, 2999]
    got, order = {}, []
    t = threading.Thread(target=lambda: (got.update(long=long_vm.run(6000, {"in": raster})), order.append("long")))
    t.start()
    deadline = time.monotonic() + 30
    while not server.admin_get("/admin/scheduler").json()["serving"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    short_vm.run(20)
    order.append("short")
    t.join()
    assert order == ["short", "long"]
    ref = neurovm.open().create_vm("x", cores=2).load(net)
    assert got["long"] == ref.run(6000, {"in": raster}) and len(got["long"]) > 100
    assert long_vm.telemetry() == {**ref.telemetry(), "foreign_transit": 0.0}
    # spike times of one input neuron (by id) are cut into the slices too; bad ones are refused first
    assert long_vm.run(1500, {0: times[:5]}) == ref.run(1500, {0: times[:5]})
    with pytest.raises(BadRequest, match="spike times must lie in 0..1499"):
        long_vm.run(1500, {0: times})
    assert long_vm.telemetry()["steps"] == 6000 + 1500


def test_migration_between_chips_keeps_results(server):
    conn = server.connect(server.add_tenant("ivan"))
    vm = conn.create_vm("m", cores=2).load(two_layer(7))
    ins = [trains(1, 25, 12), trains(2, 25, 12)]
    first = vm.run(25, {"in": ins[0]})
    where = {v["name"]: v["chip"] for v in server.admin_get("/admin/status").json()["vms"] if v["tenant"] == "ivan"}
    target = 1 - where["m"]
    r = httpx.post(f"{server.url}/admin/migrate", json={"tenant": "ivan", "name": "m", "chip": target},
                   headers={"Authorization": f"Bearer {server.admin}"})
    assert r.status_code == 200, r.text
    assert {v["name"]: v["chip"] for v in server.admin_get("/admin/status").json()["vms"]
            if v["tenant"] == "ivan"}["m"] == target
    assert [first, vm.run(25, {"in": ins[1]})] == alone(two_layer(7), [25, 25], ins)[0]


# ---- observability -----------------------------------------------------------------------------------------------
def test_metrics_per_tenant(server):
    conn = server.connect(server.add_tenant("judy"))
    vm = conn.create_vm("a", cores=1).load(two_layer(3))
    vm.run(33, {"in": trains(1, 33, 12)})
    syn = vm.telemetry()["syn_ops"]
    text = server.admin_get("/metrics").text
    assert 'neurovm_steps_total{tenant="judy"} 33.0' in text
    assert f'neurovm_syn_ops_total{{tenant="judy"}} {float(syn)}' in text and syn > 0
    assert 'neurovm_requests_total{route="/v1/vms/{name}/run",status="200",tenant="judy"} 1.0' in text
    assert 'neurovm_energy_pj_total{tenant="judy"}' in text
    log = server.log_path.read_text()
    assert "tenant=judy POST /v1/vms/a/run status=200" in log


# ---- the command line -----------------------------------------------------------------------------------------
def test_cli_add_tenant_and_run_against_the_server(server, tmp_path):
    from neurovm.mapper import map_network

    out = subprocess.run([sys.executable, "-m", "neurovm.cli", "serve", "add-tenant", "lena", "--data",
                          str(server.data), "--quota", "vms=1"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("nvm.") and "shown only once" in out.stderr
    assert token.encode() not in (server.data / "registry.sqlite").read_bytes()
    net = tmp_path / "net.nvmap"
    map_network(two_layer(5), neurovm.DEFAULT_CONFIG).save(net)
    (tmp_path / "tok").write_text(token)
    cmd = [sys.executable, "-m", "neurovm.cli", "run", str(net), "--steps", "30", "--rate", "0.3", "--server",
           server.url]
    env = {k: v for k, v in os.environ.items() if k != "NEUROVM_TOKEN"}
    res = subprocess.run(cmd + ["--token-file", str(tmp_path / "tok")], cwd=ROOT, capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stderr
    assert f"30 steps on {server.url}" in res.stdout and "steps=30" in res.stdout
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**env, "NEUROVM_TOKEN": "nvm.1.bad"})
    assert res.returncode == 2 and "token is not valid" in res.stderr
