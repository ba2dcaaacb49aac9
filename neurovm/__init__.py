"""NeuroVM: an open neuromorphic chip and the virtualization stack around it.

Subpackages: ``neurovm.hdl`` (Amaranth gateware), ``neurovm.emulator`` (the
bit-exact golden model), ``neurovm.mapper`` (SNN partitioning and placement),
``neurovm.host`` (runtime, backends, protocol).  The shared chip parameters
live in :mod:`neurovm.config`, the word formats in :mod:`neurovm.formats`.
"""

from .config import DEFAULT_CONFIG, ChipConfig

__version__ = "0.1.0"
__all__ = ["ChipConfig", "DEFAULT_CONFIG", "__version__"]
