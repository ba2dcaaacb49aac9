"""The batched engine (``Chip(config, batch=B)``) against B separate chips: every output word equal.

Seeded random multi-VM workloads (tests/randnet.py), each copy its own stream (its own
translation tables, images, injections, run lengths), with malformed commands spliced in
at command boundaries and the streams fed in ragged chunks; the same with the per-axon
delivery fallback; devices and errors.
"""

import numpy as np
import pytest

from neurovm.config import HV_VM, ChipConfig
from neurovm.emulator import Chip
from neurovm.emulator.engine import Engine
from neurovm.emulator.xp import DeviceUnavailableError, namespace, ranges, repeat, segment_ids
from neurovm.formats import COMMAND_FORMATS, Opcode, Region, command_length
from neurovm.host import protocol as P
from tests.randnet import random_config, random_image, random_workload

SMALL = ChipConfig(mesh_width=2, mesh_height=2, neurons_per_core=16, synapses_per_core=96, axons_per_core=12,
                   fanout_per_core=24, weight_bits=6, max_vms=3, vcores_per_vm=4)


def command_starts(words: list[int]) -> list[int]:
    """Offsets of the commands of a well-formed stream."""
    starts, pos = [], 0
    while pos < len(words):
        starts.append(pos)
        pos += command_length(words[pos])
    return starts


def junk_command(rng, cfg: ChipConfig) -> list[int]:
    """One malformed (or refused) command: every kind ends in an error or fault word, none runs long."""
    kind = int(rng.integers(0, 7))
    if kind == 0:    # an opcode that does not exist
        return [(int(rng.integers(9, 16)) << 28) | int(rng.integers(0, 1 << 28))]
    if kind == 1:    # RUN 0
        return [P.encode_run(1)[0] & ~COMMAND_FORMATS[Opcode.RUN]["steps"].mask]
    if kind == 2:    # RUN with reserved bits
        return [P.encode_run(1)[0] | COMMAND_FORMATS[Opcode.RUN].reserved_mask]
    if kind == 3:    # READ of zero words
        return [P.encode_read(HV_VM, 0, Region.STATE_V, 0, 1)[0] & ~COMMAND_FORMATS[Opcode.READ]["count"].mask, 0]
    if kind == 4:    # a guest RUN (privileged): VM 0 instead of the hypervisor
        run = COMMAND_FORMATS[Opcode.RUN]
        return [P.encode_run(1)[0] & ~run["vm"].mask | run["vm"].put(0)]
    if kind == 5:    # an INJECT to an axon past the end
        return [P.encode_inject(HV_VM, 0, 0)[0] | COMMAND_FORMATS[Opcode.INJECT]["axon"].put(cfg.axons_per_core)]
    # a WRITE of illegal field values (out-of-range syn_len) to an AXON word
    bad = (cfg.synapses_per_core + 1) << 16
    return P.encode_write(HV_VM, 0, Region.AXON, 0, [0])[:-1] + [bad]


def malformed_workload(rng, cfg: ChipConfig, steps: int = 8) -> list[int]:
    """A random multi-VM workload with malformed commands spliced in between its commands."""
    words = random_workload(rng, cfg, steps=steps)
    starts = command_starts(words)
    cut = sorted(rng.choice(starts, size=min(6, len(starts)), replace=False).tolist(), reverse=True)
    for pos in cut:
        words[pos:pos] = junk_command(rng, cfg)
    return words


def ragged_chunks(rng, words: list[int], n_chunks: int) -> list[list[int]]:
    """``words`` cut at random places (mid-command included) into ``n_chunks`` pieces."""
    cuts = np.sort(rng.integers(0, len(words) + 1, size=n_chunks - 1))
    bounds = [0, *cuts.tolist(), len(words)]
    return [words[bounds[k]:bounds[k + 1]] for k in range(n_chunks)]


def separate_outputs(cfg, chunked_streams) -> list[np.ndarray]:
    outs = []
    for chunks in chunked_streams:
        chip = Chip(cfg)
        outs.append(np.concatenate([chip.feed(c) for c in chunks]))
    return outs


