"""A three-neuron network whose spike times were worked out by hand (see the comments)."""

from neurovm.host import open as open_chip
from neurovm.image import CoreImage


def test_hand_computed_spike_times():
    chip = open_chip("emulator")
    chip.map(vm=1, vcore=0, pcore=3)
    chip.map(vm=1, vcore=1, pcore=0)
    # vcore 0: neuron A (n0): bias 100/step, no leak, vth 4*64=256 -> v = 100, 200, 300>256: spikes at 3, 6, 9, 12.
    #          A fans out to vcore 1 axon 0.
    #          neuron C (n1): bias 300 > 256 spikes every allowed step; refractory 2 -> 1, 4, 7, 10, 13.
    # vcore 1: neuron B (n0): axon 0 -> B with weight 50 (x64 = 3200); du=4095 clears u every step, no v leak,
    #          vth 60*64 = 3840.  A's spike at t is integrated at t+1: v = 3200 (t=4), 6400 > 3840 (t=7) -> spike,
    #          then 3200 (t=10), spike at t=13.
    chip.load_core(1, 0, CoreImage(
        bias_mant=[100, 300], vth_mant=[4, 4], refract=[0, 2], du=[4095, 4095],
        fo_start=[0, 0], fo_len=[1, 0], report=[1, 1], fo_axon=[0], fo_vcore=[1]))
    chip.load_core(1, 1, CoreImage(
        syn_start=[0], syn_len=[1], target=[0], weight=[50], du=[4095], vth_mant=[60], report=[1]))
    res = chip.run(13)
    got = [(int(t), int(vc), int(n)) for t, vm, vc, n in res.spikes]
    pcore_of = {0: 3, 1: 0}
    expected = sorted([(t, 0, 0) for t in (3, 6, 9, 12)] + [(t, 0, 1) for t in (1, 4, 7, 10, 13)]
                      + [(t, 1, 0) for t in (7, 13)], key=lambda e: (e[0], pcore_of[e[1]], e[2]))
    assert got == expected          # canonical order: by step, then physical core (pcore 0 = vcore 1 first!)
    assert set(res.spikes["vm"]) == {1}
    assert res.steps == list(range(1, 14)) and res.faults == []
    # B's voltage after step 13 was reset by its spike; after two more quiet steps it is still 0.
    chip.run(2)
    assert chip.read_state(1, 1, 1)["v"][0] == 0


def test_spikes_are_ordered_by_physical_core_within_a_step():
    chip = open_chip("emulator")
    chip.map(vm=0, vcore=0, pcore=3)
    chip.map(vm=0, vcore=1, pcore=0)
    for vc in (0, 1):
        chip.load_core(0, vc, CoreImage(bias_mant=[1000], vth_mant=[1], report=[1]))
    res = chip.run(1)
    assert [int(v) for v in res.spikes["vcore"]] == [1, 0]  # pcore 0 (vcore 1) before pcore 3 (vcore 0)
