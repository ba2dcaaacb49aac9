"""The numpy golden model of the NeuroVM chip (the executable spec).

:class:`Chip` consumes the host command stream and produces the output
stream, bit-exact with the HDL; ``Chip(config, batch=B)`` is B copies stepping
together and ``device="cuda"`` runs the same timestep on CuPy (spec §6.4, §15).
:mod:`.engine` holds the timestep, :mod:`.lif` the neuron arithmetic,
:mod:`.xp` the array namespace and :mod:`.energy` the energy model.
"""

from .chip import Chip
from .energy import EnergyModel, DEFAULT_ENERGY
from .fork import BatchRun, ForkError
from .xp import DeviceUnavailableError

__all__ = ["Chip", "BatchRun", "ForkError", "EnergyModel", "DEFAULT_ENERGY", "DeviceUnavailableError"]
