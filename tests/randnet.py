"""Seeded random chips, MMU set-ups and core images for the cross-check and fuzz tests."""

from __future__ import annotations

import numpy as np

from neurovm.config import ChipConfig
from neurovm.formats import Perm
from neurovm.image import CoreImage


def _pick(rng, corners, lo, hi, p_corner=0.3):
    """A value in [lo, hi], with probability ``p_corner`` one of the corner values."""
    if rng.random() < p_corner:
        return int(rng.choice(corners))
    return int(rng.integers(lo, hi + 1))


def random_config(rng) -> ChipConfig:
    return ChipConfig(
        mesh_width=int(rng.integers(1, 4)), mesh_height=int(rng.integers(1, 3)),
        neurons_per_core=int(rng.integers(2, 33)), synapses_per_core=int(rng.integers(16, 400)),
        axons_per_core=int(rng.integers(4, 48)), fanout_per_core=int(rng.integers(4, 96)),
        weight_bits=int(rng.integers(2, 9)), max_vms=int(rng.integers(1, 5)), vcores_per_vm=int(rng.integers(1, 9)),
    )


def random_mmu(rng, cfg: ChipConfig) -> dict:
    """``{(vm, vcore): (pcore, perms)}``; about one core in five is left bare-metal."""
    mmu, used = {}, set()
    for p in rng.permutation(cfg.num_cores):
        if rng.random() < 0.2:
            continue
        vm = int(rng.integers(0, cfg.max_vms))
        free = [v for v in range(cfg.vcores_per_vm) if (vm, v) not in used]
        if not free:
            continue
        vc = int(rng.choice(free))
        used.add((vm, vc))
        perms = int(Perm.ALL) if rng.random() < 0.8 else int(rng.integers(0, 8))
        mmu[(vm, vc)] = (int(p), perms)
    return mmu


def random_image(rng, cfg: ChipConfig, activity: float = 1.0) -> CoreImage:
    N, S, A, F = cfg.neurons_per_core, cfg.synapses_per_core, cfg.axons_per_core, cfg.fanout_per_core
    n = int(rng.integers(1, N + 1))
    na = int(rng.integers(1, A + 1))
    ns = int(rng.integers(1, S + 1))
    lens = rng.integers(0, min(ns, 2 * N) + 1, size=na)
    starts = np.array([rng.integers(0, max(ns - l, 1)) for l in lens], dtype=np.int64)
    wmin, wmax = cfg.weight_min, cfg.weight_max
    weight = np.where(rng.random(ns) < 0.2, rng.choice([wmin, wmax, 0, 1, -1], size=ns),
                      rng.integers(wmin, wmax + 1, size=ns))
    nf = int(rng.integers(0, F + 1))
    fo_len = rng.integers(0, min(nf, 6) + 1, size=n) if nf else np.zeros(n, dtype=np.int64)
    fo_start = np.array([rng.integers(0, max(nf - l, 1)) for l in fo_len], dtype=np.int64)
    vspace = max(cfg.vcores_per_vm, cfg.num_cores)
    big = rng.random() < 0.15  # saturating regime: huge weights, biases and thresholds
    return CoreImage(
        syn_start=starts, syn_len=lens,
        target=rng.integers(0, N, size=ns), weight=weight,
        du=[_pick(rng, [0, 4095, 4094, 1], 0, 4095) for _ in range(n)],
        dv=[_pick(rng, [0, 4095, 1], 0, 4095) for _ in range(n)],
        refract=[_pick(rng, [0, 63], 0, 4, 0.1) for _ in range(n)],
        bias_mant=[_pick(rng, [-4096, 4095, 0], -300, 300) if rng.random() < 0.5 * activity else 0
                   for _ in range(n)],
        bias_exp=rng.integers(0, 8 if big else 3, size=n),
        vth_mant=[_pick(rng, [0, 2**17 - 1, 1], 0, 2**17 - 1 if big else 400) for _ in range(n)],
        fo_start=fo_start, fo_len=fo_len, report=rng.random(n) < 0.7,
        fo_axon=rng.integers(0, A, size=nf), fo_vcore=rng.integers(0, vspace, size=nf),
        weight_exp=int(rng.integers(-8, 8)) if not big else int(rng.integers(4, 8)),
        n_active=None if rng.random() < 0.8 else int(rng.integers(0, n + 1)),
    )


def random_learning_rule(rng):
    """A random §24 rule with the corners: rates -128/127/0, shifts 0/15, decays 0/4095, impulses 0/127."""
    from neurovm.image import LearningRule

    return LearningRule(a_plus=_pick(rng, [-128, 127, 0], -128, 127), a_minus=_pick(rng, [-128, 127, 0], -128, 127),
                        s_plus=_pick(rng, [0, 15], 0, 15), s_minus=_pick(rng, [0, 15], 0, 15),
                        epoch_log2=_pick(rng, [0], 0, 3), x_decay=_pick(rng, [0, 4095], 0, 4095),
                        x_impulse=_pick(rng, [0, 127], 0, 127), y_decay=_pick(rng, [0, 4095], 0, 4095),
                        y_impulse=_pick(rng, [0, 127], 0, 127), enable=int(rng.random() < 0.85))


def random_learning_image(rng, cfg: ChipConfig) -> CoreImage:
    """:func:`random_image` with a random rule, ``fixed`` bits, initial traces and excitable neurons
    (low thresholds: enough post spikes for LTP and LTD, so weights move and saturate)."""
    from neurovm.config import TRACE_MAX

    img = random_image(rng, cfg, activity=2.0)
    ns, na, n = len(img.weight), len(img.syn_start), img.num_neurons
    vth = np.where(rng.random(n) < 0.7, rng.integers(0, 8, size=n), img.vth_mant)
    img = CoreImage(**{**img.__dict__, "vth_mant": vth,
                       "pre_x": rng.integers(0, TRACE_MAX + 1, size=na) if rng.random() < 0.5 else [],
                       "post_y": rng.integers(0, TRACE_MAX + 1, size=n) if rng.random() < 0.5 else []})
    return img.with_learning(random_learning_rule(rng), fixed=(rng.random(ns) < 0.2).astype(np.int64))


