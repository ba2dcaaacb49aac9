"""The client API, the edge-list builder, the energy model, the demo and the CLI."""

import subprocess
import sys

import numpy as np
import pytest

from neurovm import __version__
from neurovm.config import HV_VM, ChipConfig
from neurovm.emulator import DEFAULT_ENERGY, EnergyModel
from neurovm.formats import GUEST_COUNTERS, Counter, Region
from neurovm.host import ChipClient, ChipError, EmulatorBackend
from neurovm.host import open as open_chip
from neurovm.host import protocol as P
from neurovm.image import CoreImage, ImageError
from neurovm.netbuild import images_from_edges


def test_placement_does_not_change_what_a_network_computes():
    """Same random network, scattered over 4 cores vs all on one core: identical spikes."""
    rng = np.random.default_rng(3)
    n = 120
    conn = rng.random((n, n)) < 0.08
    src, dst = np.nonzero(conn)
    w = rng.integers(-60, 100, size=src.size)
    params = dict(du=rng.integers(0, 4096, n), dv=rng.integers(0, 600, n), refract=rng.integers(0, 3, n),
                  bias_mant=rng.integers(0, 200, n), bias_exp=2, vth_mant=rng.integers(50, 300, n))
    cfg = ChipConfig(neurons_per_core=128, axons_per_core=128, synapses_per_core=4096, fanout_per_core=512)
    results = []
    for core_of in (rng.integers(0, 4, size=n), np.zeros(n, dtype=np.int64)):
        chip = ChipClient(EmulatorBackend(cfg))
        images = images_from_edges(cfg, core_of, src, dst, w, params)
        for vc, img in images.items():
            chip.map(0, vc, 3 - vc)
            chip.load_core(0, vc, img)
        # input "as if neurons 0..9 spiked": axon j on every core carries neuron j's synapses
        res = chip.run(40, inject={0: [(0, vc, a) for a in range(10) for vc in images]})
        local = {vc: np.flatnonzero(core_of == vc) for vc in images}
        glob = sorted((int(s["timestep"]), int(local[int(s["vcore"])][int(s["neuron"])])) for s in res.spikes)
        results.append(glob)
    assert len(results[0]) > 200
    assert results[0] == results[1]


def test_errors_name_what_is_wrong_and_the_chip_keeps_working():
    chip = open_chip()
    chip.map(0, 0, 2)
    with pytest.raises(ChipError, match=r"write VM 0 vcore 0 SYN\[16383\].*BAD_ADDRESS"):
        chip.write(0, 0, Region.SYN, 16383, [0, 0])
    with pytest.raises(ChipError, match="UNMAPPED fault: VM 0"):
        chip.inject(0, 1, [0])
    with pytest.raises(ImageError, match=r"SYN\[1\]: target=300 outside 0..255"):
        CoreImage(target=[1, 300], weight=[0, 0]).region_words(chip.config)
    with pytest.raises(ImageError, match="AXON: 2000 entries given, the core has 1024"):
        CoreImage(syn_start=np.zeros(2000), syn_len=np.zeros(2000)).region_words(chip.config)
    with pytest.raises(ValueError, match="inject keys"):
        chip.run(2, inject={5: []})
    chip.load_core(0, 0, CoreImage(bias_mant=[700], vth_mant=[10], report=[1]))
    assert len(chip.run(3).spikes) == 3


def test_energy_model_weights_counters():
    chip = open_chip()
    chip.map(0, 0, 0)
    chip.map(0, 1, 3)
    chip.load_core(0, 0, CoreImage(bias_mant=[700], vth_mant=[10], fo_start=[0], fo_len=[1],
                                   fo_axon=[0], fo_vcore=[1]))
    chip.load_core(0, 1, CoreImage(syn_start=[0], syn_len=[3], target=[0, 0, 0], weight=[1, 1, 1],
                                   vth_mant=[2**17 - 1]))
    chip.run(10)
    c = np.array([chip.counters(0, 0), chip.counters(0, 1)])
    total = c.sum(axis=0)
    assert total[Counter.PACKETS_SENT] == 10 and total[Counter.HOPS_X] == 10 and total[Counter.HOPS_Y] == 10
    assert total[Counter.SYN_OPS] == 30  # counted on delivery: the 10th spike waits in ACC for step 11
    assert total.size == GUEST_COUNTERS        # a guest cannot read the router counters (§9.1)...
    with pytest.raises(ChipError, match="PERMISSION"):
        chip._checked("guest PACKETS_ROUTED", P.encode_read_counters(0, 0, 0, GUEST_COUNTERS + 1))
    routers = [int(chip.counters(HV_VM, p)[Counter.PACKETS_ROUTED]) for p in range(4)]
    assert routers[0] + routers[3] == 20      # ...which count this VM's packets at its own routers, and
    assert routers[1] == 10                   # the XY corner (core 1, x=1 y=0, not VM 0's) routes them too:
    attributed = total[Counter.PACKETS_SENT] + total[Counter.HOPS_X] + total[Counter.HOPS_Y]
    assert attributed == sum(routers) == 30   # sent + hops is exactly what VM 0's traffic cost the routers
    e = DEFAULT_ENERGY.energy_pj(c)
    assert e == pytest.approx(30 * 23.6 + 20 * 81.0 + 10 * 1.7 + 10 * 3.0 + 10 * 4.0)
    assert EnergyModel(syn_op_pj=0, neuron_update_pj=0, spike_pj=0, hop_x_pj=1, hop_y_pj=0).energy_pj(c) == 10


def test_demo_runs_and_checks_itself(capsys):
    from neurovm.demo import run_demo

    assert run_demo(steps=60) == 0
    out = capsys.readouterr().out
    assert "UNMAPPED fault: VM 1" in out and "demo OK" in out


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "neurovm.cli", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"neurovm {__version__}"


def test_hypervisor_reset_of_one_core_scrubs_it_only():
    chip = open_chip()
    for p in (0, 1):
        chip.load_core(HV_VM, p, CoreImage(bias_mant=[700], vth_mant=[10]))
    chip.run(2)
    chip.reset(pcore=1)
    assert chip.read(HV_VM, 1, Region.NRN_BIAS, 0, 1)[0] == 0 and chip.counters(HV_VM, 1).sum() == 0
    assert chip.read(HV_VM, 0, Region.NRN_BIAS, 0, 1)[0] == 700


def test_root_open_names_unknown_backends():
    import neurovm

    assert neurovm.open("emulator").config == neurovm.DEFAULT_CONFIG
    with pytest.raises(ValueError, match="unknown backend 'fpga'; available: emulator, verilator"):
        neurovm.open("fpga")


def test_checked_backend_names_the_first_differing_word():
    """CheckedBackend (what `make sim` uses) catches a backend that disagrees with the reference."""
    import numpy as np

    from neurovm.host import CheckedBackend, CosimMismatch, EmulatorBackend
    from neurovm.host import protocol as P

    class Corrupting(EmulatorBackend):
        def receive(self):
            out = super().receive()
            if out.size > 1:
                out = out.copy()
                out[1] ^= 4   # flip one bit of the second word
            return out

    good = CheckedBackend(EmulatorBackend(), EmulatorBackend())
    words = P.encode_read(7, 0, 11, 0, 1)
    assert good.exchange(words).size == 2
    bad = CheckedBackend(Corrupting(), EmulatorBackend())
    with pytest.raises(CosimMismatch, match="output word 1: emulator gave 0x00000004, emulator 0x00000000"):
        bad.exchange(words)
