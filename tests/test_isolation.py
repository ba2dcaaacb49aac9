"""Virtualization: a VM reaches only its own cores; every other attempt faults and changes nothing."""

import numpy as np
import pytest

from neurovm.config import HV_VM, ChipConfig
from neurovm.formats import FaultCause, Perm, Region
from neurovm.host import ChipClient, ChipError
from neurovm.host import protocol as P
from neurovm.image import CoreImage
from tests.chipstate import core_words
from tests.randnet import random_image

CFG = ChipConfig(mesh_width=2, mesh_height=2, neurons_per_core=16, synapses_per_core=64,
                 axons_per_core=16, fanout_per_core=32, max_vms=3, vcores_per_vm=4)


@pytest.fixture
def chip(new_backend):
    c = ChipClient(new_backend())
    c.map(0, 0, 0)                  # VM 0: vcore 0 -> core 0
    c.map(1, 0, 1)                  # VM 1: vcore 0 -> core 1
    c.map(1, 1, 2, perms=Perm.R)    # VM 1: vcore 1 -> core 2, read-only
    rng = np.random.default_rng(7)
    for p in range(4):
        c.load_core(HV_VM, p, random_image(rng, CFG))
    return c


def faults_of(msgs):
    return [m for m in msgs if isinstance(m, (P.Fault, P.ErrorMsg))]


def test_unmapped_accesses_fault_and_change_nothing(chip):
    before = {p: core_words(chip, p) for p in range(4)}
    for vm in (0, 1, 2):
        for vc in range(CFG.vcores_per_vm):
            if (vm, vc) in ((0, 0), (1, 0), (1, 1)):
                continue
            for words in (P.encode_write(vm, vc, Region.STATE_V, 0, [123]),
                          P.encode_read(vm, vc, Region.SYN, 0, 4),
                          P.encode_inject(vm, vc, 0),
                          P.encode_read_counters(vm, vc)):
                msgs = chip.exchange(words)
                assert len(msgs) == 1 and isinstance(msgs[0], P.Fault), msgs
                assert (msgs[0].vm, msgs[0].cause, msgs[0].word) == (vm, FaultCause.UNMAPPED, words[0])
    assert {p: core_words(chip, p) for p in range(4)} == before


def test_permissions_are_enforced(chip):
    before = core_words(chip, 2)
    with pytest.raises(ChipError, match="PERMISSION fault: VM 1"):
        chip.write(1, 1, Region.STATE_V, 0, [5])
    with pytest.raises(ChipError, match="PERMISSION"):
        chip.inject(1, 1, [0])
    assert len(chip.read(1, 1, Region.SYN, 0, 8)) == 8   # R is granted
    assert core_words(chip, 2) == before


def test_guests_cannot_use_privileged_commands(chip):
    for words in (P.encode_mmu_map(0, 1, 1, vm=0), P.encode_run(1, vm=1), P.encode_reset(None, vm=0),
                  P.encode_reset(1, vm=2)):
        msgs = chip.exchange(words)
        assert [(type(m), m.cause) for m in msgs] == [(P.Fault, FaultCause.PRIVILEGE)]
    # the guest's attempted self-mapping did not happen: VM 0 still cannot reach core 1
    assert faults_of(chip.exchange(P.encode_read(0, 1, Region.SYN, 0, 1)))[0].cause == FaultCause.UNMAPPED


def test_hypervisor_cannot_map_a_core_to_two_owners(chip):
    msgs = chip.exchange(P.encode_mmu_map(0, 1, pcore=1))
    assert [(type(m), m.cause, m.vm) for m in msgs] == [(P.Fault, FaultCause.CORE_OWNED, 0)]
    assert faults_of(chip.exchange(P.encode_read(0, 1, Region.SYN, 0, 1)))[0].cause == FaultCause.UNMAPPED
    # remapping a vcore moves ownership: VM 1 vcore 0 -> core 3 frees core 1
    chip.map(1, 0, 3)
    chip.map(0, 1, 1)
    assert len(chip.read(0, 1, Region.SYN, 0, 1)) == 1


def test_fanout_to_foreign_or_unmapped_vcores_is_not_delivered(new_backend):
    c = ChipClient(new_backend())
    c.map(0, 0, 0)
    c.map(1, 0, 1)
    c.map(1, 3, 2)
    # VM 0 neuron fires every step toward its vcore 3 (unmapped for VM 0; VM 1 has a vcore 3 on core 2);
    # bare core 3 fires toward physical core 1 (owned by VM 1).
    firing = CoreImage(bias_mant=[4000], vth_mant=[1], fo_start=[0], fo_len=[1], fo_axon=[0], fo_vcore=[3])
    c.load_core(0, 0, firing)
    c.load_core(HV_VM, 3, CoreImage(bias_mant=[4000], vth_mant=[1], fo_start=[0], fo_len=[1],
                                    fo_axon=[0], fo_vcore=[1]))
    sink = CoreImage(syn_start=[0], syn_len=[1], target=[0], weight=[100], du=[4095], vth_mant=[2**17 - 1])
    c.load_core(1, 0, sink)
    c.load_core(1, 3, sink)
    res = c.run(5)
    causes = sorted((f.vm, f.cause.name) for f in res.faults)
    assert causes == sorted([(0, "UNMAPPED")] * 5 + [(HV_VM, "CROSS_VM")] * 5)
    for vc in (0, 3):
        st = c.read_state(1, vc, 1)
        assert st["u"][0] == 0 and st["acc"][0] == 0
        assert c.counters(1, vc)[0] == 0  # no synaptic op ever ran on VM 1's cores


def test_fuzzed_isolation(new_backend):
    """Random VMs, random tables, random guest commands: no access outside a VM's own cores."""
    rng = np.random.default_rng(2024)
    for case in range(20):
        c = ChipClient(new_backend())
        owner, table = {}, {}
        for p in rng.permutation(4)[: int(rng.integers(1, 5))]:
            vm, vc = int(rng.integers(0, 3)), int(rng.integers(0, 4))
            if (vm, vc) in table:
                continue
            perms = int(rng.integers(0, 8))
            c.map(vm, vc, int(p), perms)
            table[(vm, vc)] = (int(p), perms)
            owner[int(p)] = vm
        for p in range(4):
            c.load_core(HV_VM, p, random_image(rng, CFG))
        for _ in range(40):
            vm, vc = int(rng.integers(0, 3)), int(rng.integers(0, 4))
            kind = rng.choice(["write", "read", "inject"])
            need = {"write": Perm.W, "read": Perm.R, "inject": Perm.S}[kind]
            words = {"write": P.encode_write(vm, vc, Region.STATE_U, 0, [int(rng.integers(-99, 99)) & 0xFFFFFFFF]),
                     "read": P.encode_read(vm, vc, Region.STATE_U, 0, 1),
                     "inject": P.encode_inject(vm, vc, int(rng.integers(0, CFG.axons_per_core)))}[kind]
            others = [p for p in range(4) if owner.get(p) != vm]
            before = {p: core_words(c, p) for p in others}
            msgs = c.exchange(words)
            allowed = (vm, vc) in table and table[(vm, vc)][1] & need
            f = faults_of(msgs)
            if allowed:
                assert f == [], (case, vm, vc, kind, f)
            else:
                assert len(f) == 1 and f[0].vm == vm and f[0].cause in (FaultCause.UNMAPPED, FaultCause.PERMISSION)
            assert {p: core_words(c, p) for p in others} == before, (case, vm, vc, kind)
