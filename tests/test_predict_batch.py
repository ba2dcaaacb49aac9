"""The forked batch (``Chip.run_batch``) against the command path, and the batched ``predict``.

``run_batch`` must do, copy by copy, exactly what ``Chip(config, batch=B).feed_each`` does
with the equivalent streams (INJECT words before each ``RUN 1``, then READ and
READ_COUNTERS): the same SPIKE words, state and counters, on seeded random fault-free
workloads with guest VMs, bare-metal cores and a non-zero starting state.  ``predict``
batched on the emulator and with replicas on the Verilator model must give the
sequential path's predictions and scores.
"""

from dataclasses import replace

import numpy as np
import pytest

from neurovm.config import HV_VM, ChipConfig
from neurovm.emulator import Chip
from neurovm.emulator.fork import ForkError
from neurovm.formats import NUM_COUNTERS, WORD_MASK, Perm, Region
from neurovm.host import protocol as P
from tests.randnet import random_config, random_image

SMALL = ChipConfig(mesh_width=2, mesh_height=2, neurons_per_core=16, synapses_per_core=96, axons_per_core=12,
                   fanout_per_core=24, weight_bits=6, max_vms=3, vcores_per_vm=4)
_STATE = {"u": Region.STATE_U, "v": Region.STATE_V, "ref": Region.STATE_REF, "acc": Region.ACC}


# ---- random fault-free chips ----------------------------------------------------------------
def fault_free_load(rng, cfg: ChipConfig) -> list[int]:
    """RESET, guest VMs on some cores, a random image on every core whose fan-out entries all
    translate (guest cores name their VM's vcores, bare cores name bare cores), then a few
    steps with injections so that the state the copies fork from is not zero."""
    C = cfg.num_cores
    owner: dict[int, tuple[int, int]] = {}
    words = P.encode_reset()
    for p in rng.permutation(C):
        if rng.random() < 0.6:
            vm = int(rng.integers(0, cfg.max_vms))
            used = {vc for (v, vc) in owner.values() if v == vm}
            free = [vc for vc in range(cfg.vcores_per_vm) if vc not in used]
            if free:
                owner[int(p)] = (vm, int(rng.choice(free)))
                words += P.encode_mmu_map(vm, owner[int(p)][1], int(p), int(Perm.ALL))
    bare = [p for p in range(C) if p not in owner]
    for p in range(C):
        img = random_image(rng, cfg)
        targets = ([vc for (v, vc) in owner.values() if v == owner[p][0]] if p in owner else bare)
        nf = len(img.fo_vcore)
        if targets and nf:
            img = replace(img, fo_vcore=rng.choice(targets, size=nf))
        else:
            img = replace(img, fo_len=np.zeros(len(img.fo_len), dtype=np.int64))
        for region, data in img.region_words(cfg).items():
            words += P.encode_write(HV_VM, p, region, 0, data)
    for _ in range(3):
        for _ in range(int(rng.integers(0, 4))):
            words += P.encode_inject(HV_VM, int(rng.integers(0, C)), int(rng.integers(0, cfg.axons_per_core)))
        words += P.encode_run(int(rng.integers(1, 3)))
    return words


def random_injections(rng, cfg: ChipConfig, copies: int, steps: int) -> list:
    """Per step, (copy, pcore, axon) arrays; repeats of one axon in a step included."""
    out = []
    for _ in range(steps):
        n = int(rng.integers(0, 4 * copies))
        out.append((rng.integers(0, copies, n), rng.integers(0, cfg.num_cores, n),
                    rng.integers(0, cfg.axons_per_core, n)))
    return out


def command_streams(cfg: ChipConfig, inject: list, copies: int) -> list[list[int]]:
    """The equivalent command streams: INJECTs then RUN 1 per step, then every state word and counter."""
    streams = [[] for _ in range(copies)]
    for copy, pcore, axon in inject:
        for b, p, a in zip(copy.tolist(), pcore.tolist(), axon.tolist()):
            streams[b] += P.encode_inject(HV_VM, p, a)
        for s in streams:
            s += P.encode_run(1)
    for s in streams:
        for p in range(cfg.num_cores):
            for region in _STATE.values():
                s += P.encode_read(HV_VM, p, region, 0, cfg.neurons_per_core)
            s += P.encode_read_counters(HV_VM, p, 0, NUM_COUNTERS)
    return streams


