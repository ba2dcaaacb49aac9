"""An independent scalar model of the chip, for cross-checking the emulator.

Written from docs/architecture.md alone, with plain Python integers and
loops, sharing no code with ``neurovm.emulator`` (it uses ``//`` and ``abs``
where the emulator uses numpy shifts, and its own translation rules).  It
works on :class:`neurovm.image.CoreImage` field values, not on memory words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HV = 7


def decay_toward_zero(x: int, d_eff: int) -> int:
    m = (abs(x) * (4096 - d_eff)) // 4096
    return m if x >= 0 else -m


def wrap24(x: int) -> int:
    x %= 1 << 24
    return x - (1 << 24) if x >= 1 << 23 else x


def saturate_v(x: int) -> int:
    lim = (1 << 23) - 1
    return -lim if x < -lim else lim if x > lim else x


def scaled_weight(w: int, e: int) -> int:
    # Loihi's two-part shift: the exponent first (floor division rounds down), then * 2^6
    exp_shifted = w * 2**e if e >= 0 else w // 2 ** (-e)
    return exp_shifted * 64


@dataclass
class RefCore:
    image: object  # CoreImage
    owner: tuple[int, int] | None  # (vm, vcore) or None for a bare-metal core
    u: list = field(default_factory=list)
    v: list = field(default_factory=list)
    ref: list = field(default_factory=list)
    acc: list = field(default_factory=list)


class RefChip:
    """Scalar reference. ``mmu[(vm, vcore)] = (pcore, perms)``; owners derived from it."""

    def __init__(self, cfg, images: dict, mmu: dict):
        self.cfg = cfg
        self.mmu = dict(mmu)
        owners = {p: (vm, vc) for (vm, vc), (p, _) in self.mmu.items()}
        n = cfg.neurons_per_core
        self.cores = []
        for p in range(cfg.num_cores):
            self.cores.append(RefCore(images.get(p), owners.get(p), [0] * n, [0] * n, [0] * n, [0] * n))
        self.t = 0

    def _dest(self, p: int, vcore: int):
        """Destination pcore of a fan-out from core p, or a fault cause name."""
        owner = self.cores[p].owner
        if owner is None:
            if vcore >= self.cfg.num_cores:
                return "UNMAPPED"
            return "CROSS_VM" if self.cores[vcore].owner is not None else vcore
        vm = owner[0]
        if (vm, vcore) not in self.mmu:
            return "UNMAPPED"
        q, perms = self.mmu[(vm, vcore)]
        return q if perms & 4 else "PERMISSION"

    def deliver(self, q: int, axon: int):
        img = self.cores[q].image
        if img is None or axon >= len(img.syn_start):
            return
        start, length = int(img.syn_start[axon]), int(img.syn_len[axon])
        for s in range(start, start + length):
            if s >= len(img.target):
                continue  # entries past the image are zero words: target 0, weight 0
            t = int(img.target[s])
            w = scaled_weight(int(img.weight[s]), int(img.weight_exp))
            self.cores[q].acc[t] = wrap24(self.cores[q].acc[t] + w)

    def step(self):
        """One timestep; returns the ordered list of (kind, ...) output events."""
        self.t += 1
        return self._fan_out(self._update_neurons())

    def _update_neurons(self) -> list[tuple[int, int]]:
        """The neuron update of every active neuron (§4); the spiking ``(core, neuron)`` in order."""
        spiking = []
        for p, core in enumerate(self.cores):
            img = core.image
            if img is None:
                continue
            n_active = img.num_neurons if img.n_active is None else img.n_active
            for i in range(n_active):
                def par(name):
                    a = getattr(img, name)
                    return int(a[i]) if i < len(a) else 0
                a = core.acc[i]
                core.acc[i] = 0
                core.u[i] = wrap24(decay_toward_zero(core.u[i], par("du") + 1) + a)
                if core.ref[i] > 0:
                    core.v[i] = 0
                    core.ref[i] -= 1
                    continue
                v = saturate_v(decay_toward_zero(core.v[i], par("dv")) + core.u[i]
                               + par("bias_mant") * 2 ** par("bias_exp"))
                if v > par("vth_mant") * 64:
                    core.v[i] = 0
                    core.ref[i] = par("refract")
                    spiking.append((p, i))
                else:
                    core.v[i] = v
        return spiking

    def _fan_out(self, spiking: list[tuple[int, int]]) -> list:
        """Report and fan out the spikes (§6.1 item 2), delivering the packets; the output events."""
        events, packets = [], []
        for p, i in spiking:  # already in (core, neuron) order
            core, img = self.cores[p], self.cores[p].image
            vm, vc = core.owner if core.owner is not None else (HV, p)
            if i < len(img.report) and img.report[i]:
                events.append(("spike", vm, vc, i, self.t))
            start = int(img.fo_start[i]) if i < len(img.fo_start) else 0
            length = int(img.fo_len[i]) if i < len(img.fo_len) else 0
            for k in range(start, start + length):
                dv = int(img.fo_vcore[k]) if k < len(img.fo_vcore) else 0
                ax = int(img.fo_axon[k]) if k < len(img.fo_axon) else 0
                dest = self._dest(p, dv)
                if isinstance(dest, str):
                    events.append(("fault", vm, dest, dv, ax, vc, i))
                else:
                    packets.append((dest, ax))
        for q, ax in packets:
            self.deliver(q, ax)
        return events
