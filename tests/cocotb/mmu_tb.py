"""cocotb testbench of :class:`neurovm.hdl.mmu.VirtMMU` against the emulator's MMU.

Random MMU_MAP entries (mapping, remapping, unmapping, conflicting owners)
and random lookups on both ports every clock; the golden model is an emulator
chip fed the same MMU_MAP commands, queried through its translation functions.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from agents import value_of
from neurovm.config import ChipConfig
from neurovm.emulator import Chip
from neurovm.formats import MMU_ENTRY, FaultCause
from neurovm.host import protocol as P

CFG = ChipConfig.from_dict(json.loads(os.environ.get("NEUROVM_CFG", "{}")))
C, V, VMS = CFG.num_cores, CFG.vcores_per_vm, CFG.max_vms


def golden_fanout(chip: Chip, src: int, vcore: int) -> tuple[bool, int, int]:
    """(ok, pcore, cause) of a fan-out entry naming ``vcore`` from core ``src`` (§7.3)."""
    d = int(chip._translation_lut()[src, vcore])
    return (True, d, 0) if d >= 0 else (False, 0, -d)


@cocotb.test()
async def random_maps_and_lookups(dut):
    rng = np.random.default_rng(int(os.environ.get("NEUROVM_SEED", "1")))
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.map_apply.value = 0
    dut.reset.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    chip = Chip(CFG)
    checked = {"host": 0, "fanout": 0, "owned": 0, "applied": 0, "faults": set()}
    for i in range(int(os.environ.get("NEUROVM_OPS", "4000"))):
        await RisingEdge(dut.clk)
        # a legal MMU_MAP entry (the host interface has range-checked it already)
        tvm, vc = int(rng.integers(0, VMS)), int(rng.integers(0, V))
        valid, pc, perms = int(rng.random() < 0.8), int(rng.integers(0, C)), int(rng.integers(0, 8))
        entry = MMU_ENTRY.pack(tvm=tvm, vcore=vc, valid=valid, perms=perms, pcore=pc if valid else 0)
        hvm, hvc = int(rng.integers(0, VMS)), int(rng.integers(0, min(256, V + 2)))
        src, fvc = int(rng.integers(0, C)), int(rng.integers(0, min(256, max(V, C) + 2)))
        dut.map_entry.value = entry
        dut.h_vm.value, dut.h_vcore.value = hvm, hvc
        dut.f_src.value, dut.f_vcore.value = src, fvc
        apply = rng.random() < 0.5
        reset = rng.random() < 0.01
        await ReadOnly()
        # --- lookups against the golden tables (state before this clock's update)
        pcore = chip._translate(hvm, hvc) if hvc < V else None
        got = (value_of(dut.h_mapped), value_of(dut.h_pcore), value_of(dut.h_perms))
        if pcore is None:
            assert got[0] == 0, f"op {i}: ({hvm},{hvc}) should be unmapped, MMU says {got}"
        else:
            assert got == (1, pcore, int(chip.mmu_perms[hvm, hvc])), f"op {i}: ({hvm},{hvc}) {got}"
        checked["host"] += 1
        ok, dest, cause = golden_fanout(chip, src, fvc) if fvc < 256 else (False, 0, FaultCause.UNMAPPED)
        fgot = (value_of(dut.f_ok), value_of(dut.f_pcore) if ok else 0, value_of(dut.f_cause))
        assert fgot == (int(ok), dest, cause), f"op {i}: fan-out core {src} -> vcore {fvc}: {fgot}, golden {(ok, dest, cause)}"
        dvm, dvc = chip.domain(src)
        assert (value_of(dut.dom_vm), value_of(dut.dom_vcore)) == (dvm, dvc)
        checked["fanout"] += 1
        checked["faults"].add(cause)
        owned = valid and chip.owner_valid[pc] and (chip.owner_vm[pc], chip.owner_vcore[pc]) != (tvm, vc)
        assert value_of(dut.map_owned) == int(owned), f"op {i}: CORE_OWNED check"
        checked["owned"] += int(owned)
        # --- the update at the next edge
        await RisingEdge(dut.clk)
        if reset:
            dut.reset.value = 1
            chip.feed(P.encode_reset())
        elif apply and not owned:
            dut.map_apply.value = 1
            chip.feed([P.encode_mmu_map(tvm, vc, pc, perms, valid=bool(valid))[0], entry])
            checked["applied"] += 1
        await RisingEdge(dut.clk)
        dut.map_apply.value = 0
        dut.reset.value = 0
    dut._log.info("checked %s", checked)
    assert checked["owned"] > 10 and checked["applied"] > 100
    assert {0, FaultCause.UNMAPPED, FaultCause.PERMISSION, FaultCause.CROSS_VM} <= checked["faults"], checked["faults"]
