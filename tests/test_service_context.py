"""In-process parts of the service: VM contexts (save/restore onto other cores), the registry's tokens
and quotas, and the wire format's limits.  No server process (see tests/test_service.py for that)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

import neurovm
from neurovm.formats import Region
from neurovm.host import VMError
from neurovm.host.service.errors import BadRequest, TooLarge
from neurovm.host.service.hypervisor import decode_context, encode_context
from neurovm.host.service.registry import Registry, RegistryError
from neurovm.host.service.wire import pack, unpack

from .test_runtime import trains, two_layer


def test_context_restored_on_other_cores_continues_bit_for_bit():
    """A VM stopped with input pending in ACC, saved, destroyed and restored on other cores
    (another chip even) runs on exactly as one that never left."""
    net, ins = two_layer(5, n_out=300), [trains(1, 30, 12), trains(2, 30, 12)]
    ref = neurovm.open().create_vm("ref", cores=2).load(net)
    ref_out = [ref.run(30, {"in": ins[0]}), ref.run(30, {"in": ins[1]})]

    chip = neurovm.open()
    vm = chip.create_vm("a", cores=2).load(net)
    first = vm.run(30, {"in": ins[0]})
    ctx = chip.save_context(vm)
    assert ctx.regions[Region.ACC].any(), "the test needs pending input in ACC"
    assert ctx.words == sum(a.size for a in ctx.regions.values()) and ctx.steps_run == 30
    old_pcores = list(vm.pcores)
    vm.destroy()
    blocker = chip.create_vm("blocker", cores=2)         # takes the freed cores
    other = neurovm.open()                               # ... and the context goes to another chip too
    for target_chip in (chip, other):
        moved = target_chip.create_vm("a", cores=2)
        target_chip.restore_context(moved, decode_context(encode_context(ctx), "a", ctx.mapped))
        if target_chip is chip:
            assert set(moved.pcores).isdisjoint(old_pcores)
        assert [first, moved.run(30, {"in": ins[1]})] == ref_out
        assert moved.telemetry()["syn_ops"] == ref.telemetry()["syn_ops"]
        assert moved.telemetry()["steps"] == 60
    blocker.destroy()


def test_restore_refuses_a_context_that_does_not_fit_and_changes_nothing():
    chip = neurovm.open()
    vm = chip.create_vm("a", cores=2).load(two_layer(1))
    ctx = chip.save_context(vm)
    small = chip.create_vm("b", cores=1).load(two_layer(2))
    before = chip.save_context(small)
    with pytest.raises(VMError, match="the context holds 2 cores, the VM has 1"):
        chip.restore_context(small, ctx)
    ctx.regions[Region.SYN] = ctx.regions[Region.SYN][:, :5]
    with pytest.raises(VMError, match="context region SYN has shape"):
        chip.restore_context(vm, ctx)
    after = chip.save_context(small)
    assert all(np.array_equal(before.regions[r], after.regions[r]) for r in Region)
    with pytest.raises(VMError, match="not a live VM"):
        neurovm.open().save_context(vm)


def test_registry_stores_only_salted_hashes_and_checks_tokens(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    token = reg.add_tenant("alice", {"vms": 2})
    other = reg.add_tenant("bob")
    assert reg.authenticate(token).name == "alice" and reg.authenticate(token).quota.vms == 2
    assert reg.authenticate(other).name == "bob"
    tid, secret = token.split(".")[1:]
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), f"nvm.{tid}.{other.split('.')[2]}",
                f"nvm.999.{secret}", "nvm.x.y", "", "nvm..", None):
        assert reg.authenticate(bad) is None, bad
    rows = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT salt, token_hash FROM tenants").fetchall()
    assert len({r[0] for r in rows}) == 2 and all(secret.encode() not in r[1] for r in rows)
    assert secret.encode() not in (tmp_path / "r.sqlite").read_bytes()
    with pytest.raises(RegistryError, match="tenant 'alice' already exists"):
        reg.add_tenant("alice")
    with pytest.raises(RegistryError, match="reserved for the administrator"):
        reg.add_tenant("admin")
    with pytest.raises(RegistryError, match="unknown quota 'gpus'"):
        reg.add_tenant("carol", {"gpus": 1})
    with pytest.raises(RegistryError, match=r"quota vms=0: must be a positive integer"):
        reg.set_quota("alice", {"vms": 0})
    assert [t.name for t in reg.tenants()] == ["alice", "bob"]      # the refusals added nothing


def test_wire_refuses_bombs_and_garbage():
    body = pack({"a": np.zeros((100, 100), dtype=np.int64)})
    assert np.array_equal(unpack(body, 1 << 20)["a"], np.zeros((100, 100)))
    with pytest.raises(TooLarge, match="unpacks to .* over the upload_bytes quota of 1000"):
        unpack(body, 1000)
    with pytest.raises(BadRequest, match="not an .npz archive"):
        unpack(b"hello", 1 << 20)
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("evil.npy", b"\x93NUMPY\x01\x00" + b"v" * 20)
    with pytest.raises(BadRequest, match="member 'evil'"):
        unpack(buf.getvalue(), 1 << 20)
    obj = io.BytesIO()
    np.savez(obj, o=np.array([{"x": 1}], dtype=object))
    with pytest.raises(BadRequest, match="member 'o'"):
        unpack(obj.getvalue(), 1 << 20)
