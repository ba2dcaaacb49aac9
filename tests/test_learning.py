"""On-chip learning (docs/architecture.md §24): the emulator against a scalar reference written from the spec.

The reference (:class:`LearnRef`) extends the independent scalar chip of ``tests/reference.py``
with the learning engine, written from §24 alone with plain Python integers and loops (``//``
and Python's floor ``>>``, one synapse at a time in pass order).  Seeded random workloads with
learning on (random rules, rates, epochs, traces, ``fixed`` bits, saturation corners) are fed to
:class:`neurovm.emulator.Chip` and to the reference; the output words' spikes and every learned
weight, trace and state word must agree.  Also: batch copies learn bit-identically, learning
off is bit-identical to a chip without the learning engine, the new regions are checked on
WRITE and refused on a chip without learning, and a VM only ever changes its own synapses.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurovm.config import HV_VM, TRACE_MAX, ChipConfig
from neurovm.emulator import Chip
from neurovm.emulator.chip import ForkError
from neurovm.formats import (LEARN_REGIONS, SYN_LEARNING, ErrorCode, FaultCause, LearnRegion, Region,
                             region_specs)
from neurovm.host import protocol as P
from neurovm.image import CoreImage, ImageError, LearningRule

from .randnet import random_image, random_mmu
from .reference import RefChip, scaled_weight, wrap24


# ---------------------------------------------------------------------------
# the scalar reference of §24
# ---------------------------------------------------------------------------
def trace_next(x: int, decay: int, impulse: int, spiked: int) -> int:
    """§24.2: truncating 12-bit decay, then the impulse, saturating at 127."""
    return min(TRACE_MAX, (x * (4096 - decay)) // 4096 + impulse * spiked)


class LearnRef(RefChip):
    """:class:`RefChip` plus the learning engine: traces, epoch flags, the pass, in §24.4's order."""

    def __init__(self, cfg, images, mmu, rules: dict):
        super().__init__(cfg, images, mmu)
        A, N, S = cfg.axons_per_core, cfg.neurons_per_core, cfg.synapses_per_core
        self.rules = rules                                    # pcore -> LearningRule
        self.x = [[0] * A for _ in self.cores]
        self.x0 = [[0] * A for _ in self.cores]
        self.pend = [[0] * A for _ in self.cores]
        self.y = [[0] * N for _ in self.cores]
        self.y0 = [[0] * N for _ in self.cores]
        self.w, self.tgt, self.fixed = [], [], []
        for core in self.cores:
            img = core.image
            def entry(name, s):
                a = getattr(img, name) if img is not None else ()
                return int(a[s]) if s < len(a) else 0
            self.w.append([entry("weight", s) for s in range(S)])
            self.tgt.append([entry("target", s) for s in range(S)])
            self.fixed.append([entry("fixed", s) for s in range(S)])
        for p, core in enumerate(self.cores):
            if core.image is not None:
                for a, v in enumerate(core.image.pre_x):
                    self.x[p][a] = int(v)
                for i, v in enumerate(core.image.post_y):
                    self.y[p][i] = int(v)

    def deliver(self, q: int, axon: int):
        self.pend[q][axon] = 1
        img = self.cores[q].image
        if img is None or axon >= len(img.syn_start):
            return
        start, length = int(img.syn_start[axon]), int(img.syn_len[axon])
        for s in range(start, start + length):
            t = self.tgt[q][s]
            self.cores[q].acc[t] = wrap24(self.cores[q].acc[t] + scaled_weight(self.w[q][s], int(img.weight_exp)))

    def step(self):
        self.t += 1
        pre = [list(p) for p in self.pend]
        self.pend = [[0] * len(p) for p in self.pend]
        spiking = self._update_neurons()
        events = self._fan_out(spiking)
        for p, rule in self.rules.items():
            if rule.enable and self.cores[p].image is not None:
                post = [0] * self.cfg.neurons_per_core
                for q, i in spiking:
                    if q == p:
                        post[i] = 1
                self._learn(p, rule, pre[p], post)
        return events

    def _learn(self, p, r, pre, post):
        A, N = self.cfg.axons_per_core, self.cfg.neurons_per_core
        x, x0, y, y0 = self.x[p], self.x0[p], self.y[p], self.y0[p]
        for a in range(A):
            x[a] = trace_next(x[a], r.x_decay, r.x_impulse, pre[a])
            x0[a] |= pre[a]
        for i in range(N):
            y0[i] |= post[i]
        if self.t % (2 ** r.epoch_log2) == 0:
            img = self.cores[p].image
            for a in range(min(A, len(img.syn_start))):
                start, length = int(img.syn_start[a]), int(img.syn_len[a])
                for s in range(start, start + length):
                    if self.fixed[p][s]:
                        continue
                    i = self.tgt[p][s]
                    dw = y0[i] * ((r.a_plus * x[a]) >> r.s_plus) - x0[a] * ((r.a_minus * y[i]) >> r.s_minus)
                    self.w[p][s] = max(self.cfg.weight_min, min(self.cfg.weight_max, self.w[p][s] + dw))
            for a in range(A):
                x0[a] = 0
            for i in range(N):
                y0[i] = 0
        for i in range(N):
            y[i] = trace_next(y[i], r.y_decay, r.y_impulse, post[i])


