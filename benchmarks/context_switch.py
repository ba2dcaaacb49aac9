"""The cost of a VM context switch (issue #15, spec §23): save a VM's whole context to host memory
and restore it onto other physical cores.

Usage::

    .venv/bin/python benchmarks/context_switch.py [--verilator] [--repeats 20]

A two-core VM runs a random recurrent network for 50 steps with input (so ``ACC`` holds pending
input), then is swapped out (:meth:`Chip.save_context`: every region of both cores read through the
hypervisor's READ), destroyed, and restored into a new VM on the other two cores
(:meth:`Chip.restore_context`: cores RESET, every non-zero word written).  Reported per switch
(save + restore): words read and written, command words sent, emulator milliseconds (median of
``--repeats``) and, with ``--verilator``, clock cycles of the Verilator model.  Each case checks
that the swapped VM's next 50 steps are bit-identical to those of a VM that never left.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from neurovm.config import DEFAULT_CONFIG, ChipConfig
from neurovm.host import Chip, EmulatorBackend
from neurovm.mapper import Network

SMALL = ChipConfig(mesh_width=2, mesh_height=2, neurons_per_core=64, synapses_per_core=2048, axons_per_core=128,
                   fanout_per_core=256, max_vms=2, vcores_per_vm=2)


def network(seed: int, n: int) -> Network:
    rng = np.random.default_rng(seed)
    net = Network()
    inp = net.population("in", 16, report=False)
    out = net.population("out", n, du=2048, dv=512, vth_mant=20, bias_mant=10, refract=1)
    net.fixed_probability(inp, out, 0.3, weight=40, seed=seed)
    net.connect(out, out, [(i, j, int(rng.integers(-40, 60))) for i in range(n) for j in range(n)
                           if i != j and rng.random() < 0.05])
    return net


class _Counting:
    """Wraps a backend's ``send`` to count command words."""

    def __init__(self, backend):
        self.backend, self.words = backend, 0
        self._send = backend.send

        def send(words):
            self.words += int(np.asarray(words).size)
            self._send(words)
        backend.send = send


def switch_once(backend, config: ChipConfig, n: int) -> dict:
    """One VM run, switched to other cores, run again; the costs and whether the spikes match."""
    chip = Chip(backend)
    net = network(1, n)
    rng = np.random.default_rng(0)
    ins = [rng.random((50, 16)) < 0.3 for _ in range(2)]
    ref_chip = Chip(EmulatorBackend(config))
    ref = ref_chip.create_vm("ref", cores=2).load(net)
    ref.run(50, {"in": ins[0]})
    ref_out = ref.run(50, {"in": ins[1]})
    vm = chip.create_vm("a", cores=2).load(net)
    vm.run(50, {"in": ins[0]})
    counter = _Counting(backend)
    cycles = getattr(backend, "cycles", None)
    c0 = cycles if cycles is not None else 0
    t0 = time.perf_counter()
    ctx = chip.save_context(vm)
    w_save = counter.words
    vm.destroy()
    blocker = chip.create_vm("blocker", cores=2)          # the old cores are taken: the VM lands elsewhere
    moved = chip.create_vm("a", cores=2)
    chip.restore_context(moved, ctx)
    dt = time.perf_counter() - t0
    c1 = backend.cycles if cycles is not None else 0
    out = moved.run(50, {"in": ins[1]})
    blocker.destroy()
    written = int(sum(np.count_nonzero(a) for a in ctx.regions.values()))
    return {"words_read": ctx.words, "words_written": written, "cmd_words": counter.words, "save_cmd": w_save,
            "ms": dt * 1e3, "cycles": c1 - c0 if cycles is not None else None, "identical": out == ref_out,
            "pcores": (vm.pcores, moved.pcores)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verilator", action="store_true", help="also measure clock cycles on the Verilator model")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    print("| chip | backend | words read (save) | words written (restore) | command words | emulator ms "
          "(median) | Verilator cycles | bit-identical |")
    print("|---|---|---|---|---|---|---|---|")
    for label, cfg, n in (("default 2x2, 256 n/core", DEFAULT_CONFIG, 300), ("small 2x2, 64 n/core", SMALL, 100)):
        runs = [switch_once(EmulatorBackend(cfg), cfg, n) for _ in range(args.repeats)]
        r = runs[0]
        ms = statistics.median(x["ms"] for x in runs)
        cyc = "-"
        if args.verilator and cfg is SMALL:
            from neurovm.host.verilator import VerilatorBackend

            v = switch_once(VerilatorBackend(cfg), cfg, n)
            cyc = f"{v['cycles']:,}" + ("" if v["identical"] else " (MISMATCH)")
        print(f"| {label} | emulator | {r['words_read']:,} | {r['words_written']:,} | {r['cmd_words']:,} | "
              f"{ms:.1f} | {cyc} | {all(x['identical'] for x in runs)} |")


if __name__ == "__main__":
    main()
