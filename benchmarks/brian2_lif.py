"""Brian2 reference for benchmarks/emulator_throughput.py: the same LIF network, timed in Brian2.

Usage (normally started by emulator_throughput.py, in whatever Python has a working Brian2)::

    python benchmarks/brian2_lif.py NETWORK.npz --target numpy|cython --steps 300

``NETWORK.npz`` holds ``src``, ``dst``, ``weight`` (synapses) and the per-neuron
``bias_mant`` and the scalars ``du``, ``dv``, ``refract``, ``bias_exp``,
``vth_mant`` of the emulator's network.  The model is the chip's CUBA-LIF in
floating point, dt = 1 ms, forward Euler (which is the chip's update):
``I -= I * (du + 1) / 4096``; ``v += -v * dv / 4096 + I + bias_mant * 2^bias_exp``;
spike when ``v > vth_mant * 64``, then ``v = 0`` and ``refract`` steps of refractoriness;
a spike adds ``64 * w`` to its targets' ``I`` (weight_exp 0), integrated at the next step.
Printed: one line ``steps wall_s spikes synaptic_events`` (events = spikes x out-degree),
code generation and compilation excluded (a first short run does them).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network")
    ap.add_argument("--target", default="numpy", choices=["numpy", "cython"])
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    import brian2 as b2

    net_data = np.load(args.network)
    src, dst, weight = net_data["src"], net_data["dst"], net_data["weight"]
    n = int(net_data["bias_mant"].size)
    b2.prefs.codegen.target = args.target
    b2.defaultclock.dt = 1 * b2.ms
    g_u = (int(net_data["du"]) + 1) / 4096
    g_v = int(net_data["dv"]) / 4096
    eqs = f"""
    dI/dt = -I * {g_u} / ms : 1
    dv/dt = (-v * {g_v} + I + bias) / ms : 1 (unless refractory)
    bias : 1 (constant)
    """
    group = b2.NeuronGroup(n, eqs, threshold=f"v > {int(net_data['vth_mant']) * 64}", reset="v = 0",
                           refractory=int(net_data["refract"]) * b2.ms, method="euler")
    group.bias = net_data["bias_mant"] * 2.0 ** int(net_data["bias_exp"])
    syn = b2.Synapses(group, group, "w : 1", on_pre="I_post += w")
    syn.connect(i=src, j=dst)
    syn.w = 64.0 * weight
    spikes = b2.SpikeMonitor(group)
    net = b2.Network(group, syn, spikes)
    net.run(5 * b2.ms)  # code generation and compilation
    before = spikes.num_spikes
    count_before = np.asarray(spikes.count[:]).copy()
    t0 = time.perf_counter()
    net.run(args.steps * b2.ms)
    wall = time.perf_counter() - t0
    out_degree = np.bincount(src, minlength=n)
    events = int(((np.asarray(spikes.count[:]) - count_before) * out_degree).sum())
    print(args.steps, wall, spikes.num_spikes - before, events)


if __name__ == "__main__":
    main()