# ---------------------------------------------------------------------------
# seeded random learning workloads
# ---------------------------------------------------------------------------
def learning_config(rng) -> ChipConfig:
    return ChipConfig(mesh_width=int(rng.integers(1, 3)), mesh_height=int(rng.integers(1, 3)),
                      neurons_per_core=int(rng.integers(2, 17)), synapses_per_core=int(rng.integers(16, 120)),
                      axons_per_core=int(rng.integers(4, 24)), fanout_per_core=int(rng.integers(4, 40)),
                      weight_bits=int(rng.integers(2, 9)), max_vms=int(rng.integers(1, 4)),
                      vcores_per_vm=int(rng.integers(1, 5)), learning=1)


def random_rule(rng) -> LearningRule:
    def pick(corners, lo, hi):
        return int(rng.choice(corners)) if rng.random() < 0.3 else int(rng.integers(lo, hi + 1))
    return LearningRule(a_plus=pick([-128, 127, 0], -128, 127), a_minus=pick([-128, 127, 0], -128, 127),
                        s_plus=pick([0, 15], 0, 15), s_minus=pick([0, 15], 0, 15), epoch_log2=pick([0], 0, 2),
                        x_decay=pick([0, 4095], 0, 4095), x_impulse=pick([0, 127], 0, 127),
                        y_decay=pick([0, 4095], 0, 4095), y_impulse=pick([0, 127], 0, 127),
                        enable=int(rng.random() < 0.85))


def random_learning_image(rng, cfg) -> CoreImage:
    img = random_image(rng, cfg, activity=2.0)
    ns, na, n = len(img.weight), len(img.syn_start), img.num_neurons
    excitable = rng.random(n) < 0.7          # low thresholds: enough post spikes for both LTP and LTD
    vth = np.where(excitable, rng.integers(0, 8, size=n), img.vth_mant)
    return CoreImage(**{**img.__dict__, "vth_mant": vth, "fixed": (rng.random(ns) < 0.2).astype(np.int64),
                        "pre_x": rng.integers(0, TRACE_MAX + 1, size=na) if rng.random() < 0.5 else [],
                        "post_y": rng.integers(0, TRACE_MAX + 1, size=n) if rng.random() < 0.5 else []})


def learning_session(seed: int, steps: int = 32):
    """A random learning session: (config, command words, images, mmu, rules, inject plan)."""
    rng = np.random.default_rng(seed)
    cfg = learning_config(rng)
    mmu = random_mmu(rng, cfg)
    images, rules = {}, {}
    w = P.encode_reset()
    for (vm, vc), (p, perms) in mmu.items():
        w += P.encode_mmu_map(vm, vc, p, perms)
    for p in range(cfg.num_cores):
        if rng.random() < 0.9:
            rules[p] = random_rule(rng)
            images[p] = random_learning_image(rng, cfg).with_learning(rules[p])
            for region, data in images[p].region_words(cfg).items():
                w += P.encode_write(HV_VM, p, region, 0, data)
    plan = []
    for _ in range(steps):
        inj = [(int(rng.integers(0, cfg.num_cores)), int(rng.integers(0, cfg.axons_per_core)))
               for _ in range(int(rng.integers(0, 2 * cfg.axons_per_core)))]
        plan.append(inj)
        for p, a in inj:
            w += P.encode_inject(HV_VM, p, a)
        w += P.encode_run(1)
    return cfg, w, images, mmu, rules, plan


