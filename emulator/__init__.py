"""The numpy golden model of the NeuroVM chip (the executable spec).

:class:`Chip` consumes the host command stream and produces the output
stream, bit-exact with the HDL; :mod:`.lif` holds the neuron arithmetic and
:mod:`.energy` the energy model.
"""

from .chip import Chip
from .energy import EnergyModel, DEFAULT_ENERGY

__all__ = ["Chip", "EnergyModel", "DEFAULT_ENERGY"]