def batch_outputs(cfg, chunked_streams) -> list[np.ndarray]:
    chip = Chip(cfg, batch=len(chunked_streams))
    per_call = [chip.feed_each([chunks[k] for chunks in chunked_streams]) for k in range(len(chunked_streams[0]))]
    return [np.concatenate([call[b] for call in per_call]) for b in range(len(chunked_streams))]


def assert_streams_equal(got, want, label):
    assert len(got) == len(want), label
    for b, (g, w) in enumerate(zip(got, want)):
        if not np.array_equal(g, w):
            n = min(len(g), len(w))
            i = next((j for j in range(n) if g[j] != w[j]), n)
            raise AssertionError(f"{label} copy {b}: outputs differ at word {i} of {len(w)} (batch {len(g)} words):"
                                 f" batch {[hex(x) for x in g[i:i + 4]]}, separate {[hex(x) for x in w[i:i + 4]]}")


@pytest.mark.parametrize("seed", range(30))
def test_batch_equals_separate_chips_on_random_malformed_workloads(seed):
    rng = np.random.default_rng(7000 + seed)
    cfg = random_config(rng)
    B = int(rng.integers(2, 6))
    streams = [malformed_workload(rng, cfg, steps=int(rng.integers(3, 12))) for _ in range(B)]
    chunked = [ragged_chunks(rng, s, 4) for s in streams]
    want = separate_outputs(cfg, chunked)
    assert_streams_equal(batch_outputs(cfg, chunked), want, f"seed {seed}")


def test_random_workloads_spike_fault_and_error():
    """The workloads above exercise what they claim: spikes, fan-out faults and error words."""
    kinds = {P.OutType.SPIKE: 0, P.OutType.FAULT: 0, P.OutType.ERROR: 0}
    for seed in range(12):
        rng = np.random.default_rng(7000 + seed)
        cfg = random_config(rng)
        for m in P.decode_output(Chip(cfg).feed(malformed_workload(rng, cfg))):
            for kind, cls in ((P.OutType.SPIKE, P.Spike), (P.OutType.FAULT, P.Fault), (P.OutType.ERROR, P.ErrorMsg)):
                kinds[kind] += isinstance(m, cls)
    assert all(n > 5 for n in kinds.values()), kinds


def test_per_axon_fallback_gives_the_same_words(monkeypatch):
    """With the per-neuron synapse expansion refused (too large), delivery goes per axon: same output."""
    rng = np.random.default_rng(99)
    streams = [malformed_workload(rng, SMALL, steps=10) for _ in range(3)]
    chunked = [[s] for s in streams]
    want = separate_outputs(SMALL, chunked)
    monkeypatch.setattr(Engine, "MAX_EXPANSION", -1)
    chip = Chip(SMALL, batch=3)
    got = chip.feed_each(streams)
    assert chip.engine.routes().syn_tgt is None
    assert_streams_equal(got, want, "fallback")


def test_same_configuration_different_injections():
    """The predict pattern: one image broadcast to every copy, then per-copy injections and RUNs."""
    rng = np.random.default_rng(5)
    load = P.encode_reset() + P.encode_mmu_map(0, 0, 1)
    for p in range(SMALL.num_cores):
        for region, data in random_image(rng, SMALL).region_words(SMALL).items():
            load += P.encode_write(HV_VM, p, region, 0, data)
    B = 5
    samples = []
    for b in range(B):
        w = []
        for _ in range(3):
            for axon in rng.choice(SMALL.axons_per_core, size=int(rng.integers(0, 5)), replace=False):
                w += P.encode_inject(HV_VM, int(rng.integers(0, SMALL.num_cores)), int(axon))
            w += P.encode_run(int(rng.integers(1, 6)))
        w += P.encode_read(HV_VM, 2, Region.STATE_V, 0, SMALL.neurons_per_core) + P.encode_read_counters(HV_VM, 2, 0, 7)
        samples.append(w)
    batch = Chip(SMALL, batch=B)
    loaded = batch.feed(load)
    assert all(np.array_equal(out, loaded[0]) for out in loaded)
    got = batch.feed_each(samples)
    want = separate_outputs(SMALL, [[load, s] for s in samples])
    assert_streams_equal([np.concatenate([loaded[b], got[b]]) for b in range(B)], want, "predict pattern")
    assert len({bytes(g) for g in got}) > 1, "the copies should have seen different inputs"