def readback(cfg) -> list[int]:
    """Words that READ every core's SYN, traces and state (the hypervisor's view)."""
    w = []
    specs = region_specs(cfg)
    for p in range(cfg.num_cores):
        for region in (Region.SYN, LearnRegion.PRE_TRACE, LearnRegion.POST_TRACE, Region.STATE_U, Region.STATE_V):
            w += P.encode_read(HV_VM, p, region, 0, specs[region].size(cfg))
    return w


def read_blocks(out) -> list[np.ndarray]:
    return [m.data.astype(np.int64) for m in P.decode_output(out) if isinstance(m, P.ReadData)]


def run_reference(cfg, images, mmu, rules, plan):
    ref = LearnRef(cfg, images, mmu, rules)
    spikes = []
    for inj in plan:
        for p, a in inj:
            ref.deliver(p, a)
        spikes += [e for e in ref.step() if e[0] == "spike"]
    return ref, spikes


@pytest.mark.parametrize("seed", range(12))
def test_random_learning_matches_reference(seed):
    cfg, words, images, mmu, rules, plan = learning_session(seed)
    chip = Chip(cfg)
    out = chip.feed(words)
    errors = [m for m in P.decode_output(out) if isinstance(m, (P.ErrorMsg, P.Fault)) and
              getattr(m, "origin", None) != P.FaultOrigin.FANOUT]
    assert not errors, errors
    got_spikes = [("spike", m.vm, m.vcore, m.neuron, m.timestep) for m in P.decode_output(out)
                  if isinstance(m, P.Spike)]
    ref, ref_spikes = run_reference(cfg, images, mmu, rules, plan)
    assert got_spikes == ref_spikes
    blocks = iter(read_blocks(chip.feed(readback(cfg))))
    syn_fmt = SYN_LEARNING.fmt
    pre_fmt, post_fmt = (LEARN_REGIONS[r].fmt for r in (LearnRegion.PRE_TRACE, LearnRegion.POST_TRACE))
    for p in range(cfg.num_cores):
        syn, pre, post, u, v = (next(blocks) for _ in range(5))
        assert syn_fmt["weight"].get(syn).tolist() == ref.w[p], f"core {p} weights"
        assert syn_fmt["fixed"].get(syn).tolist() == ref.fixed[p]
        assert pre_fmt["x"].get(pre).tolist() == ref.x[p], f"core {p} pre traces"
        assert pre_fmt["x0"].get(pre).tolist() == ref.x0[p]
        assert pre_fmt["pend"].get(pre).tolist() == ref.pend[p]
        assert post_fmt["y"].get(post).tolist() == ref.y[p], f"core {p} post traces"
        assert post_fmt["y0"].get(post).tolist() == ref.y0[p]
        assert (u.astype(np.int32)).tolist() == ref.cores[p].u
        assert (v.astype(np.int32)).tolist() == ref.cores[p].v


def test_random_workloads_do_learn():
    """The seeded workloads are not vacuous: weights move and some saturate at both ends."""
    moved, at_min, at_max = 0, 0, 0
    for seed in range(12):
        cfg, words, images, mmu, rules, plan = learning_session(seed)
        ref, _ = run_reference(cfg, images, mmu, rules, plan)
        for p, img in images.items():
            w = np.asarray(ref.w[p][:len(img.weight)])
            moved += int(np.sum(w != img.weight))
            at_min += int(np.sum((w == cfg.weight_min) & (img.weight != cfg.weight_min)))
            at_max += int(np.sum((w == cfg.weight_max) & (img.weight != cfg.weight_max)))
    assert moved > 80 and at_min > 10 and at_max > 5


