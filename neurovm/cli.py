"""The ``neurovm`` command line.

    neurovm --version
    neurovm demo [--backend verilator --check]          two tenants sharing one chip
    neurovm convert MODEL.onnx --calibration X.npy -o MODEL.nvm
    neurovm run MODEL.nvm --input X.npy [--labels y.npy] [--backend verilator] [--raster out.png]
    neurovm run NET.nvmap|NET.nir --steps N [--rate P] [--raster out.png]
    neurovm map MODEL.nvm|NET.nir|NET.nvmap [-o NET.nvmap]
    neurovm vms MODEL.nvm [MODEL2.nvm ...] --input X.npy    tenants side by side: status and telemetry
    neurovm fpga boards | build --board icebreaker|ulx3s | flash --board B

Every error is one line naming what is wrong; the exit status is 2 for bad
input, 1 for a failed check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__

BACKENDS = ["emulator", "verilator"]


def _backend(value: str) -> str:
    """argparse type of --backend: emulator, verilator or fpga:PORT."""
    if value in BACKENDS or (value.startswith("fpga:") and len(value) > 5):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected emulator, verilator or fpga:PORT (e.g. fpga:/dev/ttyUSB1)")


class CliError(Exception):
    """Bad input on the command line: printed as one line, exit status 2."""


def _load_array(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"{what} {path}: no such file") from None
    except Exception as e:   # noqa: BLE001
        raise CliError(f"{what} {path}: not a readable .npy array ({type(e).__name__}: {e})") from None


def _load_network(path: str, config):
    """A MappedNetwork or a mapper Network from .nvmap / .nir / .nvm."""
    from .host.model import load_model
    from .host.nir_import import import_nir
    from .mapper import MappedNetwork

    p = Path(path)
    if not p.exists():
        raise CliError(f"{p}: no such file")
    if p.suffix == ".nvmap":
        return MappedNetwork.load(p), None
    if p.suffix == ".nir":
        return import_nir(p, config=config).network, None
    if p.suffix == ".nvm":
        model = load_model(p)
        return model.network(), model
    raise CliError(f"{p}: unknown file type {p.suffix!r}; expected .nvm (model), .nvmap (mapped network) or .nir")


def _progress(done: int, total: int, t0: float, what: str, unit: str) -> None:
    rate = done / max(time.perf_counter() - t0, 1e-9)
    width = 30
    bar = "#" * int(width * done / total) + "-" * (width - int(width * done / total))
    print(f"\r{what} [{bar}] {done}/{total} {unit}, {rate:.1f}/s", end="" if done < total else "\n",
          file=sys.stderr, flush=True)


def _telemetry_table(rows: list[dict]) -> str:
    cols = ["vm", "name", "pcores", "neurons", "synapses", "steps", "spikes_out", "syn_ops", "packets_sent",
            "energy_pj"]
    fmt = {"energy_pj": lambda v: f"{v / 1e6:.3f} uJ", "pcores": lambda v: ",".join(map(str, v))}
    cells = [[h if h != "energy_pj" else "energy" for h in cols]]
    cells += [[fmt.get(c, str)(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)


def cmd_convert(args) -> int:
    from .host.model import convert_onnx

    calib = _load_array(args.calibration, "calibration data")
    model = convert_onnx(args.model, calib, steps=args.steps, percentile=args.percentile)
    model.save(args.output)
    print(f"{args.output}: {' -> '.join(map(str, model.sizes))} neurons, thresholds {model.vth_mant}, "
          f"{model.steps} steps per sample; normalisation {['%.3g' % x for x in model.meta['normalisation']]}")
    return 0


def cmd_run(args) -> int:
    import neurovm

    from .config import DEFAULT_CONFIG

    net, model = _load_network(args.network, DEFAULT_CONFIG)
    config = model.config if model is not None else getattr(net, "config", DEFAULT_CONFIG)
    chip = neurovm.open(args.backend, config)
    if model is not None:
        if args.input is None:
            raise CliError("run MODEL.nvm needs --input X.npy (samples x inputs)")
        x = _load_array(args.input, "input")
        if args.samples:
            x = x[: args.samples]
        steps = args.steps or model.steps
        t0 = time.perf_counter()
        pred = model.predict(x, chip=chip, steps=steps, progress=False if args.quiet else
                             (lambda done, total: _progress(done, total, t0, "predict", "samples")))
        dt = time.perf_counter() - t0
        print(f"{x.shape[0]} samples x {steps} steps on the {args.backend} backend in {dt:.1f} s")
        print("predictions:", " ".join(map(str, pred[:40])) + (" ..." if pred.size > 40 else ""))
        if args.labels:
            y = _load_array(args.labels, "labels")[: x.shape[0]]
            if y.shape != pred.shape:
                raise CliError(f"labels {args.labels}: {y.shape[0]} labels for {pred.shape[0]} samples")
            print(f"accuracy: {float((pred == y).mean()) * 100:.2f} %")
        if args.output:
            np.save(args.output, pred)
        if args.raster:
            vm = chip.create_vm("raster", cores=model.cores_needed()).load(model.network())
            out = vm.run(steps, {"input": model.encode(x[0], steps)})
            out.raster(args.raster, title=f"{Path(args.network).name}: sample 0, {len(out)} output spikes")
            print(f"raster of sample 0 written to {args.raster}")
        return 0
    from .mapper import MappedNetwork, map_network

    mapped = net if isinstance(net, MappedNetwork) else map_network(net, config)
    vm = chip.create_vm("run", cores=len(mapped.images)).load(mapped)
    steps = args.steps or 100
    rng = np.random.default_rng(args.seed)
    inputs = {}
    if args.rate:
        pop = args.input_population or next(iter(vm.mapped.populations), None)
        if pop is None:
            raise CliError("--rate needs a population to feed (--input-population NAME)")
        size = vm.mapped.neurons(pop).size
        inputs = {pop: rng.random((steps, size)) < args.rate}
    chunk = max(1, min(steps, 50))
    t0 = time.perf_counter()
    parts = []
    for s in range(0, steps, chunk):
        n = min(chunk, steps - s)
        part = vm.run(n, {k: v[s:s + n] for k, v in inputs.items()})
        parts.append((s, part))
        if not args.quiet:
            _progress(s + n, steps, t0, "run", "steps")
    from .host import SpikeTrains

    out = SpikeTrains(np.concatenate([p.step + s for s, p in parts]), np.concatenate([p.neuron for _, p in parts]),
                      vm.mapped.n, steps)
    counts = out.counts()
    print(f"{steps} steps on the {args.backend} backend: {len(out)} reported spikes from "
          f"{int((counts > 0).sum())} neurons")
    print(_telemetry_table(chip.status()))
    if args.raster:
        out.raster(args.raster, title=f"{Path(args.network).name}: {len(out)} spikes")
        print(f"raster written to {args.raster}")
    return 0


def cmd_map(args) -> int:
    from .config import DEFAULT_CONFIG
    from .mapper import MappedNetwork, map_network

    net, _ = _load_network(args.network, DEFAULT_CONFIG)
    mapped = net if isinstance(net, MappedNetwork) else map_network(net, DEFAULT_CONFIG)
    rep = mapped.report
    print(f"{args.network}: {rep['neurons']:,} neurons, {rep['synapses']:,} synapses on {rep['cores']} cores "
          f"of a {mapped.config.mesh_width}x{mapped.config.mesh_height} chip")
    print(f"  packet volume {rep['packet_volume']:,.0f} per step (all neurons firing), mean hops "
          f"{rep['mean_hops']:.2f}")
    for name, u in rep["utilisation"].items():
        print(f"  {name:9s} max {u['max'] * 100:5.1f} %   mean {u['mean'] * 100:5.1f} %")
    print(f"  vcore -> physical core: {rep['pcore_of_vcore']}")
    if args.json:
        print(json.dumps(rep))
    if args.output:
        mapped.save(args.output)
        print(f"written to {args.output}")
    return 0


def cmd_vms(args) -> int:
    import neurovm

    from .host.model import load_model

    models = [load_model(p) for p in args.models]
    configs = {m.config for m in models}
    if len(configs) > 1:
        raise CliError("the models were converted for different chip configurations")
    chip = neurovm.open(args.backend, models[0].config)
    x = _load_array(args.input, "input")[: args.samples] if args.input else None
    vms = []
    for path, m in zip(args.models, models):
        name = Path(path).stem
        while any(v.name == name for v in vms):
            name += "'"
        vms.append(chip.create_vm(name, cores=m.cores_needed()).load(m.network()))
    steps = max(m.steps for m in models)
    n = x.shape[0] if x is not None else 1
    t0 = time.perf_counter()
    for i in range(n):
        feeds = {}
        for vm, m in zip(vms, models):
            vm.reset_state()
            feeds[vm] = {"input": m.encode(x[i], steps)} if x is not None else {}
        chip.run(steps, feeds)
        if not args.quiet and n > 1:
            _progress(i + 1, n, t0, "run", "samples")
    print(f"{len(vms)} tenant VMs on one {chip.config.mesh_width}x{chip.config.mesh_height} {args.backend} chip, "
          f"{n} sample(s) x {steps} steps; free cores: {chip.free_cores}")
    print(_telemetry_table(chip.status()))
    return 0


def cmd_fpga(args) -> int:
    from .fpga import BOARDS, build, flash

    if args.fpga_command == "boards":
        for name, spec in BOARDS.items():
            c = spec.config
            print(f"{name:11s} {spec.description}: {c.mesh_width}x{c.mesh_height} cores x {c.neurons_per_core} "
                  f"neurons, {c.synapses_per_core} synapses per core, UART {spec.baud} baud")
        return 0
    if args.fpga_command == "build":
        print(f"building the {args.board} bitstream with yowasp yosys/nextpnr (several minutes; the first call "
              "also compiles the WebAssembly tools) ...", file=sys.stderr)
        report = build(args.board, args.out, verbose=args.verbose,
                       progress=None if args.verbose else (lambda line: print(line, file=sys.stderr, flush=True)))
        print(report.summary())
        return 0
    flash(args.board, args.bitstream, args.tool)
    print(f"{args.board}: programmed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neurovm", description="NeuroVM neuromorphic chip toolkit")
    parser.add_argument("--version", action="version", version=f"neurovm {__version__}")
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="two tenant VMs sharing one chip; prints spikes and telemetry")
    demo.add_argument("--backend", default="emulator", choices=BACKENDS)
    demo.add_argument("--check", action="store_true",
                      help="also run on the emulator; fail on the first output word that differs")
    demo.add_argument("--waves", metavar="FILE.vcd", help="verilator: write a waveform")
    demo.add_argument("--steps", type=int, default=200, help="timesteps to run (default 200)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the input spike trains")

    conv = sub.add_parser("convert", help="convert an ONNX ReLU network to a rate-coded SNN model (.nvm)")
    conv.add_argument("model", help="MODEL.onnx")
    conv.add_argument("--calibration", required=True, metavar="X.npy", help="input samples for normalisation")
    conv.add_argument("-o", "--output", required=True, metavar="MODEL.nvm")
    conv.add_argument("--steps", type=int, default=32, help="timesteps per sample (default 32)")
    conv.add_argument("--percentile", type=float, default=99.9, help="activation percentile for normalisation")

    run = sub.add_parser("run", help="run a model (.nvm) on inputs, or a network (.nvmap/.nir) for N steps")
    run.add_argument("network", help="MODEL.nvm, NET.nvmap or NET.nir")
    run.add_argument("--backend", default="emulator", type=_backend, help="emulator, verilator or fpga:PORT")
    run.add_argument("--input", metavar="X.npy", help="model inputs, samples x inputs")
    run.add_argument("--labels", metavar="Y.npy", help="labels: print the accuracy")
    run.add_argument("--samples", type=int, help="only the first N samples")
    run.add_argument("--steps", type=int, help="timesteps (per sample for models)")
    run.add_argument("--rate", type=float, help="network: random input spikes with this probability per step")
    run.add_argument("--input-population", help="network: the population --rate feeds (default: the first)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--raster", metavar="OUT.png", help="write a spike raster plot")
    run.add_argument("-o", "--output", metavar="PRED.npy", help="model: save the predictions")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    mp = sub.add_parser("map", help="map a model or network onto the chip and print the mapping report")
    mp.add_argument("network", help="MODEL.nvm, NET.nir or NET.nvmap")
    mp.add_argument("-o", "--output", metavar="NET.nvmap", help="save the mapped network")
    mp.add_argument("--json", action="store_true", help="also print the report as JSON")

    vms = sub.add_parser("vms", help="load several models as tenant VMs on one chip, run them together, "
                                     "print each tenant's status and telemetry")
    vms.add_argument("models", nargs="+", metavar="MODEL.nvm")
    vms.add_argument("--backend", default="emulator", type=_backend, help="emulator, verilator or fpga:PORT")
    vms.add_argument("--input", metavar="X.npy", help="inputs fed to every model")
    vms.add_argument("--samples", type=int, default=1)
    vms.add_argument("-q", "--quiet", action="store_true")

    fpga = sub.add_parser("fpga", help="FPGA bitstreams: boards, build, flash")
    fsub = fpga.add_subparsers(dest="fpga_command", required=True)
    fsub.add_parser("boards", help="the supported boards and their chip configurations")
    fb = fsub.add_parser("build", help="build the bitstream and print LUTs, block RAM, Fmax")
    fb.add_argument("--board", required=True, choices=["icebreaker", "ulx3s"])
    fb.add_argument("--out", help="build directory (default build/fpga/BOARD)")
    fb.add_argument("-v", "--verbose", action="store_true", help="show the toolchain's output")
    ff = fsub.add_parser("flash", help="program the board (openFPGALoader or iceprog)")
    ff.add_argument("--board", required=True, choices=["icebreaker", "ulx3s"])
    ff.add_argument("--bitstream", help="default: the last build of this board")
    ff.add_argument("--tool", help="the programmer to run (default: openFPGALoader, then iceprog)")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(backend=args.backend, steps=args.steps, seed=args.seed, check=args.check, waves=args.waves)
    handlers = {"convert": cmd_convert, "run": cmd_run, "map": cmd_map, "vms": cmd_vms, "fpga": cmd_fpga}
    if args.command not in handlers:
        parser.print_help()
        return 0
    from .fpga import FpgaError
    from .host import VMError
    from .host.model import ModelError
    from .host.serial_backend import BridgeError
    from .host.nir_import import NirError
    from .mapper import MapError

    try:
        return handlers[args.command](args)
    except (CliError, ModelError, NirError, MapError, VMError, FpgaError, BridgeError) as e:
        print(f"neurovm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
