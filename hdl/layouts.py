"""Amaranth ``data.StructLayout`` views of the shared word formats.

Generated from :mod:`neurovm.formats` (the single source), with reserved
gaps filled by padding members named ``_rsvd<lsb>``; every layout is exactly
``fmt.bits`` wide (32 for host words).  ``tests/test_formats.py`` checks the
offsets against the tables.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from neurovm.config import ChipConfig
from neurovm.formats import (COMMAND_FORMATS, COUNTER_BITS, LINK_FORMATS, MMU_ENTRY, OUTPUT_FORMATS, REGIONS, Counter,
                             Region, WordFormat, region_specs)

__all__ = [
    "struct_layout", "storage_layout", "COMMAND_LAYOUTS", "OUTPUT_LAYOUTS", "REGION_LAYOUTS",
    "MMU_ENTRY_LAYOUT", "LINK_LAYOUTS", "CORE_COUNTERS", "CORE_COUNTERS_LAYOUT", "counter_port",
    "region_layout",
]


def struct_layout(fmt: WordFormat) -> data.StructLayout:
    """The StructLayout of a :class:`~neurovm.formats.WordFormat` (``fmt.bits`` wide)."""
    members = {}
    pos = 0
    for f in sorted(fmt.fields.values(), key=lambda f: f.lsb):
        if f.lsb > pos:
            members[f"_rsvd{pos}"] = unsigned(f.lsb - pos)
        members[f.name] = signed(f.width) if f.signed else unsigned(f.width)
        pos = f.lsb + f.width
    if pos < fmt.bits:
        members[f"_rsvd{pos}"] = unsigned(fmt.bits - pos)
    return data.StructLayout(members)


COMMAND_LAYOUTS = {op: struct_layout(fmt) for op, fmt in COMMAND_FORMATS.items()}
OUTPUT_LAYOUTS = {t: struct_layout(fmt) for t, fmt in OUTPUT_FORMATS.items()}
REGION_LAYOUTS = {r: struct_layout(spec.fmt) for r, spec in REGIONS.items()}
MMU_ENTRY_LAYOUT = struct_layout(MMU_ENTRY)
LINK_LAYOUTS = {name: struct_layout(fmt) for name, fmt in LINK_FORMATS.items()}
#: The §9.1 counters a core keeps itself (the chip top owns PACKETS_SENT, HOPS_X/Y, PACKETS_ROUTED).
CORE_COUNTERS = (Counter.SYN_OPS, Counter.NEURON_UPDATES, Counter.SPIKES_OUT, Counter.BUSY_CYCLES)


def counter_port(counter: Counter) -> str:
    """The port (and layout field) name of a core counter: ``Counter.SYN_OPS`` -> ``syn_ops``."""
    return counter.name.lower()


#: The core counters as the host interface receives them, by name.
CORE_COUNTERS_LAYOUT = data.StructLayout({counter_port(cn): unsigned(COUNTER_BITS) for cn in CORE_COUNTERS})


def _field_shape(lo: int, hi: int):
    """The narrowest shape holding every integer in ``lo..hi``."""
    if lo >= 0:
        return unsigned(max(1, hi.bit_length()))
    width = max((-lo - 1).bit_length(), hi.bit_length()) + 1
    return signed(width)


def region_layout(region: int, config: ChipConfig) -> data.StructLayout:
    """The 32-bit word layout of ``region`` on a chip of ``config`` (:func:`~neurovm.formats.region_specs`:
    on a learning chip SYN has its ``fixed`` bit and the regions 12-15 exist)."""
    return struct_layout(region_specs(config)[region].fmt)


def storage_layout(region: int, config: ChipConfig) -> data.StructLayout:
    """How a core stores one word of ``region``: each field at the width its legal range needs.

    The host interface rejects illegal words (§8.3 check 10), so a legal word
    survives the round trip word -> storage -> word exactly, and the memories
    are no wider than the chip configuration requires.
    """
    spec = region_specs(config)[region]
    bounds = spec.bounds(config)
    return data.StructLayout({name: _field_shape(*bounds[name]) for name in spec.fmt.fields})
