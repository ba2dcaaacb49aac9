"""``neurovm serve`` survives ``kill -9``: after a restart every VM is where its last completed request
left it, and a request killed in flight (inside a load, inside a run) is not applied at all."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from neurovm.host.service.hypervisor import PAUSE_ENV

from .test_runtime import trains, two_layer
from .test_service import Server, alone


# ---- persistence: kill -9 --------------------------------------------------------------------------------------
@pytest.fixture
def own_server(tmp_path):
    """A server of this test alone, killed at the end whatever happens."""
    s = Server(tmp_path / "data")
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.kill9()


def test_kill9_during_load_and_run_keeps_the_last_completed_request(own_server):
    s = own_server.start()
    token = s.add_tenant("kim")
    net, ins = two_layer(4), [trains(1, 20, 12), trains(2, 20, 12), trains(3, 20, 12)]
    ref, _ = alone(net, [20, 20, 20], ins)
    vm = s.connect(token).create_vm("p", cores=2).load(net)
    assert vm.run(20, {"in": ins[0]}) == ref[0]
    s.kill9()                                   # after a completed request: it is all there
    s.start(env={PAUSE_ENV: "run"})
    vm = s.connect(token).vm("p")
    state_after_1 = vm.state()
    failed = []
    t = threading.Thread(target=lambda: failed.append(_raises(lambda: vm.run(20, {"in": ins[1]}))))
    t.start()
    _wait_for(s.data / "paused-run")
    s.kill9()                                   # during a run: not applied
    t.join()
    assert failed == [True]
    (s.data / "paused-run").unlink()
    s.start(env={PAUSE_ENV: "load"})
    vm = s.connect(token).vm("p")
    assert all(np.array_equal(vm.state()[k], state_after_1[k]) for k in state_after_1)
    t = threading.Thread(target=lambda: failed.append(_raises(lambda: vm.load(two_layer(9)))))
    t.start()
    _wait_for(s.data / "paused-load")
    s.kill9()                                   # during a load: the old network and state are still there
    t.join()
    s.start()
    vm = s.connect(token).vm("p")
    assert vm.run(20, {"in": ins[1]}) == ref[1] and vm.run(20, {"in": ins[2]}) == ref[2]
    assert vm.telemetry()["steps"] == 60


def _raises(fn) -> bool:
    try:
        fn()
    except Exception:   # noqa: BLE001 - the connection drops when the server is killed
        return True
    return False


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