# ---------------------------------------------------------------------------
# the rule to the bit, by hand
# ---------------------------------------------------------------------------
def one_synapse_chip(rule: LearningRule, weight: int, weight_bits: int = 8):
    """A 1-core learning chip: axon 0 -> neuron 0 (weight); neuron 0 fires at every step (bias 1 > threshold 0)."""
    cfg = ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=2, synapses_per_core=4, axons_per_core=2,
                     fanout_per_core=2, weight_bits=weight_bits, learning=1)
    img = CoreImage(syn_start=[0, 1], syn_len=[1, 1], target=[0, 1], weight=[weight, 0], du=[4095, 4095],
                    dv=[4095, 4095], bias_mant=[1, 0], vth_mant=[0, 0], report=[1, 1]).with_learning(rule)
    chip = Chip(cfg)
    for region, data in img.region_words(cfg).items():
        chip.feed(P.encode_write(HV_VM, 0, region, 0, data))
    return cfg, chip


def weight_of(chip, entry=0) -> int:
    word = read_blocks(chip.feed(P.encode_read(HV_VM, 0, Region.SYN, entry, 1)))[0][0]
    return SYN_LEARNING.fmt["weight"].get(int(word))


def test_pre_then_post_potentiates_with_floor_shifts():
    # a_plus * x = 5 * 64 = 320, >> 3 = 40; the post trace is 0 before the first post spike: no LTD
    rule = LearningRule(a_plus=5, a_minus=7, s_plus=3, s_minus=2, x_decay=0, x_impulse=64, y_decay=0,
                        y_impulse=100)
    cfg, chip = one_synapse_chip(rule, weight=10)
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(1))     # pre and post in the same step
    assert weight_of(chip) == 10 + (5 * 64 >> 3)
    # next step: another pre event, now y = 100: LTP 40 again (x = 127 saturated: 5*127>>3 = 79), LTD 7*100>>2 = 175
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(1))
    assert weight_of(chip) == max(cfg.weight_min, 50 + (5 * 127 >> 3) - (7 * 100 >> 2))


def test_negative_products_round_toward_minus_infinity():
    rule = LearningRule(a_plus=-3, a_minus=0, s_plus=2, x_decay=0, x_impulse=5, y_decay=0, y_impulse=0)
    cfg, chip = one_synapse_chip(rule, weight=0)
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(1))
    assert weight_of(chip) == -4          # floor(-15 / 4) = -4, not -3


def test_epoch_accumulates_flags_and_updates_every_2_to_the_k_steps():
    rule = LearningRule(a_plus=1, a_minus=0, s_plus=0, epoch_log2=2, x_decay=0, x_impulse=10, y_decay=0,
                        y_impulse=0)
    cfg, chip = one_synapse_chip(rule, weight=0)
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(1))   # T = 1: no pass yet
    assert weight_of(chip) == 0
    chip.feed(P.encode_run(2))                                   # T = 3
    assert weight_of(chip) == 0
    chip.feed(P.encode_run(1))                                   # T = 4: the pass, x = 10, y0 = 1
    assert weight_of(chip) == 10


def test_fixed_synapses_and_disabled_cores_do_not_learn():
    rule = LearningRule(a_plus=100, s_plus=0, x_decay=0, x_impulse=100, y_decay=0, y_impulse=0)
    cfg, chip = one_synapse_chip(rule, weight=3)
    word = SYN_LEARNING.fmt.pack(target=0, weight=3, fixed=1)
    chip.feed(P.encode_write(HV_VM, 0, Region.SYN, 0, [word]))
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(3))
    assert weight_of(chip) == 3
    cfg, chip = one_synapse_chip(LearningRule(**{**rule.__dict__, "enable": 0}), weight=3)
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(3))
    assert weight_of(chip) == 3
    pre = read_blocks(chip.feed(P.encode_read(HV_VM, 0, LearnRegion.PRE_TRACE, 0, 1)))[0]
    assert int(pre[0]) == 0               # a disabled core's traces stay


