"""Energy model: telemetry counters -> picojoules (docs/architecture.md §9.2).

The default coefficients are Loihi's measured figures (Davies et al., "Loihi:
A Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro 38(1),
2018, Table 2, 14 nm).  NeuroVM is not Loihi silicon: the model answers "what
would this workload cost on a Loihi-class chip", and every coefficient can be
replaced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from neurovm.formats import Counter

__all__ = ["EnergyModel", "DEFAULT_ENERGY"]


@dataclass(frozen=True)
class EnergyModel:
    """Picojoules per counted event.

    Attributes
    ----------
    syn_op_pj : float
        Per synaptic operation (Table 2: "synaptic spike op", 23.6 pJ).
    neuron_update_pj : float
        Per neuron update (Table 2: active neuron update, 81 pJ).
    spike_pj : float
        Per packet leaving a core (Table 2: "within-tile spike energy", 1.7 pJ).
    hop_x_pj, hop_y_pj : float
        Per mesh hop east-west / north-south (Table 2: 3.0 / 4.0 pJ).
    """

    syn_op_pj: float = 23.6
    neuron_update_pj: float = 81.0
    spike_pj: float = 1.7
    hop_x_pj: float = 3.0
    hop_y_pj: float = 4.0

    def energy_pj(self, counters) -> float:
        """Energy of a counter vector (or a (cores, counters) array, summed)."""
        c = np.asarray(counters, dtype=np.float64)
        if c.ndim == 2:
            c = c.sum(axis=0)
        return float(
            c[Counter.SYN_OPS] * self.syn_op_pj
            + c[Counter.NEURON_UPDATES] * self.neuron_update_pj
            + c[Counter.PACKETS_SENT] * self.spike_pj
            + c[Counter.HOPS_X] * self.hop_x_pj
            + c[Counter.HOPS_Y] * self.hop_y_pj
        )

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_ENERGY = EnergyModel()