def _learning_readback(cfg: ChipConfig) -> list[int]:
    """READs of every core's learned state: SYN (weights, fixed), the traces, the rule registers."""
    from neurovm.config import HV_VM
    from neurovm.formats import LearnRegion, Region, region_specs
    from neurovm.host import protocol as P

    specs, w = region_specs(cfg), []
    for p in range(cfg.num_cores):
        for region in (Region.SYN, LearnRegion.PRE_TRACE, LearnRegion.POST_TRACE, LearnRegion.LEARN_CFG,
                       LearnRegion.LEARN_RULE):
            w += P.encode_read(HV_VM, p, region, 0, specs[region].size(cfg))
    return w


def _trace_write(rng, cfg: ChipConfig, vm: int, vc: int) -> list[int]:
    """A WRITE of random (legal) trace words mid-run, as a context restore does (§24.1)."""
    from neurovm.formats import LEARN_REGIONS, LearnRegion
    from neurovm.host import protocol as P

    region = LearnRegion.PRE_TRACE if rng.random() < 0.5 else LearnRegion.POST_TRACE
    size = LEARN_REGIONS[region].size(cfg)
    fmt = LEARN_REGIONS[region].fmt
    n = int(rng.integers(1, size + 1))
    addr = int(rng.integers(0, size - n + 1))
    words = [fmt.pack(**{f: int(rng.integers(0, fmt[f].max + 1)) for f in fmt.fields}) for _ in range(n)]
    return P.encode_write(vm, vc, region, addr, words)


def random_workload(rng, cfg: ChipConfig, steps: int = 10, learning: bool = False) -> list[int]:
    """A whole random multi-VM session as one command stream (for backend co-simulation).

    ``learning=True`` (a chip with ``cfg.learning = 1``): the images carry random rules, ``fixed``
    bits and traces (:func:`random_learning_image`), traces are sometimes rewritten between RUNs,
    and the final reads add every core's SYN, traces and rule.  ``learning=False`` (the default)
    draws exactly the same random numbers as before this option existed.

    RESET, random translation tables (some cores left bare-metal), random images
    written by the hypervisor and by guests, injections through the hypervisor
    and through guests (some refused), RUNs of random length, half of them gated
    to a random set of domains, guest accesses and counter reads that may fault,
    and finally every core's state and architectural counters (0..6).
    """
    from neurovm.config import HV_VM
    from neurovm.formats import ALL_DOMAINS, Region
    from neurovm.host import protocol as P

    mmu = random_mmu(rng, cfg)
    owner = {p: (vm, vc) for (vm, vc), (p, perms) in mmu.items()}
    w = P.encode_reset()
    for (vm, vc), (p, perms) in mmu.items():
        w += P.encode_mmu_map(vm, vc, p, perms)
    for p in range(cfg.num_cores):
        if rng.random() < 0.9:
            vm, vc = owner.get(p, (HV_VM, p)) if rng.random() < 0.5 else (HV_VM, p)
            img = random_learning_image(rng, cfg) if learning else random_image(rng, cfg)
            for region, data in img.region_words(cfg).items():
                w += P.encode_write(vm, vc, region, 0, data)
    done = 0
    while done < steps:
        for _ in range(int(rng.integers(0, 6))):
            p = int(rng.integers(0, cfg.num_cores))
            vm, vc = owner.get(p, (HV_VM, p)) if rng.random() < 0.7 else (HV_VM, p)
            w += P.encode_inject(vm, vc, int(rng.integers(0, cfg.axons_per_core)))
        if rng.random() < 0.3:   # a guest touching some (maybe foreign, maybe unmapped) vcore
            vm = int(rng.integers(0, cfg.max_vms))
            vc = int(rng.integers(0, cfg.vcores_per_vm))
            w += P.encode_read(vm, vc, Region.STATE_V, 0, 1) if rng.random() < 0.5 else \
                P.encode_write(vm, vc, Region.STATE_U, 0, [int(rng.integers(-50, 50)) & 0xFFFF_FFFF])
        if learning and rng.random() < 0.2:
            p = int(rng.integers(0, cfg.num_cores))
            w += _trace_write(rng, cfg, *owner.get(p, (HV_VM, p)))
        k = int(rng.integers(1, 4))
        # half the RUNs are gated (§6.1): a random nonempty set of domains steps, the rest is frozen
        domains = ALL_DOMAINS if rng.random() < 0.5 else int(rng.integers(1, ALL_DOMAINS + 1))
        w += P.encode_run(k, domains=domains)
        if rng.random() < 0.2:   # a guest reading its own counters, the hypervisor-only ones too (a fault)
            vm = int(rng.integers(0, cfg.max_vms))
            w += P.encode_read_counters(vm, int(rng.integers(0, cfg.vcores_per_vm)), 0, int(rng.integers(1, 9)))
        done += k
    N = cfg.neurons_per_core
    for p in range(cfg.num_cores):
        for region in (Region.STATE_U, Region.STATE_V, Region.STATE_REF, Region.ACC):
            w += P.encode_read(HV_VM, p, region, 0, N)
        w += P.encode_read_counters(HV_VM, p, 0, 7)
    if learning:
        w += _learning_readback(cfg)
    return w
