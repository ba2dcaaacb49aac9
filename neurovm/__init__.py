"""NeuroVM: an open neuromorphic chip and the virtualization stack around it.

Subpackages: ``neurovm.hdl`` (Amaranth gateware), ``neurovm.emulator`` (the
bit-exact golden model), ``neurovm.mapper`` (SNN partitioning and placement),
``neurovm.host`` (runtime, backends, protocol).  The shared chip parameters
live in :mod:`neurovm.config`, the word formats in :mod:`neurovm.formats`.
"""

from __future__ import annotations

from .config import DEFAULT_CONFIG, ChipConfig

__version__ = "0.1.0"
__all__ = ["ChipConfig", "DEFAULT_CONFIG", "__version__", "open"]


def open(backend: str = "emulator", config: ChipConfig | None = None, **options):  # noqa: A001 - the entry point
    """Open a chip over a backend ("emulator" or "verilator"); see :func:`neurovm.host.open`."""
    from .host import open as _open

    return _open(backend, config, **options)
