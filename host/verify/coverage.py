"""Functional coverage: named cover points, hit counts per run (one JSON file each), merged
across a regression, reported as text and as a markdown table, and checked (spec §22).

A small collector of our own rather than cocotb-coverage: the points are plain named counters
sampled by the testbench monitors, the merge is a sum, and the files are JSON the regression
runner merges across worker processes; cocotb-coverage's bins and crosses would add a
dependency without anything this needs.

Cover points are named ``<block>.<what>`` and listed in :data:`COVER_POINTS` with where they are
sampled (``dut``: a monitor on the simulated block's ports; ``model``: the emulator side of the
co-simulation, where the event is visible only inside the golden model).
"""

from __future__ import annotations

import json
from pathlib import Path

from neurovm.atomic import atomic_write
from neurovm.config import HV_VM
from neurovm.formats import ALL_DOMAINS, COMMAND_FORMATS, ErrorCode, FaultCause, FaultOrigin, Opcode, command_length

COVERAGE_VERSION = 1


class CoverageError(AssertionError):
    """Cover points never hit (named), or a name that is not a cover point."""


def _mesh_points(nodes: int = 4) -> dict:
    points = {}
    for n in range(nodes):
        points[f"mesh.node{n}.inject_backpressure"] = ("dut", f"node {n}'s inject port held ready low under a valid packet")
        points[f"mesh.node{n}.eject_stall"] = ("dut", f"node {n}'s eject port stalled by its sink under a valid packet")
    return points


#: Which commands can fail each check of spec §8.3 (the opcode x error-code cross): RESERVED_BITS
#: every defined opcode (MMU_MAP: its header or its entry word), BAD_VM every opcode with a ``vm``
#: field, BAD_LENGTH check 5, BAD_REGION check 6, BAD_ADDRESS checks 7 and 8, BAD_FIELD check 10.
ERROR_CROSS: dict[ErrorCode, tuple[Opcode, ...]] = {
    ErrorCode.RESERVED_BITS: tuple(Opcode),
    ErrorCode.BAD_VM: tuple(op for op in Opcode if "vm" in COMMAND_FORMATS[op].fields),
    ErrorCode.BAD_LENGTH: (Opcode.WRITE, Opcode.READ, Opcode.RUN, Opcode.READ_COUNTERS),
    ErrorCode.BAD_REGION: (Opcode.WRITE, Opcode.READ),
    ErrorCode.BAD_ADDRESS: (Opcode.WRITE, Opcode.READ, Opcode.INJECT, Opcode.MMU_MAP, Opcode.READ_COUNTERS,
                            Opcode.RESET),
    ErrorCode.BAD_FIELD: (Opcode.WRITE,),
}

