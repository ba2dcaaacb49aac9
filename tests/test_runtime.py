"""The hypervisor runtime: tenant VMs, concurrent runs, relocation, telemetry, refusals.

The backends fixture runs each test on the golden emulator and on the Verilator
model of the HDL, so the runtime is shown to drive the real chip the same way.
"""

import numpy as np
import pytest

import neurovm
from neurovm.config import HV_VM
from neurovm.formats import REGIONS, Region
from neurovm.host import VMError
from neurovm.mapper import Network, map_network


def two_layer(seed: int, n_in: int = 12, n_out: int = 30, name: str = "net") -> Network:
    """An input population and a recurrent LIF population with random signed weights."""
    rng = np.random.default_rng(seed)
    net = Network()
    a = net.population("in", n_in, report=False)
    b = net.population("out", n_out, du=int(rng.integers(0, 4096)), dv=int(rng.integers(0, 600)),
                       vth_mant=int(rng.integers(5, 40)), bias_mant=int(rng.integers(-20, 60)), refract=1)
    pairs = [(i, j, int(rng.integers(-60, 127))) for i in range(n_in) for j in range(n_out) if rng.random() < 0.5]
    net.connect(a, b, pairs)
    rec = [(i, j, int(rng.integers(-80, 80))) for i in range(n_out) for j in range(n_out)
           if i != j and rng.random() < 0.1]
    net.connect(b, b, rec)
    return net


def trains(seed: int, steps: int, n: int, p: float = 0.25) -> np.ndarray:
    return np.random.default_rng(seed).random((steps, n)) < p


def test_two_tenants_concurrently_equal_each_alone(backend):
    """Different networks in two VMs run in one RUN; each VM's spikes equal a run of that VM alone."""
    nets = {"alice": two_layer(1), "bob": two_layer(2, n_in=8, n_out=40)}
    ins = {"alice": trains(3, 40, 12), "bob": trains(4, 40, 8, 0.4)}
    alone = {}
    for name in nets:
        chip = neurovm.open(backend)
        vm = chip.create_vm(name, cores=2).load(nets[name])
        alone[name] = vm.run(40, {"in": ins[name]})
    chip = neurovm.open(backend)
    vms = {name: chip.create_vm(name, cores=2).load(nets[name]) for name in nets}
    assert set(vms["alice"].pcores).isdisjoint(vms["bob"].pcores)
    out = chip.run(40, {vms[n]: {"in": ins[n]} for n in nets})
    for name in nets:
        assert len(alone[name]) > 50
        assert out[vms[name]] == alone[name], name
    # telemetry is per VM: each counts only its own work
    ta, tb = vms["alice"].telemetry(), vms["bob"].telemetry()
    assert ta["spikes_out"] == len(alone["alice"]) and tb["spikes_out"] == len(alone["bob"])
    assert ta["neuron_updates"] == 40 * 42 and tb["neuron_updates"] == 40 * 48
    assert ta["energy_pj"] > 0 and ta["steps"] == 40


def test_relocation_mid_run_leaves_results_unchanged(backend):
    net = two_layer(5, n_out=300)           # two vcores on the default 256-neuron cores, spikes cross them
    inp = trains(6, 30, 12, 0.3)
    chip = neurovm.open(backend)
    vm = chip.create_vm("t", cores=2).load(net)
    ref = vm.run(30, {"in": inp})
    assert len(ref) > 100 and len(vm.mapped.images) == 2
    chip = neurovm.open(backend)
    other = chip.create_vm("neighbour", cores=1)
    vm = chip.create_vm("t", cores=2).load(net)
    first = vm.run(12, {"in": inp[:12]})
    before = list(vm.pcores)
    target = chip.free_cores[0]
    chip.relocate(vm, 1, target)
    assert vm.pcores[1] == target and before[1] in chip.free_cores
    # the old core is scrubbed: every region reads back zero through the hypervisor
    for region in Region:
        assert not chip.read(HV_VM, before[1], region, 0, REGIONS[region].size(chip.config)).any(), region.name
    second = vm.run(18, {"in": inp[12:]})
    assert np.array_equal(np.concatenate([first.step, second.step + 12]), ref.step)
    assert np.array_equal(np.concatenate([first.neuron, second.neuron]), ref.neuron)
    assert vm.telemetry()["spikes_out"] == len(ref)    # counters of the old core are kept
    assert other.telemetry()["spikes_out"] == 0