def decode(words, chip: Chip, cfg: ChipConfig, start: int, steps: int):
    """Spike raster ``(steps, C, N)`` by physical core, READ data and counters, of one copy's output."""
    spikes, others = P.decode_spikes(words)
    pcore_of = {chip.domain(p): p for p in range(cfg.num_cores)}
    raster = np.zeros((steps, cfg.num_cores, cfg.neurons_per_core), dtype=bool)
    for t, vm, vc, n in spikes.tolist():
        raster[t - start - 1, pcore_of[(vm, vc)], n] = True
    kinds = {type(m).__name__ for m in others}
    assert kinds <= {"StepEnd", "ReadData", "CountersMsg"}, kinds
    reads = [m.data for m in others if isinstance(m, P.ReadData)]
    counters = np.array([m.values for m in others if isinstance(m, P.CountersMsg)])
    return raster, reads, counters


def assert_run_equals_streams(cfg: ChipConfig, load: list[int], inject: list, copies: int, run=None):
    """``run_batch`` on a chip fed ``load`` == ``feed_each`` of the equivalent streams, copy by copy."""
    steps = len(inject)
    single = Chip(cfg)
    single.feed(load)
    before = {k: np.array(getattr(single, k)) for k in ("u", "v", "ref", "acc", "counters")}
    start = single.timestep
    run = run if run is not None else single.run_batch(copies, steps, inject)
    for k, arr in before.items():
        assert np.array_equal(getattr(single, k), arr), f"run_batch changed the chip's {k}"
    assert single.timestep == start
    batch = Chip(cfg, batch=copies)
    batch.feed(load)
    outs = batch.feed_each(command_streams(cfg, inject, copies))
    N = cfg.neurons_per_core
    for b in range(copies):
        raster, reads, counters = decode(outs[b], single, cfg, start, steps)
        assert np.array_equal(raster[:, run.spike_pcore, run.spike_neuron], run.spikes[:, b]), f"copy {b}: spikes"
        assert raster.sum() == run.spikes[:, b].sum(), f"copy {b}: a non-reporting neuron sent SPIKE words"
        for p in range(cfg.num_cores):
            for i, name in enumerate(_STATE):
                got = run.state(name, np.full(N, p), np.arange(N))[b] & WORD_MASK
                assert np.array_equal(got, reads[p * len(_STATE) + i]), f"copy {b} core {p}: {name}"
        assert np.array_equal(run.counters[b] & WORD_MASK, counters), f"copy {b}: counters"
    return run


# ---- run_batch == feed_each -----------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_run_batch_equals_feed_each_on_random_workloads(seed):
    rng = np.random.default_rng(100 + seed)
    cfg = SMALL if seed % 2 == 0 else random_config(rng)
    copies, steps = int(rng.integers(1, 6)), int(rng.integers(1, 9))
    assert_run_equals_streams(cfg, fault_free_load(rng, cfg), random_injections(rng, cfg, copies, steps), copies)


def test_idle_chip_and_no_injections():
    """No active neuron, no injection: nothing to tabulate, still the command path's words."""
    empty = (np.zeros(0, dtype=np.int64),) * 3
    run = assert_run_equals_streams(SMALL, P.encode_reset(), [empty] * 3, 2)
    assert run.spikes.shape == (3, 2, 0) and not run.counters.any()


def test_random_workloads_spike_and_inject_in_several_copies():
    """The workloads above are not idle: spikes in several copies, differing between copies."""
    rng = np.random.default_rng(7)
    load = fault_free_load(rng, SMALL)
    inject = random_injections(rng, SMALL, 4, 8)
    run = assert_run_equals_streams(SMALL, load, inject, 4)
    per_copy = run.spikes.sum(axis=(0, 2))
    assert (per_copy > 0).sum() >= 2 and len(set(per_copy.tolist())) > 1, per_copy


def test_acc_wraps_as_on_the_command_path():
    """Synaptic sums past 24 bits: an axon of 48 synapses of the largest weight at weight_exp 7
    onto active neuron 0, another onto neuron 5 (beyond n_active: its acc only accumulates),
    injected several times a step and fed by a neuron that spikes every step."""
    from neurovm.image import CoreImage

    n = 4
    img = CoreImage(syn_start=[0, 48], syn_len=[48, 48], target=[0] * 48 + [5] * 48,
                    weight=[SMALL.weight_max] * 48 + [SMALL.weight_min] * 48,
                    du=[0] * n, dv=[0] * n, refract=[0] * n, bias_mant=[0, 4095, 0, 0], bias_exp=[0, 7, 0, 0],
                    vth_mant=[1] * n, fo_start=[0] * n, fo_len=[0, 2, 0, 0], report=[True] * n,
                    fo_axon=[0, 1], fo_vcore=[0, 0], weight_exp=7, n_active=n)
    load = P.encode_reset()
    for region, data in img.region_words(SMALL).items():
        load += P.encode_write(HV_VM, 0, region, 0, data)
    rng = np.random.default_rng(4)
    copies, steps = 3, 5
    inject = []
    for _ in range(steps):
        k = int(rng.integers(0, 7))
        inject.append((rng.integers(0, copies, k), np.zeros(k, dtype=np.int64), rng.integers(0, 2, k)))
    run = assert_run_equals_streams(SMALL, load, inject, copies)
    naive = steps * 48 * SMALL.weight_min * (1 << 7) * 64
    assert (run.state("acc", [0], [5])[:, 0] != naive).all() and run.spikes[:, :, 0].any()