def test_state_has_a_leading_batch_axis_and_matches_single_chips():
    rng = np.random.default_rng(3)
    streams = [random_workload(rng, SMALL, steps=6) for _ in range(2)]
    batch = Chip(SMALL, batch=2)
    batch.feed_each(streams)
    C, N = SMALL.num_cores, SMALL.neurons_per_core
    assert batch.u.shape == (2, C, N) and batch.counters.shape[:2] == (2, C)
    for b, s in enumerate(streams):
        single = Chip(SMALL)
        single.feed(s)
        assert single.u.shape == (C, N)
        for name in ("u", "v", "ref", "acc", "counters", "owner_valid", "mmu_valid"):
            assert np.array_equal(getattr(batch, name)[b], getattr(single, name)), (b, name)
        assert batch.timestep[b] == single.timestep and batch.stream_index[b] == single.stream_index


def test_feed_each_refuses_bad_input_and_consumes_nothing():
    chip = Chip(SMALL, batch=2)
    with pytest.raises(ValueError, match="2 copies"):
        chip.feed_each([P.encode_sync(1)])
    with pytest.raises(ValueError, match="stream 1"):
        chip.feed_each([P.encode_sync(1), [1 << 32]])
    assert chip.pending_words == [0, 0] and chip.stream_index == [0, 0]
    fresh = [Chip(SMALL).feed(P.encode_sync(tag)).tolist() for tag in (1, 2)]
    assert [o.tolist() for o in chip.feed_each([P.encode_sync(1), P.encode_sync(2)])] == fresh
    with pytest.raises(ValueError, match="batch chip"):
        Chip(SMALL).feed_each([P.encode_sync(1)])
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="batch"):
            Chip(SMALL, batch=bad)


def test_cuda_device_names_what_is_missing():
    """On a machine without CuPy or a GPU, device="cuda" fails with a named, actionable error."""
    try:
        namespace("cuda")
    except DeviceUnavailableError as exc:
        assert "cuda" in str(exc) and ("CuPy" in str(exc) or "CUDA" in str(exc))
        with pytest.raises(DeviceUnavailableError, match="neurovm\\[gpu\\]|CUDA"):
            Chip(SMALL, device="cuda")
    else:  # pragma: no cover - a GPU machine: the device works
        assert Chip(SMALL, device="cuda").feed(P.encode_sync(3)).tolist() == Chip(SMALL).feed(P.encode_sync(3)).tolist()
    with pytest.raises(ValueError, match="'cpu', 'cuda'"):
        Chip(SMALL, device="tpu")


def test_array_primitives():
    lens = np.array([2, 0, 3, 1])
    assert segment_ids(np, lens).tolist() == [0, 0, 2, 2, 2, 3]
    assert repeat(np, np.array([5, 6, 7, 8]), lens).tolist() == [5, 5, 7, 7, 7, 8]
    assert ranges(np, np.array([10, 0, 4, 9]), lens).tolist() == [10, 11, 4, 5, 6, 9]
    assert ranges(np, np.zeros(0, np.int64), np.zeros(0, np.int64)).size == 0


def test_random_workloads_cover_both_delivery_paths():
    """Some random batches deliver through the per-neuron synapse lists, some fall back per axon."""
    paths = set()
    for seed in [*range(6), 198]:   # 198: the first of these random workloads whose fan-out expansion
        rng = np.random.default_rng(7000 + seed)   # exceeds the limit (1 in ~200 does), so it falls back
        cfg = random_config(rng)
        B = int(rng.integers(2, 6))
        chip = Chip(cfg, batch=B)
        chip.feed_each([malformed_workload(rng, cfg, steps=int(rng.integers(3, 12))) for _ in range(B)])
        chip.feed(P.encode_run(1))
        paths.add(chip.engine.routes().syn_tgt is None)
    assert paths == {True, False}
