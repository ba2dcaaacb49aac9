"""The main demo (``make sim``): two tenant VMs share one default 2x2 chip.

* VM 0 ("ring"): a synfire ring -- 4 groups of 16 neurons on 2 virtual cores,
  each group exciting the next; one injected volley keeps it circling.
* VM 1 ("noise"): 192 excitatory/inhibitory neurons on 2 virtual cores,
  driven by random input spikes injected every step.

It prints per-VM spike summaries and telemetry, shows that a cross-VM access
faults, and exits non-zero if anything is off (no activity, a leak between
VMs, an unexpected fault).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .config import DEFAULT_CONFIG
from .formats import Counter, Region

RING_GROUP, RING_GROUPS = 16, 4
NOISE_N = 192


def ring_network():
    n = RING_GROUP * RING_GROUPS
    group = np.arange(n) // RING_GROUP
    src, dst = np.nonzero(group[None, :] == (group[:, None] + 1) % RING_GROUPS)
    core_of = (group >= RING_GROUPS // 2).astype(np.int64)
    params = dict(du=4095, dv=2048, refract=1, bias_mant=0, bias_exp=0, vth_mant=150)
    return n, core_of, src, dst, np.full(src.size, 20), params


def noise_network(rng):
    n = NOISE_N
    conn = rng.random((n, n)) < 0.1
    np.fill_diagonal(conn, False)
    src, dst = np.nonzero(conn)
    inhibitory = np.arange(n) % 5 == 0
    w = np.where(inhibitory[src], -rng.integers(20, 60, src.size), rng.integers(5, 30, src.size))
    params = dict(du=512, dv=256, refract=2, bias_mant=0, bias_exp=0, vth_mant=100)
    return n, (np.arange(n) >= n // 2).astype(np.int64), src, dst, w, params


def tenant_words(config, vm: int, network, placement: dict[int, int]) -> list[int]:
    """Command words that map a demo ``network`` (:func:`ring_network`, :func:`noise_network`) as
    VM ``vm``, vcore -> pcore by ``placement``, and write its core images (the words the
    benchmarks and the Verilator build's training run feed the model directly)."""
    from .host import protocol as P
    from .netbuild import images_from_edges

    _, core_of, src, dst, w, params = network
    words = [word for vcore, pcore in placement.items() for word in P.encode_mmu_map(vm, vcore, pcore)]
    for vcore, img in images_from_edges(config, core_of, src, dst, w, params).items():
        for region, data in img.region_words(config).items():
            words += P.encode_write(vm, vcore, region, 0, data)
    return words


def run_demo(backend: str = "emulator", steps: int = 200, seed: int = 1, check: bool = False,
             waves: str | None = None) -> int:
    from .host import CosimMismatch, open as open_chip

    rng = np.random.default_rng(seed)
    cfg = DEFAULT_CONFIG
    chip = open_chip(backend, cfg, check=check, waves=waves, quiet=False)
    print(f"NeuroVM demo on the {backend} backend: {cfg.mesh_width}x{cfg.mesh_height} mesh, "
          f"{cfg.num_cores} cores x {cfg.neurons_per_core} neurons"
          + ("; every output word checked against the emulator" if check else ""))
    try:
        return _demo(chip, cfg, rng, steps, backend)
    except CosimMismatch as e:
        print(f"\nERROR: the {backend} model disagrees with the golden emulator: {e}")
        return 2
    finally:
        chip.backend.close()


def _demo(chip, cfg, rng, steps, backend) -> int:
    from .emulator import DEFAULT_ENERGY
    from .host import ChipError
    from .netbuild import images_from_edges

    tenants = {0: ("ring", ring_network(), {0: 0, 1: 3}), 1: ("noise", noise_network(rng), {0: 1, 1: 2})}
    for vm, (name, (n, core_of, src, dst, w, params), placement) in tenants.items():
        for vcore, pcore in placement.items():
            chip.map(vm, vcore, pcore)
        for vcore, img in images_from_edges(cfg, core_of, src, dst, w, params).items():
            chip.load_core(vm, vcore, img)
        print(f"  VM {vm} '{name}': {n} neurons, {src.size} synapses, vcores -> cores {placement}")

    # a guest reaching for a core that is not its own is refused, and nothing changes
    try:
        chip.read(1, 3, Region.STATE_V, 0, 1)
        print("ERROR: VM 1 read a core it does not own")
        return 1
    except ChipError as e:
        print(f"  isolation check: {e}")

    chip.inject(0, 0, np.arange(RING_GROUP))  # one volley into ring group 0 (axons 0..15)
    noise_core_of = tenants[1][1][1]
    t0 = time.perf_counter()
    spikes, faults = [], []
    for s in range(0, steps, 50):
        n = min(50, steps - s)
        inject = {}
        for k in range(n):  # ~8 random input spikes per step into the noise VM
            axons = rng.choice(NOISE_N, size=8, replace=False)
            inject[k] = [(1, int(noise_core_of[a]), int(a)) for a in axons]
        res = chip.run(n, inject=inject)
        spikes.append(res.spikes)
        faults += res.faults
        print(f"  step {s + n}/{steps}", flush=True)
    wall = time.perf_counter() - t0
    spikes = np.concatenate(spikes)
    cycles = getattr(getattr(chip.backend, "primary", chip.backend), "cycles", None)
    print(f"ran {steps} steps in {wall:.2f} s" + (f"; {cycles:,} clock cycles ({cycles / steps:,.0f} per step)"
                                                  if cycles else ""))

    ok = not faults
    for vm, (name, (n, *_), placement) in tenants.items():
        mine = spikes[spikes["vm"] == vm]
        # the counters a guest reads (0..5, §9.1): its own activity only, the same on every backend
        counters = np.array([chip.counters(vm, vc, arch_only=True) for vc in placement])
        total = counters.sum(axis=0)
        energy = DEFAULT_ENERGY.energy_pj(counters)
        first = sorted(set(mine["timestep"].tolist()))[:6]
        print(f"\nVM {vm} '{name}':")
        print(f"  spikes {len(mine):6d}  mean rate {len(mine) / (n * steps):.3f} spikes/neuron/step"
              f"  first active steps {first}")
        for vc in placement:
            print(f"    vcore {vc}: {int(np.sum(mine['vcore'] == vc)):6d} spikes")
        print(f"  synaptic ops {total[Counter.SYN_OPS]:8d}   neuron updates {total[Counter.NEURON_UPDATES]:8d}"
              f"   packets {total[Counter.PACKETS_SENT]:6d}   hops {total[Counter.HOPS_X] + total[Counter.HOPS_Y]:6d}")
        print(f"  energy estimate {energy / 1e6:.3f} uJ  (Loihi Table-2 coefficients)")
        if len(mine) == 0:
            print(f"ERROR: VM {vm} produced no spikes")
            ok = False
        if set(mine["vcore"].tolist()) - set(placement):
            print(f"ERROR: VM {vm} reported spikes from vcores it does not have")
            ok = False
    if faults:
        print(f"ERROR: {len(faults)} unexpected faults, first: {faults[0]}")
    compared = getattr(chip.backend, "compared", None)
    if compared is not None:
        print(f"\nco-simulation: {compared:,} output words identical to the golden emulator")
    print("\ndemo OK" if ok else "\ndemo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo())