def test_count_form_equals_triple_form():
    """Injections given as (copies, K) counts over an axon list: the same run."""
    rng = np.random.default_rng(11)
    load = fault_free_load(rng, SMALL)
    copies, steps = 3, 6
    inject = random_injections(rng, SMALL, copies, steps)
    axons = np.array([(p, a) for p in range(SMALL.num_cores) for a in range(SMALL.axons_per_core)])
    dense = [np.bincount(c * len(axons) + p * SMALL.axons_per_core + a, minlength=copies * len(axons))
             .reshape(copies, len(axons)) for c, p, a in inject]
    chip = Chip(SMALL)
    chip.feed(load)
    run = chip.run_batch(copies, steps, lambda t: dense[t], axons=axons)
    assert_run_equals_streams(SMALL, load, inject, copies, run=run)
    # per-copy telemetry: the energy of each copy's counters, as a VM's telemetry computes it
    from neurovm.emulator import DEFAULT_ENERGY
    batch = Chip(SMALL, batch=copies)
    batch.feed(load)
    batch.feed_each(command_streams(SMALL, inject, copies))
    want = [DEFAULT_ENERGY.energy_pj(batch.counters[b]) for b in range(copies)]
    assert np.array_equal(run.energy_pj(), want) and len(set(want)) > 1


def test_run_batch_refuses_faults_and_bad_arguments():
    rng = np.random.default_rng(3)
    chip = Chip(SMALL)
    chip.feed(fault_free_load(rng, SMALL))
    with pytest.raises(ForkError, match="copies must be an int >= 1"):
        chip.run_batch(0, 2)
    with pytest.raises(ForkError, match=r"inject\[1\]: axon 12 is outside 0..11"):
        chip.run_batch(2, 2, [(np.array([0]), np.array([0]), np.array([1]))] * 1
                       + [(np.array([0]), np.array([0]), np.array([12]))])
    with pytest.raises(ForkError, match=r"inject at step 0 must be a \(2, 1\) array"):
        chip.run_batch(2, 1, [np.ones((3, 1), dtype=np.int64)], axons=[[0, 0]])
    with pytest.raises(ForkError, match="axons\\[0\\]: pcore 4 is outside 0..3"):
        chip.run_batch(2, 1, None, axons=[[4, 0]])
    run = chip.run_batch(2, 1)
    with pytest.raises(ForkError, match="state 'v': neuron 16 is outside 0..15"):
        run.state("v", [0], [16])
    with pytest.raises(ForkError, match="state 'w': allowed are u, v, ref, acc"):
        run.state("w", [0], [0])
    # a bare core fanning out to a core that VM 0 owns (a CROSS_VM fault): refused, naming the neuron
    img = random_image(rng, SMALL)
    n, nf = len(img.fo_len), max(len(img.fo_vcore), 1)
    img = replace(img, n_active=None, fo_len=np.ones(n, dtype=np.int64), fo_start=np.zeros(n, dtype=np.int64),
                  fo_vcore=np.ones(nf, dtype=np.int64), fo_axon=np.zeros(nf, dtype=np.int64))
    bad = Chip(SMALL)
    bad.feed(P.encode_mmu_map(0, 0, 1, int(Perm.ALL)))
    for region, data in img.region_words(SMALL).items():
        bad.feed(P.encode_write(HV_VM, 0, region, 0, data))
    with pytest.raises(ForkError, match="core 0 neuron 0 has fan-out entries that fail translation"):
        bad.run_batch(2, 1)


# ---- predict: batched on the emulator, replicas elsewhere, identical to the sequential path -------
@pytest.fixture(scope="module")
def digits_model():
    import neurovm
    from neurovm.examples import digits_onnx

    onx, data, _ = digits_onnx(hidden=(64,), seed=0)
    return neurovm.convert_onnx(onx, data.x_train[:300], steps=32), data


