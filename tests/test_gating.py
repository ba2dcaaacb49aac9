"""Per-VM run gating (issue #14, spec §6.1, §9.1): a RUN steps only the domains it names.

On both backends (the Verilator case is in the cosim tier): a VM's spikes — the SPIKE words
themselves, which carry its own domain's timestep — its state and its counters are the same
whether or not another VM ran in between, for a few steps or thousands; a frozen VM keeps the
input waiting in its ACC and its counters; a VM is billed only for its own steps; an idle VM's
telemetry does not see a neighbour's packets crossing its router; guests cannot read the
hypervisor's counters.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurovm.config import HV_VM, ChipConfig
from neurovm.formats import COMMAND_FORMATS, GUEST_COUNTERS, Counter, ErrorCode, Opcode, domain_bit
from neurovm.host import Chip, ChipError, EmulatorBackend
from neurovm.host import protocol as P
from neurovm.mapper import Network
from tests.chipstate import cores_words
from tests.test_runtime import trains, two_layer

CFG = ChipConfig(mesh_width=2, mesh_height=2, neurons_per_core=64, synapses_per_core=1024, axons_per_core=64,
                 fanout_per_core=128, max_vms=3, vcores_per_vm=4)


def tenants(new_backend, cores=(1, 1)) -> tuple[Chip, object, object]:
    chip = Chip(new_backend())
    alice = chip.create_vm("alice", cores=cores[0]).load(two_layer(1))
    bob = chip.create_vm("bob", cores=cores[1]).load(two_layer(2, n_in=8, n_out=40))
    return chip, alice, bob


def core_snapshot(chip: Chip, vm, arch_only: bool = False) -> dict:
    """Every word of every region and every counter of the VM's physical cores (hypervisor view);
    ``arch_only`` leaves out BUSY_CYCLES, implementation-defined (§9.1), to compare two chips."""
    return cores_words(chip, vm.pcores, arch_only)


def raw_spikes(chip: Chip, vm, steps: int, raster) -> np.ndarray:
    """The VM's SPIKE records (vm, vcore, neuron, timestep = its own domain's T) of one gated run."""
    plan = vm._injections(steps, {"in": raster})
    return chip.run(steps, inject=plan or None, domains=domain_bit(vm.id)).for_vm(vm.id)


def test_a_vm_is_the_same_whether_or_not_another_ran_in_between(new_backend):
    """Bob's SPIKE words (with his own timesteps), state and counters are identical when Alice
    ran 0 or 40 steps between his two runs."""
    results = []
    for alice_steps in (0, 40):
        chip, alice, bob = tenants(new_backend)
        first = raw_spikes(chip, bob, 25, trains(5, 25, 8, 0.4))
        if alice_steps:
            got = alice.run(alice_steps, {"in": trains(6, alice_steps, 12)})
            assert len(got) > 0                          # Alice really computed something
        second = raw_spikes(chip, bob, 25, trains(7, 25, 8, 0.4))
        results.append((first.tolist(), second.tolist(), core_snapshot(chip, bob, arch_only=True), bob.telemetry()))
    assert len(results[0][1]) > 0
    assert results[0] == results[1]


def test_a_vm_frozen_for_thousands_of_steps_keeps_its_state_and_pending_input(new_backend):
    chip, alice, bob = tenants(new_backend)
    bob.run(10, {"in": trains(8, 10, 8, 0.5)})
    before = core_snapshot(chip, bob)
    for vm, vc, axon in bob._injections(1, {"in": np.ones((1, 8), dtype=bool)})[0]:
        chip.inject(vm, vc, [axon])                      # input waiting in bob's ACC for his next step
    pending = core_snapshot(chip, bob)
    assert pending != before                             # ACC and SYN_OPS took the injection
    alice.run(3000, {"in": trains(9, 3000, 12)})
    assert core_snapshot(chip, bob) == pending           # 3000 steps later: nothing of bob moved
    assert bob.telemetry()["steps"] == 10
    # and bob's next step integrates exactly that input: the same as if alice had never run
    chip2, _, bob2 = tenants(new_backend)
    bob2.run(10, {"in": trains(8, 10, 8, 0.5)})
    for vm, vc, axon in bob2._injections(1, {"in": np.ones((1, 8), dtype=bool)})[0]:
        chip2.inject(vm, vc, [axon])
    assert raw_spikes(chip, bob, 5, trains(3, 5, 8)).tolist() == raw_spikes(chip2, bob2, 5, trains(3, 5, 8)).tolist()
    # (on the HDL, BUSY_CYCLES depends on when the pending input was absorbed relative to the step)
    assert core_snapshot(chip, bob, arch_only=True) == core_snapshot(chip2, bob2, arch_only=True)


def test_billing_and_steps_count_only_the_vms_own_steps(new_backend):
    chip, alice, bob = tenants(new_backend)
    idle = bob.telemetry()
    alice.run(200, {"in": trains(10, 200, 12)})
    after = bob.telemetry()
    assert after == idle and after["energy_pj"] == 0.0 and after["neuron_updates"] == 0
    t = alice.telemetry()
    assert t["steps"] == 200 and t["neuron_updates"] == 200 * alice.mapped.n and t["energy_pj"] > 0


def test_chip_run_steps_exactly_the_vms_it_names(new_backend):
    chip, alice, bob = tenants(new_backend)
    out = chip.run(30, {alice: {"in": trains(11, 30, 12)}, bob: {"in": trains(12, 30, 8)}})
    assert set(out) == {alice, bob}
    assert alice.telemetry()["steps"] == bob.telemetry()["steps"] == 30
    out = chip.run(5, {alice: {}})
    assert set(out) == {alice} and bob.telemetry()["steps"] == 30


def test_an_idle_vms_telemetry_does_not_see_a_neighbours_packets(new_backend):
    """Alice on the diagonal cores 0 and 3 of the 2x2 mesh, Bob on cores 1 and 2: every packet
    between Alice's cores turns at an XY corner, one of Bob's routers."""
    chip = Chip(new_backend())
    alice = chip.create_vm("alice", cores=2)
    wanted = [p for p in (0, 3) if p not in alice.pcores]
    for vc, p in enumerate(list(alice.pcores)):
        if p not in (0, 3):
            chip.relocate(alice, vc, wanted.pop())
    bob = chip.create_vm("bob", cores=2)
    assert sorted(alice.pcores) == [0, 3] and sorted(bob.pcores) == [1, 2]
    net = Network()
    a = net.population("a", CFG.neurons_per_core, bias_mant=300, vth_mant=1)   # fires by itself
    b = net.population("b", CFG.neurons_per_core, vth_mant=100_000)           # one core each
    net.fixed_probability(a, b, 0.2, weight=5, seed=0)                         # 128 neurons: traffic crosses
    alice.load(net)
    idle = bob.telemetry()
    alice.run(50)
    routers = [int(chip.counters(HV_VM, p)[Counter.PACKETS_ROUTED]) for p in range(4)]
    assert routers[1] + routers[2] > 0                   # Alice's packets do cross Bob's routers...
    assert bob.telemetry() == idle                       # ...and Bob's telemetry does not see them
    t = alice.telemetry()
    assert t["packets_routed"] == t["packets_sent"] + t["hops_x"] + t["hops_y"] == sum(routers) > 0
    with pytest.raises(ChipError, match="PERMISSION"):   # nor can Bob read his router's counter himself
        chip._checked("bob reads PACKETS_ROUTED", P.encode_read_counters(bob.id, 0, 0, GUEST_COUNTERS + 1))
    assert chip.counters(bob.id, 0).size == GUEST_COUNTERS
    transit = {row["name"]: row["foreign_transit"] for row in chip.status()}
    assert 0 < transit["alice"] < 1 and transit["bob"] == 0.0   # Alice's routes between her two cores turn at
    #                                                             Bob's routers; those inside one core do not


def test_vms_get_rectangles_so_their_routes_stay_inside():
    """On a 4x4 mesh, VMs of 4, 2, 6 and 2 cores each get a free rectangle; a network spread over
    its cores then never routes through another VM's router (foreign transit 0)."""
    cfg = ChipConfig(mesh_width=4, mesh_height=4, neurons_per_core=16, synapses_per_core=512, axons_per_core=64,
                     fanout_per_core=64, max_vms=4, vcores_per_vm=8)
    chip = Chip(EmulatorBackend(cfg))
    vms = [chip.create_vm(f"t{i}", cores=k) for i, k in enumerate((4, 2, 6, 2))]
    for vm in vms:
        xs = {cfg.core_xy(p)[0] for p in vm.pcores}
        ys = {cfg.core_xy(p)[1] for p in vm.pcores}
        assert len(xs) * len(ys) == len(vm.pcores) and max(xs) - min(xs) + 1 == len(xs) \
            and max(ys) - min(ys) + 1 == len(ys), (vm.name, vm.pcores)           # a full rectangle
    net = Network()
    a = net.population("a", 16 * 3, bias_mant=300, vth_mant=1)
    b = net.population("b", 16 * 3, vth_mant=100_000)
    net.fixed_probability(a, b, 0.3, weight=5, seed=1)
    vms[2].load(net)                                     # 6 cores, a 3x2 rectangle
    assert vms[2].foreign_transit() == 0.0
    vms[2].run(20)
    mine = set(vms[2].pcores)
    routers = [int(chip.counters(HV_VM, p)[Counter.PACKETS_ROUTED]) for p in range(cfg.num_cores)]
    assert sum(routers) > 0 and all(routers[p] == 0 for p in range(cfg.num_cores) if p not in mine)


def test_run_with_no_domain_is_refused_and_changes_nothing(new_backend):
    chip, alice, bob = tenants(new_backend)
    before = core_snapshot(chip, alice), core_snapshot(chip, bob)
    run_nothing = COMMAND_FORMATS[Opcode.RUN].pack(op=Opcode.RUN, vm=HV_VM, domains=0, steps=5)
    out = chip.exchange([run_nothing])
    assert [type(m).__name__ for m in out] == ["ErrorMsg"] and out[0].code == ErrorCode.BAD_LENGTH
    assert (core_snapshot(chip, alice), core_snapshot(chip, bob)) == before
