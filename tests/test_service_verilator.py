"""``neurovm serve --backend verilator``: the service over the Verilator model of the chip (cosim tier).

Two tenants load and run on a server whose chip is the Verilator model -- concurrently (one gated
RUN), a run sliced by the quantum, and a third VM that oversubscribes the chip so that contexts are
saved and restored through the model -- and every result (spikes, state, counters) is identical to
the same requests on an emulator server.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import neurovm

from .test_runtime import trains, two_layer
from .test_service import Server

pytestmark = pytest.mark.cosim


def _session(server: Server) -> dict:
    """The same requests of two tenants against ``server``; everything they got back."""
    alice = server.connect(server.add_tenant("alice"))
    bob = server.connect(server.add_tenant("bob"))
    a = alice.create_vm("net", cores=2).load(two_layer(1))
    b = bob.create_vm("net", cores=2).load(two_layer(2, n_in=8, n_out=40))
    got = {}
    threads = [threading.Thread(target=lambda: got.update(a1=a.run(30, {"in": trains(3, 30, 12)}))),
               threading.Thread(target=lambda: got.update(b1=b.run(30, {"in": trains(4, 30, 8, 0.4)})))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got["a2"] = a.run(150, {"in": trains(5, 150, 12)})           # sliced: quantum 60 steps
    c = bob.create_vm("extra", cores=1).load(two_layer(6))        # 5 cores held on a 4-core chip: swapped
    got["c1"] = c.run(20, {"in": trains(7, 20, 12)})
    got["b2"] = b.run(25, {"in": trains(8, 25, 8, 0.4)})
    for key, vm in (("a", a), ("b", b), ("c", c)):
        got[f"{key}.state"] = vm.state()
        got[f"{key}.telemetry"] = {k: v for k, v in vm.telemetry().items() if k != "foreign_transit"}
    got["swaps"] = server.admin_get("/admin/status").json()["swaps"]
    return got


def test_two_tenants_on_a_verilator_server_get_the_emulator_servers_results(tmp_path):
    from neurovm.host.verilator import build_model

    build_model(neurovm.DEFAULT_CONFIG)     # built (or found) before the server's start-up deadline
    results = {}
    for backend in ("emulator", "verilator"):
        server = Server(tmp_path / backend / "data", quantum=60, backend=backend)
        (tmp_path / backend).mkdir()
        try:
            results[backend] = _session(server.start())
            assert "x verilator" in server.log_path.read_text() or backend == "emulator"
        finally:
            server.stop()
    emu, ver = results["emulator"], results["verilator"]
    assert ver["swaps"] >= 1 and emu["swaps"] >= 1
    assert [emu[k] for k in ("a1", "a2", "b1", "b2", "c1")] == _alone()
    for key in ("a1", "b1", "a2", "c1", "b2"):
        assert ver[key] == emu[key], key
        assert len(emu[key]) > 0, key
    for key in ("a", "b", "c"):
        assert set(ver[f"{key}.state"]) == set(emu[f"{key}.state"])
        assert all(np.array_equal(ver[f"{key}.state"][k], emu[f"{key}.state"][k]) for k in emu[f"{key}.state"])
        assert ver[f"{key}.telemetry"] == emu[f"{key}.telemetry"], key


def _alone() -> list:
    """The runs of ``_session`` in-process, each VM alone on an emulator chip of its own."""
    a = neurovm.open().create_vm("a", cores=2).load(two_layer(1))
    b = neurovm.open().create_vm("b", cores=2).load(two_layer(2, n_in=8, n_out=40))
    c = neurovm.open().create_vm("c", cores=1).load(two_layer(6))
    return [a.run(30, {"in": trains(3, 30, 12)}), a.run(150, {"in": trains(5, 150, 12)}),
            b.run(30, {"in": trains(4, 30, 8, 0.4)}), b.run(25, {"in": trains(8, 25, 8, 0.4)}),
            c.run(20, {"in": trains(7, 20, 12)})]