@pytest.mark.parametrize("weight_bits", [2, 8])
def test_weights_saturate_at_weight_bits(weight_bits):
    cfg0 = ChipConfig(weight_bits=weight_bits)
    up = LearningRule(a_plus=127, s_plus=0, x_decay=0, x_impulse=127, y_decay=0, y_impulse=0)
    cfg, chip = one_synapse_chip(up, weight=cfg0.weight_max - 1, weight_bits=weight_bits)
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(2))
    assert weight_of(chip) == cfg0.weight_max
    down = LearningRule(a_plus=-128, s_plus=0, x_decay=0, x_impulse=127, y_decay=0, y_impulse=0)
    cfg, chip = one_synapse_chip(down, weight=0, weight_bits=weight_bits)
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(2))
    assert weight_of(chip) == cfg0.weight_min


def test_learned_weights_drive_later_events():
    """A pass changes the weight the synaptic pipeline adds from then on (INJECT after the RUN)."""
    rule = LearningRule(a_plus=40, s_plus=0, x_decay=0, x_impulse=1, y_decay=0, y_impulse=0)
    cfg, chip = one_synapse_chip(rule, weight=1)
    chip.feed(P.encode_inject(HV_VM, 0, 0) + P.encode_run(1))
    chip.feed(P.encode_inject(HV_VM, 0, 0))
    acc = read_blocks(chip.feed(P.encode_read(HV_VM, 0, Region.ACC, 0, 1)))[0]
    assert int(acc[0]) == (1 + 40) * 64


# ---------------------------------------------------------------------------
# regions: checked on WRITE, absent without learning
# ---------------------------------------------------------------------------
def errors_of(out):
    return [m for m in P.decode_output(out) if isinstance(m, P.ErrorMsg)]


def test_learning_regions_do_not_exist_on_a_chip_without_learning():
    chip = Chip(ChipConfig(mesh_width=1, mesh_height=1))
    for region in LearnRegion:
        errs = errors_of(chip.feed(P.encode_read(HV_VM, 0, region, 0, 1)))
        assert [e.code for e in errs] == [ErrorCode.BAD_REGION]
    # and the SYN fixed bit is a reserved bit there
    errs = errors_of(chip.feed(P.encode_write(HV_VM, 0, Region.SYN, 0, [1 << 24])))
    assert [e.code for e in errs] == [ErrorCode.BAD_FIELD]


@pytest.mark.parametrize("region,word", [(LearnRegion.PRE_TRACE, 1 << 7), (LearnRegion.PRE_TRACE, 1 << 10),
                                         (LearnRegion.POST_TRACE, 1 << 9), (LearnRegion.LEARN_CFG, 1 << 12),
                                         (LearnRegion.LEARN_CFG, 1 << 23), (LearnRegion.LEARN_RULE, 1 << 27),
                                         (LearnRegion.LEARN_RULE, 1 << 30)])
def test_learning_region_words_are_checked_on_write(region, word):
    cfg, chip = one_synapse_chip(LearningRule(), weight=0)
    before = read_blocks(chip.feed(P.encode_read(HV_VM, 0, region, 0, 1)))[0]
    errs = errors_of(chip.feed(P.encode_write(HV_VM, 0, region, 0, [word])))
    assert [e.code for e in errs] == [ErrorCode.BAD_FIELD] and errs[0].word == word
    assert read_blocks(chip.feed(P.encode_read(HV_VM, 0, region, 0, 1)))[0].tolist() == before.tolist()


def test_trace_regions_read_back_what_was_written():
    cfg, chip = one_synapse_chip(LearningRule(enable=0), weight=0)
    pre = [LEARN_REGIONS[LearnRegion.PRE_TRACE].fmt.pack(x=99, x0=1, pend=1), 5]
    chip.feed(P.encode_write(HV_VM, 0, LearnRegion.PRE_TRACE, 0, pre))
    assert read_blocks(chip.feed(P.encode_read(HV_VM, 0, LearnRegion.PRE_TRACE, 0, 2)))[0].tolist() == pre


# ---------------------------------------------------------------------------
# batch, learning off, virtualization, images
# ---------------------------------------------------------------------------
def test_batch_copies_learn_bit_identically():
    cfg, first, *_ = learning_session(3)
    streams = [w + readback(cfg) for w in [first] + [learning_session_with(cfg, s)[1] for s in (40, 41)]]
    batch = Chip(cfg, batch=3).feed_each(streams)
    for b, stream in enumerate(streams):
        single = Chip(cfg).feed(stream)
        assert np.array_equal(batch[b], single), f"copy {b}"


