"""The five attacks of issue #14, as a hostile tenant would try them, on both backends.

Each test asserts that the attacker learns nothing and changes nothing: the victim's cores
(every region and counter, read through the hypervisor), its results and its telemetry are
what they would be had the attacker never existed. Attack 5 (telemetry of a neighbour's
packets) is in tests/test_gating.py, with the rest of run gating.
"""

from __future__ import annotations

import contextlib
import inspect

import pytest

from neurovm.config import HV_VM
from neurovm.formats import REGIONS, FaultCause, Region
from neurovm.host import Chip, ChipClient, ChipError
from neurovm.host import protocol as P
from neurovm.host.backend import Backend
from tests.chipstate import cores_words
from tests.test_gating import CFG   # the same 2x2 chip as the gating tests
from tests.test_runtime import trains, two_layer

PRIVILEGED = {"map", "unmap", "reset", "write", "read", "inject", "exchange", "relocate", "counters", "run_raw",
              "load_core", "read_state", "backend", "chip", "lock"}


def victim_and_attacker(new_backend):
    chip = Chip(new_backend())
    bob = chip.create_vm("bob", cores=1).load(two_layer(2, n_in=8, n_out=40))
    alice = chip.create_vm("alice", cores=2).load(two_layer(1))
    return chip, alice, bob


def cores_of(chip: Chip, vm) -> dict:
    """Every word of every region and the architectural counters of ``vm``'s physical cores."""
    return cores_words(chip, vm.pcores, arch_only=True)


def test_attack_1_a_command_under_alices_id_never_reaches_bob(new_backend):
    """The VM id is not the attacker's to choose: her handle has no way to name another VM, and
    whatever vcore number she uses under her own id, the chip gives her her own core or a fault."""
    chip, alice, bob = victim_and_attacker(new_backend)
    for name, method in inspect.getmembers(alice, callable):
        if not name.startswith("_"):
            params = set(inspect.signature(method).parameters)
            assert not params & {"vm", "vm_id", "words", "pcore"}, (name, params)
    secret = cores_of(chip, bob)
    for vcore in range(CFG.vcores_per_vm):
        for region in Region:
            size = REGIONS[region].size(CFG)
            try:
                got = chip.read(alice.id, vcore, region, 0, size).tolist()     # a READ tagged with her id
            except ChipError as e:
                assert e.messages[0].cause == FaultCause.UNMAPPED and vcore >= len(alice.pcores)
                continue
            own = alice.pcores[vcore]
            assert got == chip.read(HV_VM, own, region, 0, size).tolist()     # her own core, never Bob's
        with pytest.raises(ChipError) if vcore >= len(alice.pcores) else contextlib.nullcontext():
            chip.write(alice.id, vcore, Region.STATE_V, 0, [12345])
    assert cores_of(chip, bob) == secret


def test_attack_2_a_tenant_handle_does_not_reach_the_hypervisor(new_backend):
    chip, alice, bob = victim_and_attacker(new_backend)
    public = {n for n in dir(alice) if not n.startswith("_")}
    assert not public & PRIVILEGED, public & PRIVILEGED
    for n in public:
        assert not isinstance(getattr(alice, n), (ChipClient, Backend)), n
    secret = cores_of(chip, bob)
    # everything the handle offers, used as an attacker would: nothing of Bob's moves
    alice.run(20, {"in": trains(1, 20, 12)})
    alice.reset_state()
    alice.load(two_layer(9))
    alice.state(), alice.telemetry(), alice.foreign_transit()
    alice.destroy()
    assert cores_of(chip, bob) == secret
    assert bob.run(10, {"in": trains(2, 10, 8)}) is not None


def test_attack_3_a_half_sent_command_captures_nothing_and_outputs_go_to_their_owner(new_backend):
    chip, alice, bob = victim_and_attacker(new_backend)
    expected_bob = bob.state()
    # Alice opens a WRITE to her own SYN memory and never finishes it: refused, nothing sent
    cut_off = P.encode_write(alice.id, 0, Region.SYN, 0, [1, 2, 3])[:-1]
    with pytest.raises(P.FramingError):
        chip.exchange(cut_off)
    # Bob's next load and reads are his own: none of his words became her data
    bob.load(two_layer(2, n_in=8, n_out=40))
    assert {k: v.tolist() for k, v in bob.state().items()} == {k: v.tolist() for k, v in expected_bob.items()}
    assert not chip.read(HV_VM, alice.pcores[0], Region.SYN, 0, 3).tolist() == [1, 2, 3]
    # output nobody collected: Alice runs, then Bob asks; he gets his neurons and his telemetry
    alice.run(30, {"in": trains(3, 30, 12)})
    state = bob.state()
    assert state["v"].shape == (bob.mapped.n,) and not state["v"].any()
    assert bob.telemetry()["steps"] == 0 and bob.telemetry()["spikes_out"] == 0


def test_attack_4_a_tenants_steps_neither_move_nor_bill_another(new_backend):
    chip, alice, bob = victim_and_attacker(new_backend)
    before, billed = cores_of(chip, bob), bob.telemetry()
    alice.run(1000, {"in": trains(4, 1000, 12)})
    assert cores_of(chip, bob) == before and bob.telemetry() == billed      # no step, no bill, no dropped spike
    got = bob.run(40, {"in": trains(5, 40, 8, 0.4)})
    alone_chip = Chip(new_backend())
    alone = alone_chip.create_vm("bob", cores=1).load(two_layer(2, n_in=8, n_out=40))
    want = alone.run(40, {"in": trains(5, 40, 8, 0.4)})
    assert got == want and len(got) > 0
    assert bob.telemetry() == alone.telemetry()
