"""What a physical core holds, read through the hypervisor: the snapshots the isolation, gating,
adversarial and hardening suites compare before and after an operation."""

from __future__ import annotations

from neurovm.config import HV_VM
from neurovm.formats import REGIONS, Region


def core_words(chip, pcore: int, arch_only: bool = False) -> dict:
    """Every word of every region of physical core ``pcore`` and its counters, by region name.

    ``arch_only`` leaves out BUSY_CYCLES (implementation-defined, §9.1), to compare two chips.
    """
    cfg = chip.config
    snap = {r.name: chip.read(HV_VM, pcore, r, 0, REGIONS[r].size(cfg)).tolist() for r in Region}
    snap["counters"] = chip.counters(HV_VM, pcore, arch_only=arch_only).tolist()
    return snap


def cores_words(chip, pcores, arch_only: bool = False) -> dict:
    """:func:`core_words` of each of ``pcores``, keyed ``(pcore, region name)``."""
    return {(p, k): v for p in pcores for k, v in core_words(chip, p, arch_only).items()}