#: name -> (where sampled, what it means)
COVER_POINTS: dict[str, tuple[str, str]] = {
    "core.spike_out": ("dut", "a spike item on the core's output stream"),
    "core.report_item": ("dut", "a report item (a neuron's state read out with the spike stream)"),
    "core.fault_item": ("dut", "a fault item on the core's output stream"),
    "core.loopback": ("dut", "a spike looped back to the core's own axons"),
    "core.spikes_backpressure": ("dut", "the spike stream held valid while the sink stalled"),
    "core.events_gaps": ("dut", "input events with gaps (source pauses)"),
    "core.u_wrap_positive": ("model", "u wrapped past U_MAX (two's complement) in an update"),
    "core.u_wrap_negative": ("model", "u wrapped past U_MIN in an update"),
    "core.v_saturation_positive": ("model", "v saturated at V_MAX in an update (before the threshold)"),
    "core.v_saturation_negative": ("model", "v saturated at V_MIN in an update"),
    "core.threshold_equal": ("model", "v equal to the threshold (no spike: the test is v > vth)"),
    "core.refractory_entry": ("model", "a neuron entered its refractory period (counter 0 -> non-zero)"),
    "core.refractory_exit": ("model", "a neuron left its refractory period (counter non-zero -> 0)"),
    "core.back_to_back_axon": ("dut", "two consecutive input events to one axon (the same neurons' synapses)"),
    "core.saturating_train": ("model", "an input train large enough to saturate the accumulator"),
    "core.refractory": ("model", "a neuron in its refractory period"),
    "core.inactive_neurons": ("model", "a core with neurons beyond n_active"),
    "core.negative_weight_exponent": ("model", "synaptic ops under a negative weight exponent"),
    **_mesh_points(),
    "chip.resync": ("dut", "a resync sequence answered"),
    "chip.error.UNKNOWN_OPCODE": ("model", "an undefined opcode answered with error UNKNOWN_OPCODE"),
    **{f"chip.error.{code.name}.{op.name}": ("model", f"a malformed {op.name} answered with error {code.name}")
       for code, ops in ERROR_CROSS.items() for op in ops},
    **{f"chip.fault.{cause.name}.{origin.name}": ("model", f"a {cause.name} fault from a "
                                                          f"{'host command' if origin == FaultOrigin.HOST else 'fan-out spike'}")
       for cause, origin in ((FaultCause.UNMAPPED, FaultOrigin.HOST), (FaultCause.PERMISSION, FaultOrigin.HOST),
                             (FaultCause.PRIVILEGE, FaultOrigin.HOST), (FaultCause.CORE_OWNED, FaultOrigin.HOST),
                             (FaultCause.UNMAPPED, FaultOrigin.FANOUT), (FaultCause.CROSS_VM, FaultOrigin.FANOUT))},
    "chip.run_all_domains": ("model", "a RUN stepping every domain (the chip-wide step)"),
    "chip.run_gated": ("model", "a gated RUN: some domains named, the other cores frozen"),
    "chip.run_one_guest": ("model", "a RUN naming exactly one guest VM's domain"),
    "chip.cmd_backpressure": ("dut", "the command stream held valid while the chip stalled it"),
    "chip.out_backpressure": ("dut", "the output stream held valid while the host stalled it"),
}


def chip_stream_hits(commands, outputs, first_index: int = 0) -> dict[str, int]:
    """The chip's model-side cover points of one command stream and its (golden) output.

    Parameters
    ----------
    commands : iterable of int
        Command words, starting at a command boundary (§8.1 framing: the length comes from each
        header, even for a malformed one).
    outputs : iterable of int
        The output words the emulator answered them with (§8.2).
    first_index : int
        Stream index (§8.3) of the first command word: an ERROR names its word by that index, so
        the error is counted against the opcode of the command the word belongs to.

    Returns
    -------
    dict
        ``chip.run_*`` per RUN header by its domain set, ``chip.fault.<cause>.<origin>`` per FAULT,
        ``chip.error.<code>.<opcode>`` per ERROR.
    """
    from neurovm.host import protocol as P

    hits: dict[str, int] = {}

    def hit(name: str) -> None:
        if name in COVER_POINTS:
            hits[name] = hits.get(name, 0) + 1

    words, i = [int(w) for w in commands], 0
    run = COMMAND_FORMATS[Opcode.RUN]
    op_f, dom_f = run["op"], run["domains"]
    op_of_word: list[int] = []
    while i < len(words):
        header = words[i]
        op_of_word += [op_f.get(header)] * command_length(header)
        if (op_f.get(header) == Opcode.RUN and run["vm"].get(header) == HV_VM and run["steps"].get(header)
                and not header & run.reserved_mask):   # a RUN the chip executes (refused ones step nothing)
            domains = dom_f.get(header)
            if domains == ALL_DOMAINS:
                hit("chip.run_all_domains")
            elif domains:
                hit("chip.run_gated")
                if bin(domains).count("1") == 1 and domains != 1 << HV_VM:
                    hit("chip.run_one_guest")
        i += command_length(header)
    for msg in P.decode_output(outputs):
        if isinstance(msg, P.Fault):
            hit(f"chip.fault.{msg.cause.name}.{msg.origin.name}")
        elif isinstance(msg, P.ErrorMsg):
            local = (msg.index - first_index) % (1 << 32)
            if msg.code == ErrorCode.UNKNOWN_OPCODE:
                hit("chip.error.UNKNOWN_OPCODE")
            elif local < len(op_of_word) and op_of_word[local] in Opcode._value2member_map_:
                hit(f"chip.error.{msg.code.name}.{Opcode(op_of_word[local]).name}")
    return hits


