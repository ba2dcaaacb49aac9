"""Cycles per step of a gated RUN (issue #14, spec §6.1) on the Verilator model of the chip.

Usage::

    .venv/bin/python benchmarks/gated_step.py [--steps 200]

Two tenants on a 2x2 chip, two cores each, each running a random recurrent
network driven by random input. The same work is run three ways on one model:
both VMs in one RUN (``chip.run`` with both), each VM alone with the other
frozen (``vm.run``), and, for reference, the chip-wide RUN of every core.
Reported: clock cycles per step (the model's own cycle counter) and the spikes
each VM produced, which must not depend on how it was run.
"""

from __future__ import annotations

import argparse

import numpy as np

from neurovm.config import ChipConfig
from neurovm.host import Chip
from neurovm.host.verilator import VerilatorBackend
from neurovm.mapper import Network

CFG = ChipConfig(mesh_width=2, mesh_height=2, neurons_per_core=64, synapses_per_core=2048, axons_per_core=128,
                 fanout_per_core=256, max_vms=2, vcores_per_vm=2)


def network(seed: int) -> Network:
    rng = np.random.default_rng(seed)
    net = Network()
    inp = net.population("in", 16, report=False)
    out = net.population("out", 100, du=2048, dv=512, vth_mant=20, bias_mant=10, refract=1)
    net.fixed_probability(inp, out, 0.3, weight=40, seed=seed)
    net.connect(out, out, [(i, j, int(rng.integers(-40, 60))) for i in range(100) for j in range(100)
                           if i != j and rng.random() < 0.05])
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    steps = args.steps
    backend = VerilatorBackend(CFG)
    chip = Chip(backend)
    a = chip.create_vm("a", cores=2).load(network(1))
    b = chip.create_vm("b", cores=2).load(network(2))
    rng = np.random.default_rng(0)
    ins = {vm: {"in": rng.random((steps, 16)) < 0.3} for vm in (a, b)}

    def cycles_of(fn):
        for vm in (a, b):          # every run starts from zeroed state: the spikes must then agree
            vm.reset_state()
        c0 = backend.cycles
        out = fn()
        return backend.cycles - c0, out

    both, out_both = cycles_of(lambda: chip.run(steps, ins))
    alone_a, out_a = cycles_of(lambda: a.run(steps, ins[a]))
    alone_b, out_b = cycles_of(lambda: b.run(steps, ins[b]))
    every, _ = cycles_of(lambda: chip.run(steps))
    assert out_both[a] == out_a and out_both[b] == out_b, "a VM's spikes depend on how it was run"
    print(f"{steps} steps, 2x2 chip, two VMs of 2 cores ({len(out_a)} and {len(out_b)} spikes)")
    print(f"{'RUN':<34}{'cycles/step':>12}")
    for name, cyc in (("both VMs (one gated RUN)", both), ("VM a alone (b frozen)", alone_a),
                      ("VM b alone (a frozen)", alone_b), ("every core, no input", every)):
        print(f"{name:<34}{cyc / steps:>12.1f}")
    print(f"alone a + alone b = {(alone_a + alone_b) / steps:.1f} cycles per step of both")


if __name__ == "__main__":
    main()