def test_vms_refuse_politely_and_leave_nothing_behind():
    chip = neurovm.open("emulator")      # 2x2 chip, 4 VM ids
    a = chip.create_vm("a", cores=3)
    with pytest.raises(VMError, match=r"VM 'b': the chip is full, 2 cores asked, 1 free of 4"):
        chip.create_vm("b", cores=2)
    with pytest.raises(VMError, match="VM 'a' already exists"):
        chip.create_vm("a", cores=1)
    with pytest.raises(VMError, match=r"cores must be 1\.\.8 \(vcores_per_vm\), not 0"):
        chip.create_vm("c", cores=0)
    assert [v.name for v in chip.vms] == ["a"] and chip.free_cores == [3]
    # a network bigger than the VM: refused, VM stays empty, its cores zero
    big = Network()
    big.population("p", 5 * 256)
    with pytest.raises(VMError, match=r"VM 'a': cores: the network needs at least 5 cores by neurons_per_core"):
        a.load(big)
    assert a.mapped is None
    with pytest.raises(VMError, match="VM 'a': no network loaded"):
        a.run(3)
    # a load refused at validation (the second core's image holds an illegal weight) changes
    # nothing: the VM keeps its old network, and it still runs the same
    good = map_network(two_layer(7), chip.config, free_cores=a.pcores)
    a.load(good)
    before = a.run(5, {"in": trains(1, 5, 12, 0.9)})
    assert len(before) > 0
    bad = map_network(two_layer(5, n_out=300), chip.config, free_cores=a.pcores)
    assert len(bad.images) == 2
    bad.images[1].weight = bad.images[1].weight.copy()
    bad.images[1].weight[3] = 300
    with pytest.raises(VMError, match=r"VM 'a': the image of vcore 1 is illegal: SYN\[3\]: weight=300"):
        a.load(bad)
    assert a.mapped is not None and a.mapped.n == good.n
    a.reset_state()
    assert a.run(5, {"in": trains(1, 5, 12, 0.9)}) == before
    a.load(good)
    with pytest.raises(VMError, match=r"input 'nope': no population 'nope'; this network has \['in', 'out'\]"):
        a.run(3, {"nope": [0]})
    with pytest.raises(VMError, match=r"input 'in' must be a \(steps <= 3, 12\) spike raster, not shape \(3, 5\)"):
        a.run(3, {"in": np.zeros((3, 5), dtype=bool)})
    with pytest.raises(VMError, match="cannot relocate vcore 0 to core 9: it is not a core of this chip"):
        chip.relocate(a, 0, 9)
    assert chip.create_vm("b", cores=1).pcores == [3]
    with pytest.raises(VMError, match="cannot relocate vcore 0 to core 3: it is held by VM 'b'"):
        chip.relocate(a, 0, 3)
    a.destroy()
    with pytest.raises(VMError, match="VM 'a' has been destroyed"):
        a.run(1)
    assert chip.free_cores == [0, 1, 2] and [v.name for v in chip.vms] == ["b"]


def test_vm_ids_run_out_with_a_clear_message():
    chip = neurovm.open("emulator", neurovm.ChipConfig(mesh_width=4, mesh_height=2))
    for i in range(4):
        chip.create_vm(f"t{i}", cores=1)
    with pytest.raises(VMError, match=r"VM 'late': the chip is full, all 4 VM ids are in use \(t0, t1, t2, t3\)"):
        chip.create_vm("late", cores=1)


def test_destroy_scrubs_cores_before_the_next_tenant_gets_them():
    chip = neurovm.open("emulator")
    a = chip.create_vm("a", cores=4).load(two_layer(9))
    a.run(10, {"in": trains(2, 10, 12)})
    cores = list(a.pcores)
    a.destroy()
    b = chip.create_vm("b", cores=4)
    assert sorted(b.pcores) == sorted(cores)
    for vc in range(4):
        for region in Region:
            assert not chip.read(b.id, vc, region, 0, REGIONS[region].size(chip.config)).any(), region.name
        assert not chip.counters(b.id, vc).any()


def test_raster_png(tmp_path):
    chip = neurovm.open("emulator")
    vm = chip.create_vm("a", cores=1).load(two_layer(1))
    out = vm.run(40, {"in": trains(3, 40, 12)})
    path = tmp_path / "raster.png"
    out.raster(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    dense = out.dense()
    assert dense.shape == (40, 42) and dense.sum() == len(out) and np.array_equal(dense.sum(axis=0), out.counts())