def learning_session_with(cfg, seed):
    """A random learning session on a given configuration (for a batch of one shape)."""
    rng = np.random.default_rng(seed)
    w = P.encode_reset()
    for p in range(cfg.num_cores):
        img = random_learning_image(rng, cfg).with_learning(random_rule(rng))
        for region, data in img.region_words(cfg).items():
            w += P.encode_write(HV_VM, p, region, 0, data)
    for _ in range(16):
        for _ in range(int(rng.integers(0, 2 * cfg.axons_per_core))):
            w += P.encode_inject(HV_VM, int(rng.integers(0, cfg.num_cores)), int(rng.integers(0, cfg.axons_per_core)))
        w += P.encode_run(1)
    return cfg, w


def strip_learning(words):
    """The command stream without the writes to learning regions, SYN words with their fixed bit cleared."""
    out, pos = [], 0
    words = list(words)
    fixed = SYN_LEARNING.fmt["fixed"].mask
    while pos < len(words):
        n = P.command_length(words[pos])
        cmd = words[pos:pos + n]
        pos += n
        if cmd[0] >> 28 == P.Opcode.WRITE:
            region = (cmd[0] >> 12) & 0xF
            if region in LearnRegion._value2member_map_:
                continue
            if region == Region.SYN:
                cmd = cmd[:2] + [c & ~fixed for c in cmd[2:]]
        out += cmd
    return out


@pytest.mark.parametrize("seed", range(4))
def test_learning_off_is_bit_identical_to_a_chip_without_learning(seed):
    cfg, words, *_ = learning_session(seed)
    plain = strip_learning(words)
    base = ChipConfig(**{**cfg.to_dict(), "learning": 0})
    state = []
    for p in range(cfg.num_cores):
        for region in (Region.SYN, Region.STATE_U, Region.STATE_V, Region.ACC):
            state += P.encode_read(HV_VM, p, region, 0, region_specs(cfg)[region].size(cfg))
    off = Chip(cfg).feed(plain + state)          # learning chip, LEARN_RULE never written: enable = 0
    assert np.array_equal(off, Chip(base).feed(plain + state))
    on = Chip(cfg).feed(words + state)           # the same session with its rules: learning changes it
    assert not np.array_equal(on, off)


def test_run_batch_refuses_learning_cores():
    cfg, chip = one_synapse_chip(LearningRule(), weight=0)
    with pytest.raises(ForkError, match="learning"):
        chip.run_batch(2, 3)


def test_image_with_learning_is_refused_by_a_chip_without_learning():
    img = CoreImage(syn_start=[0], syn_len=[1], target=[0], weight=[1], du=[0]).with_learning(LearningRule())
    with pytest.raises(ImageError, match="learning=0"):
        img.region_words(ChipConfig())
    assert img.rule == LearningRule()
    with pytest.raises(ImageError, match="a_plus"):
        LearningRule(a_plus=200).rule_word()


# ---------------------------------------------------------------------------
# the runtime: vm.run(learn=...), vm.weights(), two VMs
# ---------------------------------------------------------------------------
def two_vm_chip(mesh_width: int = 2):
    import networkx as nx

    from neurovm.host.backend import EmulatorBackend
    from neurovm.host.runtime import Chip as HvChip

    cfg = ChipConfig(mesh_width=mesh_width, mesh_height=1, neurons_per_core=16, synapses_per_core=64, axons_per_core=16,
                     fanout_per_core=32, learning=1)
    chip = HvChip(EmulatorBackend(cfg))
    g = nx.DiGraph()
    for i in range(4):
        g.add_node(f"in{i}", population="in", bias_mant=0, vth_mant=1, du=4095, dv=4095)
    g.add_node("out", population="out", vth_mant=20, du=2048, dv=512, report=True)
    for i in range(4):
        g.add_edge(f"in{i}", "out", weight=20)
    a, b = chip.create_vm("alice"), chip.create_vm("bob")
    a.load(g)
    b.load(g)
    return chip, a, b