class CoverageDB:
    """Hit counts of named cover points (every point of :data:`COVER_POINTS`, 0 until hit)."""

    def __init__(self, points: dict | None = None):
        self.points = dict(COVER_POINTS if points is None else points)
        self.hits = {name: 0 for name in self.points}

    def hit(self, name: str, count: int = 1) -> None:
        """Count ``count`` hits of ``name``; raises CoverageError for a name that is not a point."""
        if name not in self.hits:
            raise CoverageError(f"{name!r} is not a cover point (known: {', '.join(sorted(self.hits))})")
        self.hits[name] += int(count)

    def to_dict(self) -> dict:
        return {"version": COVERAGE_VERSION, "hits": dict(self.hits)}

    def save(self, path) -> Path:
        """Write the hit counts as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True).encode()
        return atomic_write(Path(path), lambda fh: fh.write(text))

    def merge(self, other: "CoverageDB | dict") -> "CoverageDB":
        """Add the hits of ``other`` (a DB or a saved dict) to these; a point unknown here is an error."""
        hits = other.hits if isinstance(other, CoverageDB) else other["hits"]
        unknown = sorted(set(hits) - set(self.hits))
        if unknown:   # checked before any count is added: an error leaves these hits as they were
            raise CoverageError(f"{', '.join(map(repr, unknown))} not cover points of this collector")
        for name, count in hits.items():
            self.hits[name] += int(count)
        return self

    @classmethod
    def merge_files(cls, paths) -> "CoverageDB":
        """One DB with the sum of the hits of every per-run file in ``paths``.

        Raises CoverageError naming a file that is not a coverage file of this version.
        """
        db = cls()
        for path in paths:
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError) as err:
                raise CoverageError(f"{path}: not a coverage file ({err})") from None
            if not isinstance(data, dict) or data.get("version") != COVERAGE_VERSION or "hits" not in data:
                raise CoverageError(f"{path}: not a coverage file of version {COVERAGE_VERSION}")
            db.merge(data)
        return db

    def missing(self, prefixes: tuple[str, ...] = ("",)) -> list[str]:
        """The points (of the blocks named by ``prefixes``) never hit."""
        return [n for n, c in self.hits.items() if c == 0 and n.startswith(prefixes)]

    def check(self, prefixes: tuple[str, ...] = ("",)) -> None:
        """Raise CoverageError naming every cover point (under ``prefixes``) never hit."""
        missing = self.missing(prefixes)
        if missing:
            raise CoverageError(f"{len(missing)} cover points never hit: {', '.join(missing)}")

    def report_text(self, prefixes: tuple[str, ...] = ("",)) -> str:
        names = [n for n in self.points if n.startswith(prefixes)]
        width = max(map(len, names), default=10)
        lines = [f"{n:<{width}}  {self.hits[n]:>9}  {'HIT ' if self.hits[n] else 'MISS'}  {self.points[n][0]:<5}  "
                 f"{self.points[n][1]}" for n in names]
        hit = sum(self.hits[n] > 0 for n in names)
        return "\n".join(lines + [f"{hit} of {len(names)} cover points hit"])

    def report_markdown(self, prefixes: tuple[str, ...] = ("",)) -> str:
        names = [n for n in self.points if n.startswith(prefixes)]
        rows = ["| cover point | hits | sampled at | meaning |", "|---|---:|---|---|"]
        rows += [f"| `{n}` | {self.hits[n] if self.hits[n] else '**0**'} | {self.points[n][0]} | {self.points[n][1]} |"
                 for n in names]
        hit = sum(self.hits[n] > 0 for n in names)
        return "\n".join(rows + ["", f"{hit} of {len(names)} cover points hit."])