@pytest.fixture
def run_batch_calls(monkeypatch):
    """Counts the copies of every ``Chip.run_batch`` call made while the test runs."""
    calls = []
    original = Chip.run_batch

    def spy(self, copies, *args, **kwargs):
        calls.append(copies)
        return original(self, copies, *args, **kwargs)

    monkeypatch.setattr(Chip, "run_batch", spy)
    return calls


def test_batched_predict_equals_sequential_on_digits(digits_model, run_batch_calls):
    model, data = digits_model
    x = data.x_test[:100]
    p_seq, s_seq = model.predict(x, batch=1, return_scores=True)
    assert run_batch_calls == []
    assert (p_seq == data.y_test[:100]).mean() > 0.85
    p_all, s_all = model.predict(x, return_scores=True)
    assert run_batch_calls == [100]
    done = []
    p_30, s_30 = model.predict(x, batch=30, return_scores=True, progress=lambda d, n: done.append((d, n)))
    assert run_batch_calls == [100, 30, 30, 30, 10]
    assert done == [(30, 100), (60, 100), (90, 100), (100, 100)]
    for p, s in ((p_all, s_all), (p_30, s_30)):
        assert np.array_equal(p, p_seq)
        assert np.array_equal(s, s_seq), np.abs(s - s_seq).max()


@pytest.fixture
def host_runs(monkeypatch):
    """How many VMs got inputs in every ``neurovm.host.Chip.run`` made while the test runs."""
    from neurovm.host.runtime import Chip as HostChip

    runs = []
    original = HostChip.run

    def spy(self, steps, inputs=None, inject=None):
        runs.append(len(inputs or {}))
        return original(self, steps, inputs, inject)

    monkeypatch.setattr(HostChip, "run", spy)
    return runs


def test_replicas_on_a_shared_emulator_chip(digits_model, run_batch_calls, host_runs):
    """With another tenant on the chip, predict loads one replica per free core and VM id
    (3 here), one RUN serving three samples, and leaves the tenant alone."""
    import neurovm

    model, data = digits_model
    x = data.x_test[100:110]
    want = model.predict(x, batch=1, return_scores=True)
    assert host_runs == [1] * 10
    chip = neurovm.open("emulator", model.config)
    other = chip.create_vm("other", cores=1)
    got = model.predict(x, chip=chip, return_scores=True)
    assert host_runs[10:] == [3, 3, 3, 1] and run_batch_calls == []
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert chip.vms == [other]


@pytest.mark.cosim
def test_replicas_on_verilator_equal_the_sequential_emulator(digits_model, host_runs):
    """Four replicas (one core each, VM ids 0..3) on the Verilator model: one RUN for 4 samples."""
    model, data = digits_model
    x = data.x_test[200:204]
    p_seq, s_seq = model.predict(x, batch=1, return_scores=True)
    p_ver, s_ver = model.predict(x, backend="verilator", return_scores=True)
    assert host_runs == [1] * 4 + [4]
    assert np.array_equal(p_ver, p_seq) and np.array_equal(s_ver, s_seq)


def test_predict_refuses_a_bad_batch(digits_model):
    from neurovm.host.model import ModelError

    model, data = digits_model
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ModelError, match="batch must be None or an integer >= 1"):
            model.predict(data.x_test[:2], batch=bad)


# ---- devices and the batch backend ------------------------------------------------------------------
def test_open_emulator_on_cuda_says_what_is_missing():
    import neurovm
    from neurovm.emulator import DeviceUnavailableError

    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: this machine may have a GPU")
    except ImportError:
        pass
    with pytest.raises(DeviceUnavailableError, match="emulator device 'cuda': CuPy is not installed"):
        neurovm.open("emulator", SMALL, device="cuda")
    with pytest.raises(ValueError, match="device='cpu': only the emulator backend"):
        neurovm.open("verilator", SMALL, device="cpu")
    chip = neurovm.open("emulator", SMALL, device="cpu")
    assert chip.backend.device == "cpu" and chip.backend.chip.device == "cpu"


def test_batch_backend_exchanges_one_stream_per_copy():
    from neurovm.host import EmulatorBackend

    rng = np.random.default_rng(2)
    load = fault_free_load(rng, SMALL)
    streams = command_streams(SMALL, random_injections(rng, SMALL, 3, 4), 3)
    backend = EmulatorBackend(SMALL, batch=3)
    backend.send(load)
    backend.receive()
    got = backend.exchange_each(streams)
    want = Chip(SMALL, batch=3)
    want.feed(load)
    for g, w in zip(got, want.feed_each(streams)):
        assert np.array_equal(g, w)
    with pytest.raises(ValueError, match="exchange_each needs a batch backend"):
        EmulatorBackend(SMALL).exchange_each(streams)
