"""The one parameter source shared by the HDL, the emulator and the mapper.

Every size and bit width of the chip is derived from a :class:`ChipConfig`.
The fixed arithmetic constants of the neuron model (they are not
configurable: they *are* the Loihi 1 CUBA-LIF datapath) are module constants
here too, so that the HDL and the emulator import them from one place.
See docs/architecture.md, sections "Parameters" and "Neuron model".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = [
    "ChipConfig",
    "DEFAULT_CONFIG",
    "STATE_BITS",
    "U_MIN",
    "U_MAX",
    "V_MIN",
    "V_MAX",
    "DECAY_BITS",
    "DECAY_UNITY",
    "DU_OFFSET",
    "DV_OFFSET",
    "ACT_SHIFT",
    "VTH_SHIFT",
    "VTH_BITS",
    "BIAS_MANT_BITS",
    "BIAS_EXP_BITS",
    "REFRACT_BITS",
    "WEIGHT_EXP_MIN",
    "WEIGHT_EXP_MAX",
    "HV_VM",
    "VM_BITS",
    "MAX_COMMAND_WORDS",
    "TRACE_BITS",
    "TRACE_MAX",
    "TRACE_IMPULSE_BITS",
    "LEARN_RATE_BITS",
    "LEARN_SHIFT_BITS",
    "LEARN_EPOCH_BITS",
]

# --- neuron datapath constants (Loihi 1 CUBA-LIF; docs/architecture.md §4) ---
STATE_BITS = 24                     # u, v and the input accumulator are 24-bit signed
U_MIN = -(1 << (STATE_BITS - 1))    # u wraps (two's complement) into [U_MIN, U_MAX]
U_MAX = (1 << (STATE_BITS - 1)) - 1
V_MIN = -((1 << (STATE_BITS - 1)) - 1)  # v saturates symmetrically, as Loihi/Lava
V_MAX = (1 << (STATE_BITS - 1)) - 1
DECAY_BITS = 12                     # du, dv: unsigned 12-bit fields, 0..4095
DECAY_UNITY = 1 << DECAY_BITS       # 4096
DU_OFFSET = 1                       # Loihi 1 ds_offset: u decays by (du + 1)/4096
DV_OFFSET = 0                       # Loihi 1 dm_offset: v decays by dv/4096
ACT_SHIFT = 6                       # synaptic input is MSB-aligned by 2^6
VTH_SHIFT = 6                       # threshold is vth_mant * 2^6
VTH_BITS = 17                       # vth_mant: unsigned 17-bit
BIAS_MANT_BITS = 13                 # bias_mant: signed 13-bit
BIAS_EXP_BITS = 3                   # bias_exp: unsigned 3-bit, 0..7
REFRACT_BITS = 6                    # refractory steps and counter: unsigned 6-bit; refract = k holds v for k steps
                                    # after a spike = Loihi's refractDelay - 1 (spec §4, §11)
WEIGHT_EXP_MIN = -8                 # per-core weight exponent: signed 4-bit
WEIGHT_EXP_MAX = 7

# --- on-chip learning constants (docs/architecture.md §24; only on a chip built with learning=1) ---
TRACE_BITS = 7                      # pre (per axon) and post (per neuron) traces: unsigned 7-bit, as Loihi 1's x1/y1
TRACE_MAX = (1 << TRACE_BITS) - 1   # a trace saturates at 127
TRACE_IMPULSE_BITS = TRACE_BITS     # the increment of a trace on a spike: unsigned 7-bit
LEARN_RATE_BITS = 8                 # a_plus, a_minus: signed 8-bit
LEARN_SHIFT_BITS = 4                # s_plus, s_minus: unsigned 4-bit right shifts, 0..15
LEARN_EPOCH_BITS = 3                # epoch_log2: a learning pass every 2^epoch_log2 steps (1..128)

# --- virtualization constants (docs/architecture.md §7) ---
VM_BITS = 3                         # VM id field width in every command/output word
HV_VM = (1 << VM_BITS) - 1          # VM id 7 is the hypervisor (privileged)

# Longest command: WRITE header + address + 4095 data words.
MAX_COMMAND_WORDS = 2 + 4095


def _clog2(n: int) -> int:
    """Bits needed to index ``n`` items (at least 1)."""
    return max(1, (n - 1).bit_length())


@dataclass(frozen=True)
class ChipConfig:
    """Sizes of one NeuroVM chip.

    Parameters
    ----------
    mesh_width, mesh_height : int
        Cores on the 2-D mesh; physical core ``p`` sits at
        ``x = p % mesh_width``, ``y = p // mesh_width``.
    neurons_per_core : int
        Neurons (compartments) per core.
    synapses_per_core : int
        Synapse-memory entries per core (one entry = target neuron + weight).
    axons_per_core : int
        Input axons per core (entries of the axon table).
    fanout_per_core : int
        Fan-out entries per core (one entry = virtual destination core + axon).
    weight_bits : int
        Width of the signed synaptic weight mantissa (2..8).
    max_vms : int
        Guest VM ids ``0 .. max_vms-1``; id 7 is reserved for the hypervisor.
    vcores_per_vm : int
        Size of each VM's virtual core space (entries of its translation table).
    learning : int
        1: every core has the learning engine of §24 (trace regions, LEARN_CFG,
        LEARN_RULE, the synapse ``fixed`` bit); 0 (default): it has none and those
        regions do not exist.  An int (0 or 1) like every other field.
    """

    mesh_width: int = 2
    mesh_height: int = 2
    neurons_per_core: int = 256
    synapses_per_core: int = 16384
    axons_per_core: int = 1024
    fanout_per_core: int = 1024
    weight_bits: int = 8
    max_vms: int = 4
    vcores_per_vm: int = 8
    learning: int = 0

    def __post_init__(self):
        limits = {
            # name: (low, high) -- the high bounds come from the 16-bit
            # address/length fields of the memory word formats (§5).
            "mesh_width": (1, 16),
            "mesh_height": (1, 16),
            "neurons_per_core": (1, 4096),
            "synapses_per_core": (1, 32768),
            "axons_per_core": (1, 32768),
            "fanout_per_core": (1, 32767),
            "weight_bits": (2, 8),
            "max_vms": (1, HV_VM),
            "vcores_per_vm": (1, 256),
            "learning": (0, 1),
        }
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ChipConfig.{name} must be an int, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"ChipConfig.{name}={value} is outside {lo}..{hi}")
        if self.num_cores > 256:
            raise ValueError(f"ChipConfig has {self.num_cores} cores; at most 256 fit the 8-bit core fields")

    # ---- derived sizes -------------------------------------------------
    @property
    def num_cores(self) -> int:
        return self.mesh_width * self.mesh_height

    @property
    def neuron_bits(self) -> int:
        return _clog2(self.neurons_per_core)

    @property
    def synapse_addr_bits(self) -> int:
        return _clog2(self.synapses_per_core)

    @property
    def axon_bits(self) -> int:
        return _clog2(self.axons_per_core)

    @property
    def fanout_addr_bits(self) -> int:
        return _clog2(self.fanout_per_core)

    @property
    def core_bits(self) -> int:
        return _clog2(self.num_cores)

    @property
    def vcore_bits(self) -> int:
        return _clog2(self.vcores_per_vm)

    @property
    def weight_min(self) -> int:
        return -(1 << (self.weight_bits - 1))

    @property
    def weight_max(self) -> int:
        return (1 << (self.weight_bits - 1)) - 1

    def core_xy(self, pcore: int) -> tuple[int, int]:
        """Mesh coordinates of physical core ``pcore``."""
        return pcore % self.mesh_width, pcore // self.mesh_width

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ChipConfig":
        """Build a configuration from a dict (e.g. a file header); missing fields take their defaults.

        Raises
        ------
        TypeError
            ``d`` is not a dict, or a field is not an int (``bool`` and ``float`` are refused).
        ValueError
            An unknown field, or a value outside its range (the message names both).
        """
        if not isinstance(d, dict):
            raise TypeError(f"ChipConfig must be given as a dict of fields, not {type(d).__name__}")
        unknown = [k for k in d if k not in cls.__dataclass_fields__]
        if unknown:
            raise ValueError(f"unknown ChipConfig fields: {sorted(map(str, unknown))}")
        return cls(**d)


DEFAULT_CONFIG = ChipConfig()
