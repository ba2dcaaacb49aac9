"""The word formats: well-formed, round-trip exactly, and agree bit for bit with the HDL layouts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurovm.config import ChipConfig
from neurovm.formats import COMMAND_FORMATS, LINK_FORMATS, MMU_ENTRY, OUTPUT_FORMATS, REGIONS, Region, WordFormat, Field
from neurovm.hdl.layouts import COMMAND_LAYOUTS, LINK_LAYOUTS, MMU_ENTRY_LAYOUT, OUTPUT_LAYOUTS, REGION_LAYOUTS, storage_layout

ALL = ([(f"cmd {k.name}", f, COMMAND_LAYOUTS[k]) for k, f in COMMAND_FORMATS.items()]
       + [(f"out {k.name}", f, OUTPUT_LAYOUTS[k]) for k, f in OUTPUT_FORMATS.items()]
       + [(f"region {k.name}", s.fmt, REGION_LAYOUTS[k]) for k, s in REGIONS.items()]
       + [("MMU_ENTRY", MMU_ENTRY, MMU_ENTRY_LAYOUT)]
       + [(f"link {k}", f, LINK_LAYOUTS[k]) for k, f in LINK_FORMATS.items()])


@pytest.mark.parametrize("name,fmt,layout", ALL, ids=[a[0] for a in ALL])
def test_hdl_layout_offsets_match_format_table(name, fmt, layout):
    assert layout.size == fmt.bits
    members = {n: (off, shape) for n, off, shape in
               ((n, layout[n].offset, layout[n].shape) for n, _ in layout)}
    for f in fmt.fields.values():
        off, shape = members[f.name]
        assert (off, shape.width, shape.signed) == (f.lsb, f.width, f.signed), f.name
    # every non-field bit of the layout is a reserved member, and the masks agree
    reserved = 0
    for n, (off, shape) in members.items():
        if n.startswith("_rsvd"):
            reserved |= ((1 << shape.width) - 1) << off
    assert reserved == fmt.reserved_mask


def test_overlapping_fields_are_rejected():
    with pytest.raises(ValueError, match="overlaps"):
        WordFormat("X", Field("a", 0, 8), Field("b", 4, 8))


def test_pack_rejects_values_that_do_not_fit():
    with pytest.raises(ValueError, match="weight=128"):
        REGIONS[Region.SYN].fmt.pack(target=0, weight=128)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([a[1] for a in ALL]), st.data())
def test_pack_unpack_roundtrip(fmt, data):
    vals = {n: data.draw(st.integers(f.min, f.max)) for n, f in fmt.fields.items()}
    word = fmt.pack(**vals)
    assert 0 <= word < 2**fmt.bits and not word & fmt.reserved_mask
    assert fmt.unpack(word) == vals
    arr = np.array([word, word], dtype=np.int64)
    for n, f in fmt.fields.items():
        assert list(f.get(arr)) == [vals[n]] * 2
    assert int(fmt.pack_array(**{n: np.array([v]) for n, v in vals.items()})[0]) == word


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(Region)), st.integers(0, 2**32 - 1))
def test_vectorized_and_scalar_validation_agree(region, word):
    cfg = ChipConfig(mesh_width=3, mesh_height=2, neurons_per_core=100, synapses_per_core=1000,
                     axons_per_core=300, fanout_per_core=200, weight_bits=5)
    spec = REGIONS[region]
    assert bool(spec.invalid(cfg, np.array([word]))[0]) == (spec.validate(cfg, word) is not None)


def test_chipconfig_rejects_bad_sizes():
    with pytest.raises(ValueError, match="neurons_per_core=0"):
        ChipConfig(neurons_per_core=0)
    with pytest.raises(ValueError, match="max_vms=8"):
        ChipConfig(max_vms=8)
    with pytest.raises(TypeError, match="mesh_width"):
        ChipConfig(mesh_width=2.0)
    assert ChipConfig.from_dict(ChipConfig().to_dict()) == ChipConfig()


@pytest.mark.parametrize("config", [ChipConfig(), ChipConfig(neurons_per_core=1, synapses_per_core=1, axons_per_core=1,
                                                              fanout_per_core=1, weight_bits=2, vcores_per_vm=1,
                                                              mesh_width=1, mesh_height=1)],
                         ids=["default", "minimal"])
@pytest.mark.parametrize("region", list(Region), ids=[r.name for r in Region])
def test_storage_layout_holds_exactly_the_legal_range(region, config):
    """Each stored field is the narrowest shape that holds the field's legal range (§5)."""
    layout = storage_layout(region, config)
    for name, (lo, hi) in REGIONS[region].bounds(config).items():
        shape = layout[name].shape
        smin = -(1 << (shape.width - 1)) if shape.signed else 0
        smax = (1 << (shape.width - (1 if shape.signed else 0))) - 1
        assert smin <= lo and hi <= smax, (name, shape)
        # one bit narrower would lose a legal value (unless already 1 bit)
        if shape.width > 1:
            nmin = -(1 << (shape.width - 2)) if shape.signed else 0
            nmax = (1 << (shape.width - (2 if shape.signed else 1))) - 1
            assert lo < nmin or hi > nmax, (name, shape)
