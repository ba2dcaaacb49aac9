"""Sharing a chip (issue #13, item 6): threads, serial ports, the Verilator model cache.

* A :class:`Chip` used by several threads: one lock around each exchange and each
  operation of several exchanges -- 4 threads x 50 mixed calls on two VMs give no
  error and the results of a sequential run.
* A serial port is opened exclusively: a second opener (this process or another)
  gets "port busy: <port>".
* Two processes building the same Verilator model at once: one build, both succeed.
"""

import os
import subprocess
import sys
import textwrap
import threading
import tty
from pathlib import Path

import numpy as np
import pytest

import neurovm
from neurovm.config import ChipConfig
from neurovm.formats import Region
from neurovm.host.serial_backend import BridgeError
from neurovm.mapper import Network

CFG = ChipConfig(mesh_width=2, mesh_height=2, neurons_per_core=16, synapses_per_core=64,
                 axons_per_core=16, fanout_per_core=32, max_vms=3, vcores_per_vm=4)
THREADS, ITERATIONS, STEPS = 4, 50, 6
ROOT = Path(__file__).resolve().parents[1]


def memoryless_net() -> Network:
    """out[j] spikes at step s iff in[j] spiked at step s and in[j+1] did not: full decay and
    no refractory period, so a run's output depends only on its own inputs -- whatever
    other threads ran on the chip in between."""
    net = Network()
    a = net.population("in", 8, report=False)
    b = net.population("out", 8, du=4095, dv=4095, vth_mant=10, bias_mant=0, refract=0)
    net.connect(a, b, [(j, j, 60) for j in range(8)] + [(j + 1, j, -60) for j in range(7)])
    return net


def plan(thread: int) -> list[tuple]:
    """The calls of one thread: runs with its own inputs, reads, telemetry, relocations."""
    rng = np.random.default_rng(thread)
    ops = []
    for i in range(ITERATIONS):
        kind = ("run", "run", "read", "telemetry", "run")[i % 5]
        if thread == 0 and i % 10 == 9:
            kind = "relocate"
        ops.append((kind, rng.random((STEPS, 8)) < 0.5))
    return ops


def do(chip, vm, kind, raster):
    """One call; the part of its answer that must not depend on the interleaving."""
    if kind == "run":
        out = vm.run(STEPS, {"in": raster})
        return kind, out.step.tolist(), out.neuron.tolist()
    if kind == "read":
        return kind, chip.read(vm.id, 0, Region.SYN, 0, 32).tolist()
    if kind == "telemetry":
        return kind, sorted(vm.telemetry())
    chip.relocate(vm, 0, chip.free_cores[0])      # only thread 0 takes free cores: no race for them
    return kind, None


def tenants():
    chip = neurovm.open("emulator", CFG)
    vms = [chip.create_vm(n, cores=1).load(memoryless_net()) for n in ("a", "b")]
    return chip, vms


def test_threads_sharing_a_chip_see_no_errors_and_sequential_results():
    chip, vms = tenants()
    got = {t: [] for t in range(THREADS)}
    errors = []

    def worker(t):
        try:
            for kind, raster in plan(t):
                got[t].append(do(chip, vms[t % 2], kind, raster))
        except Exception as e:       # noqa: BLE001 - collected and reported below
            errors.append(f"thread {t}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errors == []
    chip2, vms2 = tenants()
    want = {t: [do(chip2, vms2[t % 2], kind, raster) for kind, raster in plan(t)] for t in range(THREADS)}
    assert got == want
    spikes = sum(len(r[1]) for t in got for r in got[t] if r[0] == "run")
    assert spikes > 300                       # the runs did compute something
    # a VM's run steps that VM only (a gated RUN, §6.1): each counts exactly its own runs
    for i, vm in enumerate(vms):
        runs = sum(kind == "run" for t in range(THREADS) if t % 2 == i for kind, _ in plan(t))
        assert vm.telemetry()["steps"] == runs * STEPS
    assert sorted([p for v in vms for p in v.pcores] + chip.free_cores) == list(range(4))    # books agree


def test_one_threads_grouped_calls_do_not_interleave_with_others():
    """``with chip.lock:`` groups calls of one thread (the lock is re-entrant)."""
    chip, (a, b) = tenants()
    seen = []

    def writer():
        for i in range(200):
            with chip.lock:
                chip.write(a.id, 0, Region.NRN_VTH, 0, [i])
                chip.write(a.id, 0, Region.NRN_VTH, 1, [i])

    def reader():
        for _ in range(200):
            seen.append(chip.read(a.id, 0, Region.NRN_VTH, 0, 2).tolist())

    ts = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert all(x == y for x, y in seen) and len(seen) == 200


# ---- serial ports ---------------------------------------------------------------------------------------
@pytest.fixture
def pty_path():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


def test_a_serial_port_is_opened_exclusively_in_this_process(pty_path):
    first = neurovm.open(f"fpga:{pty_path}")
    with pytest.raises(BridgeError, match=rf"port busy: {pty_path} is open in another process or handle"):
        neurovm.open(f"fpga:{pty_path}")
    first.backend.close()
    neurovm.open(f"fpga:{pty_path}").backend.close()     # free again once closed


def test_a_serial_port_held_by_another_process_is_busy(pty_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, neurovm
            chip = neurovm.open("fpga:{pty_path}")
            print("holding", flush=True)
            sys.stdin.readline()
        """)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(BridgeError, match=rf"port busy: {pty_path}"):
            neurovm.open(f"fpga:{pty_path}")
    finally:
        holder.communicate("done\n", timeout=30)
    neurovm.open(f"fpga:{pty_path}").backend.close()


# ---- the Verilator model cache ----------------------------------------------------------------------------
BUILDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from neurovm.host.verilator import cached_build

    root, fail = Path(sys.argv[1]), sys.argv[2] == "fail"

    def build(folder):
        with open(root / "builds.log", "a") as f:
            f.write(f"{os.getpid()}\\n")
        (folder / "half-done").write_text("x")
        time.sleep(1.0)                 # long enough for the other process to arrive meanwhile
        if fail:
            raise RuntimeError("compiler crashed")
        (folder / "libneurochip.so").write_text(f"built by {os.getpid()}")

    print(cached_build(root, "k123", build))
""")


def _builders(root: Path, n: int, mode: str = "ok") -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(root), mode], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    return [subprocess.CompletedProcess(p.args, p.wait(60), *p.communicate()) for p in procs]


def test_two_processes_building_the_same_model_build_it_once(tmp_path):
    results = _builders(tmp_path, 2)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    paths = {r.stdout.strip() for r in results}
    assert paths == {str(tmp_path / "k123" / "libneurochip.so")}
    assert len((tmp_path / "builds.log").read_text().split()) == 1          # one build
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builds.log", "k123", "k123.lock"]   # no temp folders


def test_a_failed_build_leaves_no_model_behind(tmp_path):
    results = _builders(tmp_path, 1, "fail")
    assert results[0].returncode != 0 and "compiler crashed" in results[0].stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builds.log", "k123.lock"]
    ok = _builders(tmp_path, 1)
    assert ok[0].returncode == 0 and (tmp_path / "k123" / "libneurochip.so").exists()