def test_vm_learns_only_its_own_synapses():
    chip, a, b = two_vm_chip()
    rng = np.random.default_rng(1)
    trains = rng.random((40, 4)) < 0.5
    a.set_learning(LearningRule(a_plus=20, a_minus=4, s_plus=4, s_minus=4, enable=0))
    b_before = [chip.read(HV_VM, p, Region.SYN, 0, chip.config.synapses_per_core).copy() for p in b.pcores]
    w0 = a.weights()
    a.run(40, {"in": trains}, learn=True)
    w1 = a.weights()
    assert any(not np.array_equal(w0[vc], w1[vc]) for vc in w0)
    assert all(np.array_equal(chip.read(HV_VM, p, Region.SYN, 0, chip.config.synapses_per_core), before)
               for p, before in zip(b.pcores, b_before))
    b.run(40, {"in": trains}, learn=False)            # bob runs without learning: nothing of his moves
    assert all(np.array_equal(chip.read(HV_VM, p, Region.SYN, 0, chip.config.synapses_per_core), before)
               for p, before in zip(b.pcores, b_before))
    a.run(10, {"in": trains[:10]})                     # learn=None: enable restored to 0 after the learning run
    assert all(np.array_equal(a.weights()[vc], w1[vc]) for vc in w1)


def test_guest_reads_own_traces_and_cannot_touch_another_vms():
    chip, a, b = two_vm_chip()
    a.set_learning(LearningRule())
    a.run(5, {"in": np.ones((5, 4), bool)}, learn=True)
    assert a.traces()[0]["x"].any()
    # bob's id on alice's core: vcore 0 of VM bob is his own; a guest write of a foreign region faults
    other = P.encode_write(b.id, 5, LearnRegion.PRE_TRACE, 0, [1])      # an unmapped vcore of bob
    faults = [m for m in chip.exchange(other) if isinstance(m, P.Fault)]
    assert faults and faults[0].cause == FaultCause.UNMAPPED


def test_learning_needs_a_learning_chip():
    import networkx as nx

    from neurovm.host.backend import EmulatorBackend
    from neurovm.host.runtime import Chip as HvChip, LearningUnavailable

    chip = HvChip(EmulatorBackend(ChipConfig(mesh_width=1, mesh_height=1)))
    vm = chip.create_vm("v")
    g = nx.DiGraph()
    g.add_node(0, population="in")
    vm.load(g)
    with pytest.raises(LearningUnavailable, match="emulator chip has no learning engine"):
        vm.run(3, learn=True)
    with pytest.raises(NotImplementedError):
        vm.set_learning(LearningRule())


def test_learning_on_the_gpu_engine_is_bit_identical():
    """The xp path (CuPy): the same learning session word for word (skipped without CuPy and a GPU)."""
    from neurovm.emulator.xp import DeviceUnavailableError, namespace

    try:
        namespace("cuda")
    except DeviceUnavailableError as e:
        pytest.skip(f"no GPU engine here: {e}")
    cfg, words, *_ = learning_session(7)
    stream = words + readback(cfg)
    assert np.array_equal(Chip(cfg, device="cuda").feed(stream), Chip(cfg).feed(stream))


def test_relocation_carries_weights_traces_and_rule():
    """A learning VM moved to another core mid-run continues bit for bit (regions 12-15 and SYN are context)."""
    trains = np.random.default_rng(2).random((60, 4)) < 0.5
    results = []
    for move in (False, True):
        chip, a, _ = two_vm_chip(mesh_width=3)
        a.set_learning(LearningRule(a_plus=20, a_minus=6, s_plus=4, s_minus=4))
        first = a.run(30, {"in": trains[:30]})
        if move:
            chip.relocate(a, 0, chip.free_cores[0])
        second = a.run(30, {"in": trains[30:]})
        results.append((first, second, a.weights(), a.traces()))
    (f0, s0, w0, t0), (f1, s1, w1, t1) = results
    assert f0 == f1 and s0 == s1 and len(s0) > 0
    assert all(np.array_equal(w0[vc], w1[vc]) for vc in w0)
    assert all(np.array_equal(t0[vc][k], t1[vc][k]) for vc in t0 for k in t0[vc])


