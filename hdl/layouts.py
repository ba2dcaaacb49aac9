"""Amaranth ``data.StructLayout`` views of the shared word formats.

Generated from :mod:`neurovm.formats` (the single source), with reserved
gaps filled by padding members named ``_rsvd<lsb>``; every layout is exactly
32 bits.  ``tests/test_formats.py`` checks the offsets against the tables.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from neurovm.formats import COMMAND_FORMATS, MMU_ENTRY, OUTPUT_FORMATS, REGIONS, WORD_BITS, WordFormat

__all__ = ["struct_layout", "COMMAND_LAYOUTS", "OUTPUT_LAYOUTS", "REGION_LAYOUTS", "MMU_ENTRY_LAYOUT"]


def struct_layout(fmt: WordFormat) -> data.StructLayout:
    """The 32-bit StructLayout of a :class:`~neurovm.formats.WordFormat`."""
    members = {}
    pos = 0
    for f in sorted(fmt.fields.values(), key=lambda f: f.lsb):
        if f.lsb > pos:
            members[f"_rsvd{pos}"] = unsigned(f.lsb - pos)
        members[f.name] = signed(f.width) if f.signed else unsigned(f.width)
        pos = f.lsb + f.width
    if pos < WORD_BITS:
        members[f"_rsvd{pos}"] = unsigned(WORD_BITS - pos)
    return data.StructLayout(members)


COMMAND_LAYOUTS = {op: struct_layout(fmt) for op, fmt in COMMAND_FORMATS.items()}
OUTPUT_LAYOUTS = {t: struct_layout(fmt) for t, fmt in OUTPUT_FORMATS.items()}
REGION_LAYOUTS = {r: struct_layout(spec.fmt) for r, spec in REGIONS.items()}
MMU_ENTRY_LAYOUT = struct_layout(MMU_ENTRY)
