"""On-chip STDP finds a repeating spike pattern hidden in noise (Masquelier, Guyonneau & Thorpe 2008).

One output neuron listens to ``AFFERENTS`` input axons that fire at random (Bernoulli ``RATE``
per step).  Every so often, for ``PATTERN_LEN`` steps, half of the afferents replay one frozen
random raster instead (same rate, so no afferent fires more than usual: only the *timing*
repeats).  The chip (emulator backend, ``ChipConfig(learning=1)``) runs the pair-based STDP rule
of docs/architecture.md §24 on the neuron's synapses, through the runtime
(``vm.set_learning``, ``vm.run(..., learn=True)``, ``vm.weights()``).

Measured per block of presentations: the **hit rate** (the neuron fires during the pattern),
the **false-alarm rate** (spikes outside any pattern, per 1,000 steps), the detection
**latency** (steps from pattern onset to the first spike), and the mean weight of the pattern
and of the noise afferents; the same input stream without learning is the control.
Writes docs/learning_curve.png and prints the table for BENCHMARKS.md.

Run: ``.venv/bin/python benchmarks/learning_demo.py [--presentations 300] [--seed 0] [--backend verilator]``;
``--backend verilator`` repeats the learning run on the Verilator model of the HDL (spec §24.5) and
requires its spikes and weights to be identical to the emulator's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

AFFERENTS = 400
PATTERN_AFFERENTS = 200
PATTERN_LEN = 25
GAP = (25, 75)          # noise-only steps between presentations (uniform)
RATE = 0.025            # spikes per afferent per step, pattern and noise alike
BLOCK = 25              # presentations per point of the learning curve
WEIGHT0 = 24
NEURON = dict(du=4095, dv=600, vth_mant=1700, refract=20)   # u = this step's input; v leaks ~15%/step
RULE = dict(a_plus=17, a_minus=18, s_plus=8, s_minus=8, epoch_log2=0,   # LTD 6% stronger than LTP
            x_decay=600, x_impulse=127, y_decay=600, y_impulse=127)     # both traces: tau ~ 6.3 steps


def make_input(rng, presentations: int):
    """The input raster ``(steps, AFFERENTS)``, the onset step of every presentation and the pattern."""
    pattern = rng.random((PATTERN_LEN, PATTERN_AFFERENTS)) < RATE
    chunks, onsets, t = [], [], 0
    for _ in range(presentations):
        gap = int(rng.integers(*GAP))
        chunks.append(rng.random((gap, AFFERENTS)) < RATE)
        t += gap
        onsets.append(t)
        block = rng.random((PATTERN_LEN, AFFERENTS)) < RATE
        block[:, :PATTERN_AFFERENTS] = pattern
        chunks.append(block)
        t += PATTERN_LEN
    chunks.append(rng.random((GAP[0], AFFERENTS)) < RATE)
    return np.concatenate(chunks), np.array(onsets), pattern


def network():
    import networkx as nx

    g = nx.DiGraph()
    for i in range(AFFERENTS):
        g.add_node(f"in{i}", population="in", report=False)
    g.add_node("out", population="out", report=True, **NEURON)
    for i in range(AFFERENTS):
        g.add_edge(f"in{i}", "out", weight=WEIGHT0)
    return g


def demo_config():
    """The one-core learning chip of the demo (room for the afferents and the output neuron)."""
    from neurovm.config import ChipConfig

    size = AFFERENTS + 1
    return ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=size, synapses_per_core=2 * size,
                      axons_per_core=size, fanout_per_core=size, learning=1)


def make_backend(name: str):
    """The demo chip on the emulator or on the Verilator model of the HDL (spec §24.5)."""
    from neurovm.host.backend import EmulatorBackend

    if name == "verilator":
        from neurovm.host.verilator import VerilatorBackend

        return VerilatorBackend(demo_config())
    return EmulatorBackend(demo_config())


def run(raster, learn: bool, chunk: int = 1000, backend: str = "emulator"):
    """Spike steps of the output neuron and the weights after each chunk (one VM)."""
    from neurovm.host.runtime import Chip
    from neurovm.image import LearningRule

    chip = Chip(make_backend(backend))
    vm = chip.create_vm("masquelier")
    vm.load(network())
    vm.set_learning(LearningRule(**RULE, enable=0))
    out_id = int(vm.mapped.neurons("out")[0])
    spikes, weights = [], []
    for start in range(0, raster.shape[0], chunk):
        part = raster[start:start + chunk]
        res = vm.run(part.shape[0], {"in": part}, learn=learn)
        spikes.append(res.step[res.neuron == out_id] + start)
        weights.append((start + part.shape[0], np.concatenate(list(vm.weights().values()))))
    return np.concatenate(spikes), weights


def score(spikes, onsets, steps: int):
    """Per presentation: hit (a spike in [onset, onset + PATTERN_LEN)) and latency; false alarms."""
    hit = np.zeros(onsets.size, dtype=bool)
    latency = np.full(onsets.size, np.nan)
    in_window = np.zeros(spikes.size, dtype=bool)
    for k, t0 in enumerate(onsets):
        inside = (spikes >= t0) & (spikes < t0 + PATTERN_LEN)
        in_window |= inside
        if inside.any():
            hit[k] = True
            latency[k] = spikes[inside].min() - t0
    noise_steps = steps - onsets.size * PATTERN_LEN
    return hit, latency, int((~in_window).sum()), noise_steps, in_window


def blocks(onsets, spikes, in_window, hit, latency):
    """The learning curve: one row per BLOCK presentations."""
    rows = []
    edges = list(range(0, onsets.size, BLOCK))
    for b0 in edges:
        b1 = min(b0 + BLOCK, onsets.size)
        t_lo = onsets[b0] - GAP[1] if b0 else 0
        t_hi = onsets[b1] if b1 < onsets.size else onsets[-1] + PATTERN_LEN + GAP[0]
        fa = int(((spikes >= t_lo) & (spikes < t_hi) & ~in_window).sum())
        noise = (t_hi - t_lo) - (b1 - b0) * PATTERN_LEN
        rows.append(dict(first=b0 + 1, last=b1, hit=float(hit[b0:b1].mean()),
                         fa_per_1k=1000.0 * fa / max(noise, 1),
                         latency=float(np.nanmean(latency[b0:b1])) if hit[b0:b1].any() else float("nan")))
    return rows


def plot(path, learned, control, weights, pattern):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=120)
    x = [r["last"] for r in learned]
    axes[0].plot(x, [r["hit"] for r in learned], "o-", label="STDP: hit rate")
    axes[0].plot(x, [r["hit"] for r in control], "s--", color="grey", label="no learning: hit rate")
    axes[0].set_xlabel("presentations")
    axes[0].set_ylabel("fraction of presentations detected")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=8)
    axes[1].plot(x, [r["fa_per_1k"] for r in learned], "o-", label="STDP")
    axes[1].plot(x, [r["fa_per_1k"] for r in control], "s--", color="grey", label="no learning")
    axes[1].set_xlabel("presentations")
    axes[1].set_ylabel("false alarms per 1,000 noise steps")
    axes[1].legend(fontsize=8)
    final = weights[-1][1]
    fires = pattern.any(axis=0)
    last = np.where(fires, PATTERN_LEN - 1 - np.argmax(pattern[::-1], axis=0), -1)
    axes[2].scatter(last[fires], final[:PATTERN_AFFERENTS][fires], s=10, label="pattern afferents (spiking in it)")
    axes[2].scatter(np.full(int((~fires).sum()), -2), final[:PATTERN_AFFERENTS][~fires], s=10, color="tab:green",
                    label="pattern afferents silent in it")
    rng = np.random.default_rng(0)
    axes[2].scatter(PATTERN_LEN + 1 + rng.random(AFFERENTS - PATTERN_AFFERENTS), final[PATTERN_AFFERENTS:], s=4,
                    color="grey", label="noise-only afferents")
    axes[2].axvline(learned[-1]["latency"], color="tab:red", ls=":", label="mean detection latency (last block)")
    axes[2].set_xlabel("afferent's last spike in the pattern (step from onset)")
    axes[2].set_ylabel("final weight (8-bit)")
    axes[2].legend(fontsize=7)
    fig.suptitle("On-chip STDP (§24) on the emulator: one neuron finds a repeating pattern in noise")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presentations", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=["emulator", "verilator"], default="emulator",
                    help="verilator: run the learning run on the Verilator model of the HDL as well and "
                         "require spikes and weights identical to the emulator's")
    ap.add_argument("--plot", default=str(Path(__file__).resolve().parents[1] / "docs" / "learning_curve.png"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    raster, onsets, pattern = make_input(rng, args.presentations)
    t0 = time.perf_counter()
    spikes, weights = run(raster, learn=True)
    wall = time.perf_counter() - t0
    c_spikes, _ = run(raster, learn=False)
    if args.backend == "verilator":
        t1 = time.perf_counter()
        v_spikes, v_weights = run(raster, learn=True, backend="verilator")
        v_wall = time.perf_counter() - t1
        same = np.array_equal(v_spikes, spikes) and all(
            tv == te and np.array_equal(wv, we) for (tv, wv), (te, we) in zip(v_weights, weights))
        print(f"Verilator model of the HDL: learning run {v_wall:.1f} s ({raster.shape[0] / v_wall:.0f} steps/s); "
              f"spikes and weights after every chunk identical to the emulator: {same}")
        if not same:
            raise SystemExit("the Verilator model and the emulator learned differently")
    curves = {}
    for name, sp in (("stdp", spikes), ("control", c_spikes)):
        hit, lat, fa, noise_steps, in_window = score(sp, onsets, raster.shape[0])
        curves[name] = blocks(onsets, sp, in_window, hit, lat)
    print(f"{raster.shape[0]} steps, {args.presentations} presentations, {int(raster.sum())} input spikes; "
          f"learning run {wall:.1f} s on the emulator ({raster.shape[0] / wall:.0f} steps/s)")
    print("| presentations | hit rate (STDP) | false alarms / 1k steps (STDP) | latency (steps) | "
          "hit rate (no learning) | false alarms / 1k (no learning) |")
    print("|---|---|---|---|---|---|")
    for r, c in zip(curves["stdp"], curves["control"]):
        print(f"| {r['first']}-{r['last']} | {r['hit']:.2f} | {r['fa_per_1k']:.1f} | {r['latency']:.1f} | "
              f"{c['hit']:.2f} | {c['fa_per_1k']:.1f} |")
    final = weights[-1][1]
    print(f"final mean weight: pattern afferents {final[:PATTERN_AFFERENTS].mean():.1f}, "
          f"noise afferents {final[PATTERN_AFFERENTS:].mean():.1f} (start {WEIGHT0})")
    plot(args.plot, curves["stdp"], curves["control"], weights, pattern)
    print(f"wrote {args.plot}")
    return curves


if __name__ == "__main__":
    main()
