"""Functional coverage (neurovm.host.verify.coverage, spec §22): named points, per-run files
merged by summing, the text and markdown reports, and a check that names every point never hit."""

from __future__ import annotations

import json

import pytest

from neurovm.formats import ErrorCode, Opcode
from neurovm.host.verify.coverage import COVER_POINTS, ERROR_CROSS, CoverageDB, CoverageError


def test_points_cover_each_block_and_every_error_code():
    blocks = {name.split(".")[0] for name in COVER_POINTS}
    assert blocks == {"core", "mesh", "chip"}
    crossed = {name.split(".")[2] for name in COVER_POINTS if name.startswith("chip.error.")}
    assert crossed == {c.name for c in ErrorCode}                                   # every code ...
    assert {f"chip.error.RESERVED_BITS.{op.name}" for op in Opcode} <= set(COVER_POINTS)   # ... x its opcodes
    assert "chip.error.BAD_FIELD.WRITE" in COVER_POINTS and "chip.error.BAD_FIELD.READ" not in COVER_POINTS
    assert all(where in ("dut", "model") for where, _ in COVER_POINTS.values())


def test_runs_merge_by_summing_and_the_check_names_each_point_never_hit(tmp_path):
    one, two = CoverageDB(), CoverageDB()
    one.hit("core.spike_out", 3)
    two.hit("core.spike_out")
    two.hit("chip.error.BAD_VM.READ", 2)
    one.save(tmp_path / "a.json")
    two.save(tmp_path / "b.json")
    merged = CoverageDB.merge_files([tmp_path / "a.json", tmp_path / "b.json"])
    assert merged.hits["core.spike_out"] == 4 and merged.hits["chip.error.BAD_VM.READ"] == 2
    assert merged.missing(("chip.error.BAD_VM.",)) == [f"chip.error.BAD_VM.{op.name}" for op in ERROR_CROSS[ErrorCode.BAD_VM]
                                                       if op != Opcode.READ]
    with pytest.raises(CoverageError, match=r"cover points never hit: .*core\.fault_item") as err:
        merged.check(("core.",))
    assert "core.spike_out" not in str(err.value)
    for name in COVER_POINTS:
        merged.hits[name] = merged.hits[name] or 1
    merged.check()   # everything hit: no error


def test_reports_show_hits_and_misses():
    db = CoverageDB()
    db.hit("mesh.node0.eject_stall", 7)
    text = db.report_text(("mesh.node0.",))
    assert "mesh.node0.eject_stall" in text and "7  HIT" in text and "MISS" in text
    assert text.endswith("1 of 2 cover points hit")
    table = db.report_markdown(("mesh.node0.",))
    assert "| `mesh.node0.eject_stall` | 7 | dut |" in table
    assert "| `mesh.node0.inject_backpressure` | **0** | dut |" in table


def test_unknown_points_and_foreign_files_are_named_and_change_nothing(tmp_path):
    db = CoverageDB()
    with pytest.raises(CoverageError, match=r"'core.nonsense' is not a cover point"):
        db.hit("core.nonsense")
    assert sum(db.hits.values()) == 0
    with pytest.raises(CoverageError, match=r"'mesh.node9.eject_stall' not cover points"):
        db.merge({"hits": {"core.spike_out": 5, "mesh.node9.eject_stall": 1}})
    assert sum(db.hits.values()) == 0
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"hits": {}}))
    with pytest.raises(CoverageError, match=r"other\.json: not a coverage file of version 1"):
        CoverageDB.merge_files([bad])
    (tmp_path / "cut.json").write_text("{")
    with pytest.raises(CoverageError, match=r"cut\.json: not a coverage file"):
        CoverageDB.merge_files([tmp_path / "cut.json"])


def test_chip_stream_points_come_from_the_commands_and_the_golden_answers():
    """RUN domain sets are read from the framed command stream, faults from the answers by cause and origin."""
    import numpy as np

    from neurovm.config import HV_VM, ChipConfig
    from neurovm.emulator import Chip
    from neurovm.formats import ALL_DOMAINS, Region
    from neurovm.host import protocol as P
    from neurovm.host.verify.coverage import chip_stream_hits

    golden = Chip(ChipConfig(mesh_width=2, mesh_height=1, neurons_per_core=4, synapses_per_core=8,
                             axons_per_core=4, fanout_per_core=4, max_vms=2, vcores_per_vm=2))
    # a WRITE whose data words look like RUN headers: framing must skip them
    fake_run = P.encode_run(1, domains=0b1)[0]
    words = (P.encode_mmu_map(0, 0, 0) + P.encode_write(HV_VM, 1, Region.SYN, 0, [fake_run, 0])
             + P.encode_run(2, domains=ALL_DOMAINS) + P.encode_run(1, domains=0b1) + P.encode_run(1, domains=0b11)
             + P.encode_inject(0, 1, 0)                        # VM 0 has no vcore 1: UNMAPPED from the host
             + [(P.encode_run(1, domains=0b1)[0] & ~(0x7 << 24))])   # a RUN from guest VM 0: PRIVILEGE
    first = golden.stream_index
    hits = chip_stream_hits(words, golden.feed(words), first)
    assert hits["chip.run_all_domains"] == 1
    assert hits["chip.run_gated"] == 2 and hits["chip.run_one_guest"] == 1
    assert hits["chip.fault.UNMAPPED.HOST"] == 1 and hits["chip.fault.PRIVILEGE.HOST"] == 1
    assert hits["chip.error.BAD_FIELD.WRITE"] == 1   # the fake RUN as a SYN data word: its WRITE, not a RUN
    assert "chip.fault.CROSS_VM.FANOUT" not in hits
    assert all(name in COVER_POINTS for name in hits)
    np.testing.assert_array_equal(golden.feed([]), [])