def test_a_backend_without_the_learning_engine_refuses_by_name():
    """A learning run on a backend without the learning engine (the FPGA bridge) is refused, naming it."""
    import networkx as nx

    from neurovm.host.backend import EmulatorBackend
    from neurovm.host.runtime import Chip as HvChip, LearningUnavailable

    class NotYetLearning(EmulatorBackend):   # stands for the FPGA bridge (same protocol, no engine)
        name = "fpga"

    chip = HvChip(NotYetLearning(ChipConfig(mesh_width=1, mesh_height=1, learning=1)))
    vm = chip.create_vm("v")
    g = nx.DiGraph()
    g.add_node(0, population="in")
    vm.load(g)
    with pytest.raises(LearningUnavailable, match="not implemented by the fpga backend"):
        vm.run(2, learn=True)
    assert len(vm.run(2)) == 0          # running without learning still works


def test_mapped_network_file_keeps_the_learning_settings(tmp_path):
    """A .nvmap round trip keeps each core's rule, fixed bits and initial traces (optional members)."""
    from dataclasses import replace

    from neurovm.mapper import Network, map_network
    from neurovm.mapper.compile import MappedNetwork

    cfg = ChipConfig(learning=1)
    net = Network()
    a, b = net.population("a", 8, report=False), net.population("b", 4)
    net.connect(a, b, np.array([[i, i % 4, 5] for i in range(8)]))
    mapped = map_network(net, cfg)
    rule = LearningRule(a_plus=-7, s_minus=3, epoch_log2=2, y_impulse=99)
    img = mapped.images[0]
    ns = len(img.weight)
    learned = replace(img.with_learning(rule, fixed=np.arange(ns) % 2), post_y=np.arange(img.num_neurons) % 128)
    mapped = replace(mapped, images={**mapped.images, 0: learned})
    mapped.save(tmp_path / "net.nvmap")
    back = MappedNetwork.load(tmp_path / "net.nvmap").images[0]
    assert back.rule == rule
    assert np.array_equal(back.fixed, np.arange(ns) % 2)
    assert np.array_equal(back.post_y, learned.post_y)


def test_the_hdl_elaborates_the_learning_engine_only_on_a_learning_chip():
    """learning=1: every core has the §24 memories and the LEARN phase; learning=0: none of it exists."""
    from amaranth.back import rtlil

    from neurovm.hdl.chip import NeuroChip as HdlChip

    small = dict(mesh_width=1, mesh_height=1, neurons_per_core=4, synapses_per_core=8, axons_per_core=4,
                 fanout_per_core=4)
    with_engine = rtlil.convert(HdlChip(ChipConfig(**small, learning=1)))
    without = rtlil.convert(HdlChip(ChipConfig(**small)))
    for name in ("mem_pre_trace", "mem_post_trace", "mem_pend0", "mem_pend1", "mem_spk", "learn_rule", "stdp"):
        assert name in with_engine, name
        assert name not in without, name


def test_the_client_reads_and_writes_learning_regions_on_a_learning_chip():
    """ChipClient.write/read accept regions 12-15 on a learning chip (checked like §5's), refuse them elsewhere."""
    import neurovm
    from neurovm.host.client import RequestError

    chip = neurovm.open("emulator", ChipConfig(learning=1))
    vm = chip.create_vm("a", cores=1)
    pcore = vm.pcores[0] if hasattr(vm, "pcores") else chip.status()[0]["pcores"][0]
    rule = LearningRule(a_plus=5).rule_word()
    chip.write(HV_VM, pcore, LearnRegion.LEARN_RULE, 0, [rule])
    assert int(chip.read(HV_VM, pcore, LearnRegion.LEARN_RULE, 0, 1)[0]) == rule
    with pytest.raises(RequestError, match="PRE_TRACE"):
        chip.write(HV_VM, pcore, LearnRegion.PRE_TRACE, 0, [1 << 20])   # a reserved bit
    plain = neurovm.open("emulator")
    with pytest.raises(RequestError, match="region 15 does not exist on this chip"):
        plain.read(HV_VM, 0, 15, 0, 1)
