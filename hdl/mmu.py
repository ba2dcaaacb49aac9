"""The virtualization MMU (docs/architecture.md §7): per-VM translation tables
and per-core owner registers, with combinational lookups.

Only the host interface writes it, and only for the privileged MMU_MAP and
RESET commands.  Three lookup ports answer in the same clock:

* **host**: ``(vm, vcore)`` of a guest command -> mapped?, physical core, perms;
* **fan-out**: ``(source pcore, vcore)`` of a fan-out entry -> delivered to which
  physical core, or the fault cause (UNMAPPED, PERMISSION, CROSS_VM), plus the
  source core's domain ``(vm, vcore)`` for SPIKE and FAULT messages;
* **map**: an MMU_MAP entry -> would it hit a core owned by another
  ``(vm, vcore)`` (CORE_OWNED); ``map_apply`` then commits it.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from neurovm.config import HV_VM, VM_BITS, ChipConfig
from neurovm.formats import MMU_ENTRY, OUTPUT_FORMATS, FaultCause, OutType, Perm

from .layouts import MMU_ENTRY_LAYOUT

__all__ = ["VirtMMU"]


#: Widths taken from the shared formats: a vcore id (command/MMU entry), the permission bits, a fault cause.
VCORE_BITS = MMU_ENTRY["vcore"].width
PERM_BITS = MMU_ENTRY["perms"].width
CAUSE_BITS = OUTPUT_FORMATS[OutType.FAULT]["cause"].width


class VirtMMU(wiring.Component):
    """Translation tables (``max_vms x vcores_per_vm`` entries) and owner registers (one per core).

    Parameters
    ----------
    config : ChipConfig
    """

    def __init__(self, config: ChipConfig):
        self.config = config
        cb = max(1, (config.num_cores - 1).bit_length())
        super().__init__({
            # host-command lookup (guest vm < max_vms)
            "h_vm": In(VM_BITS), "h_vcore": In(VCORE_BITS),
            "h_mapped": Out(1), "h_pcore": Out(cb), "h_perms": Out(PERM_BITS),
            # fan-out lookup from physical core f_src
            "f_src": In(cb), "f_vcore": In(VCORE_BITS),
            "f_ok": Out(1), "f_pcore": Out(cb), "f_cause": Out(CAUSE_BITS),
            "dom_vm": Out(VM_BITS), "dom_vcore": Out(VCORE_BITS),
            # every core's domain (§6.1): its owner's VM, or HV_VM for a bare-metal core
            "core_dom": Out(VM_BITS).array(config.num_cores),
            # MMU_MAP
            "map_entry": In(MMU_ENTRY_LAYOUT), "map_owned": Out(1), "map_apply": In(1),
            "reset": In(1),
        })
        self.core_bits = cb

    def elaborate(self, platform):
        m = Module()
        c = self.config
        C, V, VMS = c.num_cores, c.vcores_per_vm, c.max_vms
        cb = self.core_bits
        E = VMS * V
        t_valid = Array(Signal(name=f"t_valid_{i}") for i in range(E))
        t_pcore = Array(Signal(cb, name=f"t_pcore_{i}") for i in range(E))
        t_perms = Array(Signal(PERM_BITS, name=f"t_perms_{i}") for i in range(E))
        o_valid = Array(Signal(name=f"o_valid_{p}") for p in range(C))
        o_vm = Array(Signal(VM_BITS, name=f"o_vm_{p}") for p in range(C))
        o_vcore = Array(Signal(VCORE_BITS, name=f"o_vcore_{p}") for p in range(C))
        # the registers of the last elaboration, which the formal harness states its properties over
        self.owner_valid, self.owner_vm, self.owner_vcore = o_valid, o_vm, o_vcore
        self.table_valid, self.table_pcore = t_valid, t_pcore

        def lookup(vm, vcore, prefix):
            """(mapped, pcore, perms) of guest (vm, vcore): entry valid and the owner agrees."""
            idx = Signal(range(max(2, E)), name=f"{prefix}_idx")
            in_range = (vm < VMS) & (vcore < V)
            m.d.comb += idx.eq(vm * V + vcore)
            pc = Signal(cb, name=f"{prefix}_pc")
            m.d.comb += pc.eq(t_pcore[idx])
            mapped = Signal(name=f"{prefix}_mapped")
            m.d.comb += mapped.eq(in_range & t_valid[idx] & (pc < C) & o_valid[pc]
                                  & (o_vm[pc] == vm) & (o_vcore[pc] == vcore))
            return mapped, pc, t_perms[idx]

        mapped, pc, perms = lookup(self.h_vm, self.h_vcore, "h")
        m.d.comb += [self.h_mapped.eq(mapped), self.h_pcore.eq(pc), self.h_perms.eq(perms)]

        for p in range(C):
            m.d.comb += self.core_dom[p].eq(Mux(o_valid[p], o_vm[p], HV_VM))

        # fan-out: the source core's domain decides (§7.3)
        src_owned = o_valid[self.f_src]
        m.d.comb += [
            self.dom_vm.eq(HV_VM), self.dom_vcore.eq(self.f_src),
        ]
        with m.If(src_owned):
            m.d.comb += [self.dom_vm.eq(o_vm[self.f_src]), self.dom_vcore.eq(o_vcore[self.f_src])]
        fm, fpc, fperms = lookup(o_vm[self.f_src], self.f_vcore, "f")
        with m.If(src_owned):
            with m.If(~fm):
                m.d.comb += self.f_cause.eq(FaultCause.UNMAPPED)
            with m.Elif(~(fperms & Perm.S).any()):
                m.d.comb += self.f_cause.eq(FaultCause.PERMISSION)
            with m.Else():
                m.d.comb += [self.f_ok.eq(1), self.f_pcore.eq(fpc)]
        with m.Else():   # bare-metal: the vcore field is a physical core
            with m.If(self.f_vcore >= C):
                m.d.comb += self.f_cause.eq(FaultCause.UNMAPPED)
            with m.Elif(o_valid[self.f_vcore[:cb]]):
                m.d.comb += self.f_cause.eq(FaultCause.CROSS_VM)
            with m.Else():
                m.d.comb += [self.f_ok.eq(1), self.f_pcore.eq(self.f_vcore)]

        # MMU_MAP (§7.4); the host interface has checked the entry's fields already
        e = self.map_entry
        tgt = e.pcore[:cb]
        m.d.comb += self.map_owned.eq(e.valid & o_valid[tgt]
                                      & ((o_vm[tgt] != e.tvm) | (o_vcore[tgt] != e.vcore)))
        eidx = Signal(range(max(2, E)))
        m.d.comb += eidx.eq(e.tvm * V + e.vcore)
        with m.If(self.reset):
            for i in range(E):
                m.d.sync += t_valid[i].eq(0)
            for p in range(C):
                m.d.sync += o_valid[p].eq(0)
        with m.Elif(self.map_apply):
            with m.If(t_valid[eidx]):          # release the old core of (tvm, vcore)
                m.d.sync += o_valid[t_pcore[eidx]].eq(0)
            with m.If(e.valid):
                m.d.sync += [
                    t_valid[eidx].eq(1), t_pcore[eidx].eq(tgt), t_perms[eidx].eq(e.perms),
                    o_valid[tgt].eq(1), o_vm[tgt].eq(e.tvm), o_vcore[tgt].eq(e.vcore),
                ]
            with m.Else():
                m.d.sync += t_valid[eidx].eq(0)
        return m
