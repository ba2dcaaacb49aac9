"""The ``neurovm`` command line.

    neurovm --version
    neurovm demo [--backend verilator --check]          two tenants sharing one chip
    neurovm convert MODEL.{onnx,h5,keras,tflite,pt,pt2} [--calibration X.npy] [--config auto] -o MODEL.nvm
    neurovm run MODEL.nvm --input X.npy [--labels y.npy] [--backend verilator] [--raster out.png]
    neurovm run NET.nvmap|NET.nir --steps N [--rate P] [--raster out.png]
    neurovm map MODEL.nvm|NET.nir|NET.nvmap [-o NET.nvmap]
    neurovm vms MODEL.nvm [MODEL2.nvm ...] --input X.npy    tenants side by side: status and telemetry
    neurovm fpga boards | build --board icebreaker|ulx3s | flash --board B
    neurovm serve [--backend B] [--chips N] [--data DIR] [--listen HOST:PORT]   the hypervisor as a service
    neurovm serve add-tenant NAME [--data DIR]                                 prints the tenant's token once
    neurovm run ... --server URL [--token-file F]       run on a server (token: $NEUROVM_TOKEN or the file)

Array options (``--input``, ``--labels``, ``--calibration``) take a ``.npy``
file or an ``.npz`` archive: ``X.npz`` when it holds one array, ``X.npz:NAME``
to choose one by name (see :mod:`neurovm.arrays`).

Every error is one line on stderr naming what is wrong, and the exit status is
2; a failed check (``demo``) exits 1. No option is silently reinterpreted:
counts must be positive, probabilities lie in [0, 1], percentiles in (0, 100],
an option that does not apply to the given file is refused, and every file the
command line writes is written atomically into an existing folder.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .arrays import ArrayError, load_array, split_array_spec
from .atomic import SaveError, atomic_write, unwritable
from .host.model import MAX_STEPS   # the most timesteps per sample a model may have; the CLI's limit for any run

BACKENDS = ["emulator", "verilator"]
BOARDS = ["icebreaker", "ulx3s"]
#: The fewest steps ``demo`` runs: both tenants spike by then (checked for seeds 0..199), so the
#: demo's checks mean something; fewer is refused rather than reported as a failed demo.
DEMO_MIN_STEPS = 10
#: Steps per chunk of a network run (one progress update each).
RUN_CHUNK = 50


class CliError(Exception):
    """Bad input on the command line: printed as one line, exit status 2."""


class UsageError(CliError):
    """An argument argparse refused; ``prog`` names the (sub)command."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (raised as :class:`UsageError`), no abbreviations."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(self.prog, message)


# ---- argument types -------------------------------------------------------------------------------
def _backend(value: str) -> str:
    """argparse type of --backend: emulator, verilator or fpga:PORT."""
    if value in BACKENDS or (value.startswith("fpga:") and len(value) > 5):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected emulator, verilator or fpga:PORT (e.g. fpga:/dev/ttyUSB1)")


def _int_in(lo: int, hi: int | None = None):
    """argparse type: an integer in ``lo..hi``."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"{value}: must be {lo}..{hi}" if hi is not None else
                                             f"{value}: must be at least {lo}")
        return n
    return parse


def _float_in(lo: float, hi: float, lo_open: bool = False):
    """argparse type: a float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); NaN and inf refused."""
    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not ((lo < x if lo_open else lo <= x) and x <= hi):
            raise argparse.ArgumentTypeError(f"{value}: must lie in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return x
    return parse


_steps = _int_in(1, MAX_STEPS)


def _positive_float(value: str) -> float:
    """argparse type: a finite number above 0 (``--dt``)."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not (x > 0 and x != float("inf")):
        raise argparse.ArgumentTypeError(f"{value}: must be a finite number above 0")
    return x


def _shape(value: str) -> tuple[int, ...]:
    """``--input-shape``: comma-separated sizes, each an integer >= 1."""
    try:
        dims = tuple(int(d) for d in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a shape (sizes separated by commas, e.g. 1,28,28)") \
            from None
    if not dims or min(dims) < 1 or len(dims) > 4:
        raise argparse.ArgumentTypeError(f"{value}: one to four sizes, each at least 1")
    return dims


_count = _int_in(1)
_seed = _int_in(0, 2 ** 63 - 1)


# ---- files ---------------------------------------------------------------------------------------
def _input_file(path: str, what: str) -> Path:
    """``path`` as an existing regular file, else a CliError naming it."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what} {p}: no such file")
    if p.is_dir():
        raise CliError(f"{what} {p}: is a folder, not a file")
    return p


def _output_file(path: str, what: str, suffix: str | None = None, inputs=()) -> Path:
    """``path`` checked as a place to write: its folder exists, it is not a folder nor one of ``inputs``."""
    p = Path(path)
    problem = unwritable(p)
    if problem:
        raise CliError(f"{what} {p}: {problem}")
    if suffix is not None and p.suffix.lower() != suffix:
        raise CliError(f"{what} {p}: the file name must end in {suffix}")
    for other in inputs:
        if other is not None and p.resolve() == Path(split_array_spec(str(other))[0]).resolve():
            raise CliError(f"{what} {p}: would overwrite the input file {other}")
    return p


def _load_network(path: str, config, dt: float | None = None):
    """A MappedNetwork or a mapper Network from .nvmap / .nir / .nvm; ``dt`` (``--dt``) is the NIR
    graph's time step per chip step (default 1e-3) and is refused for the other files."""
    from .host.model import load_model
    from .host.nir_import import import_nir
    from .mapper import MappedNetwork

    p = _input_file(path, "network")
    if dt is not None and p.suffix != ".nir":
        raise CliError(f"--dt applies to NIR graphs (.nir), not to {p}")
    if p.suffix == ".nvmap":
        return MappedNetwork.load(p), None
    if p.suffix == ".nir":
        return import_nir(p, 1e-3 if dt is None else dt, config=config).network, None
    if p.suffix == ".nvm":
        model = load_model(p)
        return model.network(), model
    raise CliError(f"{p}: unknown file type {p.suffix!r}; expected .nvm (model), .nvmap (mapped network) or .nir")


def _refuse(args, options: dict, why: str) -> None:
    """A CliError for the first of ``options`` ({attribute: flag}) that was given."""
    for attr, flag in options.items():
        if getattr(args, attr) not in (None, False):
            raise CliError(f"{flag} {why}")


# ---- output --------------------------------------------------------------------------------------
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


def _first_samples(x: np.ndarray, samples: int | None, option: str, source: str) -> np.ndarray:
    """The first ``samples`` rows of ``x`` (all when None); asking for more than there are is an error."""
    if x.ndim == 0 or x.shape[0] == 0:
        raise CliError(f"input {source}: no samples (shape {x.shape})")
    if samples is None:
        return x
    if samples > x.shape[0]:
        raise CliError(f"{option} {samples}: input {source} has only {x.shape[0]} samples")
    return x[:samples]


# ---- subcommands ---------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import run_demo

    if args.waves is not None:
        if args.backend != "verilator":
            raise CliError("--waves needs --backend verilator (only the Verilator model has waveforms)")
        _output_file(args.waves, "--waves", suffix=".vcd")
    return run_demo(backend=args.backend, steps=args.steps, seed=args.seed, check=args.check, waves=args.waves)


#: ``convert``: the converter of each model file suffix (docs/architecture.md §18).
CONVERT_SUFFIXES = {".onnx": "ONNX", ".h5": "Keras", ".keras": "Keras", ".tflite": "TFLite", ".pt": "PyTorch",
                    ".pth": "PyTorch", ".pt2": "PyTorch"}


def cmd_convert(args) -> int:
    import warnings

    from .host.importers.convert import CalibrationWarning

    model_path = _input_file(args.model, "model")
    kind = CONVERT_SUFFIXES.get(model_path.suffix.lower())
    if kind is None:
        raise CliError(f"model {model_path}: unknown file type {model_path.suffix!r}; expected "
                       f"{', '.join(CONVERT_SUFFIXES)}")
    if args.input_shape is not None and kind != "PyTorch":
        raise CliError(f"--input-shape applies to PyTorch files (.pt, .pth, .pt2), not to {kind} model {model_path}")
    out = _output_file(args.output, "-o", inputs=(args.model, args.calibration))
    calib = load_array(args.calibration, "calibration data") if args.calibration is not None else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        model = _convert_file(kind, model_path, calib, args)
    for w in caught:
        if issubclass(w.category, CalibrationWarning):
            print(f"neurovm convert: note: {_one_line(w.message)}", file=sys.stderr)
    model.save(out)                         # atomic (neurovm.npzfile.save_npz)
    cfg = model.config
    print(f"{out}: {kind} model, {' -> '.join(map(str, model.sizes))} neurons on {cfg.mesh_width}x{cfg.mesh_height} "
          f"cores, thresholds {model.vth_mant}, {model.steps} steps per sample; normalisation "
          f"({model.meta.get('normalisation_kind', 'data')}) {['%.3g' % x for x in model.meta['normalisation']]}")
    return 0


def _convert_file(kind: str, path: Path, calib, args):
    """The SnnModel of the model file ``path`` of ``kind`` (one converter per format)."""
    import neurovm

    from .config import DEFAULT_CONFIG

    config = "auto" if args.config == "auto" else DEFAULT_CONFIG
    options = {"steps": args.steps, "percentile": args.percentile}
    if kind == "ONNX":
        return neurovm.convert_onnx(str(path), calib, config, **options)
    if kind == "Keras":
        return neurovm.convert_tensorflow(str(path), calib, config, **options)
    if kind == "TFLite":
        return neurovm.convert_tflite(str(path), calib, config, **options)
    example = None
    if args.input_shape is not None:
        try:
            import torch
        except ImportError:
            raise CliError(f"model {path}: converting a PyTorch file needs PyTorch (pip install torch)") from None
        example = torch.zeros((1, *args.input_shape))
    elif calib is None and path.suffix.lower() != ".pt2":
        raise CliError(f"model {path}: a TorchScript file needs --input-shape (e.g. 1,28,28) or --calibration "
                       f"(its first sample gives the input shape)")
    return neurovm.convert_pytorch(str(path), example, calib, config, **options)


def cmd_run(args) -> int:
    import neurovm

    from .config import DEFAULT_CONFIG

    inputs = (args.network, args.input, args.labels)
    raster = _output_file(args.raster, "--raster", suffix=".png", inputs=inputs) if args.raster else None
    if args.server is not None:
        from .host.service import ServiceError
        from .host.service.cli import run_remote

        try:
            return run_remote(args, raster, _output_file(args.output, "-o", inputs=inputs) if args.output else None)
        except ServiceError as e:
            raise CliError(f"--server {args.server}: {e}") from None
    if args.token_file is not None:
        raise CliError("--token-file needs --server URL")
    net, model = _load_network(args.network, DEFAULT_CONFIG, args.dt)
    if model is not None:
        _refuse(args, {"rate": "--rate", "input_population": "--input-population", "seed": "--seed"},
                "applies to networks (.nvmap, .nir), not to models (.nvm); models are fed --input")
        output = _output_file(args.output, "-o", inputs=inputs) if args.output else None
        return _run_model(args, model, neurovm.open(args.backend, model.config), raster, output)
    _refuse(args, {"input": "--input", "labels": "--labels", "samples": "--samples", "output": "-o"},
            "applies to models (.nvm), not to networks (.nvmap, .nir); networks take --steps and --rate")
    config = getattr(net, "config", DEFAULT_CONFIG)
    return _run_network(args, net, neurovm.open(args.backend, config), raster)


def _run_model(args, model, chip, raster: Path | None, output: Path | None) -> int:
    """``run MODEL.nvm``: predictions (and accuracy) for the input samples."""
    if args.input is None:
        raise CliError("run MODEL.nvm needs --input X.npy (samples x inputs)")
    x_all = load_array(args.input, "input")
    x = _first_samples(x_all, args.samples, "--samples", args.input)
    y = None
    if args.labels:
        y = load_array(args.labels, "labels", labels=True, classes=model.sizes[-1])
        if y.shape != x_all.shape[:1]:
            raise CliError(f"labels {args.labels}: shape {y.shape} does not match the {x_all.shape[0]} input "
                           f"samples of {args.input}")
        y = y[: x.shape[0]]
    steps = args.steps or model.steps
    t0 = time.perf_counter()
    pred = model.predict(x, chip=chip, steps=steps, progress=False if args.quiet else
                         (lambda done, total: _progress(done, total, t0, "predict", "samples")))
    dt = time.perf_counter() - t0
    print(f"{x.shape[0]} samples x {steps} steps on the {args.backend} backend in {dt:.1f} s")
    print("predictions:", " ".join(map(str, pred[:40])) + (" ..." if pred.size > 40 else ""))
    if y is not None:
        print(f"accuracy: {float((pred == y).mean()) * 100:.2f} %")
    if output is not None:
        atomic_write(output, lambda fh: np.save(fh, pred))
    if raster is not None:
        vm = chip.create_vm("raster", cores=model.cores_needed()).load(model.network())
        out = vm.run(steps, {"input": model.encode(x[0], steps)})
        title = f"{Path(args.network).name}: sample 0, {len(out)} output spikes"
        atomic_write(raster, lambda fh: out.raster(fh, title=title))
        print(f"raster of sample 0 written to {raster}")
    return 0


def _run_network(args, net, chip, raster: Path | None) -> int:
    """``run NET.nvmap|NET.nir``: ``--steps`` steps, optionally with random input spikes."""
    from .host import SpikeTrains
    from .mapper import MappedNetwork, map_network

    if args.steps is None:
        raise CliError(f"run {Path(args.network).suffix.upper()[1:]} network needs --steps N")
    if args.input_population is not None and args.rate is None:
        raise CliError("--input-population needs --rate (the probability of an input spike per step)")
    mapped = net if isinstance(net, MappedNetwork) else map_network(net, chip.config)
    vm = chip.create_vm("run", cores=len(mapped.images)).load(mapped)
    steps = args.steps
    pop = None
    if args.rate is not None:
        pop = _input_population(vm.mapped.populations, args.input_population)
        size = vm.mapped.neurons(pop).size
    rng = np.random.default_rng(0 if args.seed is None else args.seed)
    t0 = time.perf_counter()
    parts = []
    for s in range(0, steps, RUN_CHUNK):
        n = min(RUN_CHUNK, steps - s)
        feed = {pop: rng.random((n, size)) < args.rate} if pop is not None else {}
        parts.append((s, vm.run(n, feed)))
        if not args.quiet:
            _progress(s + n, steps, t0, "run", "steps")
    out = SpikeTrains(np.concatenate([p.step + s for s, p in parts]), np.concatenate([p.neuron for _, p in parts]),
                      vm.mapped.n, steps)
    counts = out.counts()
    print(f"{steps} steps on the {args.backend} backend: {len(out)} reported spikes from "
          f"{int((counts > 0).sum())} neurons")
    print(_telemetry_table(chip.status()))
    if raster is not None:
        title = f"{Path(args.network).name}: {len(out)} spikes"
        atomic_write(raster, lambda fh: out.raster(fh, title=title))
        print(f"raster written to {raster}")
    return 0


def _input_population(populations: dict, name: str | None) -> str:
    """The population ``--rate`` feeds: ``name``, or the network's first; unknown names list the known."""
    if not populations:
        raise CliError("--rate: the network has no named populations to feed")
    if name is None:
        return next(iter(populations))
    if name not in populations:
        raise CliError(f"--input-population {name!r}: no such population; the network has "
                       f"{', '.join(populations)}")
    return name


def cmd_map(args) -> int:
    from .config import DEFAULT_CONFIG
    from .mapper import MappedNetwork, map_network

    out = _output_file(args.output, "-o", suffix=".nvmap", inputs=(args.network,)) if args.output else None
    net, _ = _load_network(args.network, DEFAULT_CONFIG, args.dt)
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
    if out is not None:
        mapped.save(out)                    # atomic (neurovm.npzfile.save_npz)
        print(f"written to {out}")
    return 0


def cmd_vms(args) -> int:
    import neurovm

    from .host.model import load_model

    models = [load_model(_input_file(p, "model")) for p in args.models]
    configs = {m.config for m in models}
    if len(configs) > 1:
        raise CliError("the models were converted for different chip configurations")
    if args.samples is not None and args.input is None:
        raise CliError("--samples needs --input X.npy")
    x = None
    if args.input is not None:
        x = _first_samples(load_array(args.input, "input"), args.samples or 1, "--samples", args.input)
    chip = neurovm.open(args.backend, models[0].config)
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
    from .fpga import BOARDS as BOARD_SPECS, build, flash

    if args.fpga_command == "boards":
        for name, spec in BOARD_SPECS.items():
            c = spec.config
            print(f"{name:11s} {spec.description}: {c.mesh_width}x{c.mesh_height} cores x {c.neurons_per_core} "
                  f"neurons, {c.synapses_per_core} synapses per core, UART {spec.baud} baud")
        return 0
    if args.fpga_command == "build":
        if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
            raise CliError(f"--out {args.out}: is a file, not a build folder")
        print(f"building the {args.board} bitstream with yowasp yosys/nextpnr (several minutes; the first call "
              "also compiles the WebAssembly tools) ...", file=sys.stderr)
        report = build(args.board, args.out, verbose=args.verbose,
                       progress=None if args.verbose else (lambda line: print(line, file=sys.stderr, flush=True)))
        print(report.summary())
        return 0
    if args.bitstream is not None:
        _input_file(args.bitstream, "--bitstream")
    flash(args.board, args.bitstream, args.tool)
    print(f"{args.board}: programmed")
    return 0


# ---- the parser ----------------------------------------------------------------------------------
def build_parser() -> Parser:
    """The ``neurovm`` argument parser (every subcommand and option)."""
    parser = Parser(prog="neurovm", description="NeuroVM neuromorphic chip toolkit",
                    epilog="Array files (--input, --labels, --calibration): X.npy, X.npz holding one array, or "
                           "X.npz:NAME. Errors: one line on stderr, exit status 2.")
    parser.add_argument("--version", action="version", version=f"neurovm {__version__}")
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="two tenant VMs sharing one chip; prints spikes and telemetry")
    demo.add_argument("--backend", default="emulator", choices=BACKENDS)
    demo.add_argument("--check", action="store_true",
                      help="also run on the emulator; fail on the first output word that differs")
    demo.add_argument("--waves", metavar="FILE.vcd", help="verilator: write a waveform")
    demo.add_argument("--steps", type=_int_in(DEMO_MIN_STEPS, MAX_STEPS), default=200,
                      help=f"timesteps to run, {DEMO_MIN_STEPS}..{MAX_STEPS} (default 200)")
    demo.add_argument("--seed", type=_seed, default=1, help="seed of the input spike trains (default 1)")

    conv = sub.add_parser("convert", help="convert a trained network (ONNX, Keras, TFLite, PyTorch) to a "
                                          "rate-coded SNN model (.nvm)")
    conv.add_argument("model", help="MODEL.onnx, .h5, .keras, .tflite, .pt (TorchScript) or .pt2 (torch.export)")
    conv.add_argument("--calibration", metavar="X.npy",
                      help="input samples for normalisation (X.npy, X.npz or X.npz:NAME); without them the "
                           "normalisation is data-free (less accurate)")
    conv.add_argument("-o", "--output", required=True, metavar="MODEL.nvm")
    conv.add_argument("--steps", type=_steps, default=32, help=f"timesteps per sample, 1..{MAX_STEPS} (default 32)")
    conv.add_argument("--percentile", type=_float_in(0, 100, lo_open=True), default=99.9,
                      help="activation percentile for normalisation, in (0, 100] (default 99.9)")
    conv.add_argument("--config", choices=["default", "auto"], default="default",
                      help="chip configuration: the default chip, or auto: the smallest mesh the model fits")
    conv.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                      help="PyTorch TorchScript files: the input shape without the batch axis (default: the "
                           "calibration samples')")

    run = sub.add_parser("run", help="run a model (.nvm) on inputs, or a network (.nvmap/.nir) for N steps")
    run.add_argument("network", help="MODEL.nvm, NET.nvmap or NET.nir")
    run.add_argument("--backend", default="emulator", type=_backend, help="emulator, verilator or fpga:PORT")
    run.add_argument("--input", metavar="X.npy", help="model: inputs, samples x inputs (X.npy, X.npz, X.npz:NAME)")
    run.add_argument("--labels", metavar="Y.npy", help="model: integer labels, one per input sample; print the "
                                                       "accuracy")
    run.add_argument("--samples", type=_count, help="model: only the first N samples")
    run.add_argument("--steps", type=_steps, help="timesteps (per sample for models, default: the model's); "
                                                  "required for networks")
    run.add_argument("--rate", type=_float_in(0, 1),
                     help="network: random input spikes with this probability per step, in [0, 1]")
    run.add_argument("--input-population", help="network: the population --rate feeds (default: the first)")
    run.add_argument("--seed", type=_seed, help="network: seed of the --rate input spikes (default 0)")
    run.add_argument("--raster", metavar="OUT.png", help="write a spike raster plot (PNG)")
    run.add_argument("-o", "--output", metavar="PRED.npy", help="model: save the predictions")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.add_argument("--dt", type=_positive_float, help="NIR graphs: time step per chip step (default 1e-3)")
    run.add_argument("--server", metavar="URL", help="run on a neurovm serve daemon (token: $NEUROVM_TOKEN or "
                                                     "--token-file)")
    run.add_argument("--token-file", metavar="FILE", help="with --server: read the tenant's token from FILE")

    mp = sub.add_parser("map", help="map a model or network onto the chip and print the mapping report")
    mp.add_argument("network", help="MODEL.nvm, NET.nir or NET.nvmap")
    mp.add_argument("-o", "--output", metavar="NET.nvmap", help="save the mapped network")
    mp.add_argument("--json", action="store_true", help="also print the report as JSON")
    mp.add_argument("--dt", type=_positive_float, help="NIR graphs: time step per chip step (default 1e-3)")

    vms = sub.add_parser("vms", help="load several models as tenant VMs on one chip, run them together, "
                                     "print each tenant's status and telemetry")
    vms.add_argument("models", nargs="+", metavar="MODEL.nvm")
    vms.add_argument("--backend", default="emulator", type=_backend, help="emulator, verilator or fpga:PORT")
    vms.add_argument("--input", metavar="X.npy", help="inputs fed to every model (X.npy, X.npz, X.npz:NAME)")
    vms.add_argument("--samples", type=_count, help="the first N input samples (default 1)")
    vms.add_argument("-q", "--quiet", action="store_true")

    fpga = sub.add_parser("fpga", help="FPGA bitstreams: boards, build, flash")
    fsub = fpga.add_subparsers(dest="fpga_command", required=True)
    fsub.add_parser("boards", help="the supported boards and their chip configurations")
    fb = fsub.add_parser("build", help="build the bitstream and print LUTs, block RAM, Fmax")
    fb.add_argument("--board", required=True, choices=BOARDS)
    fb.add_argument("--out", help="build directory (default build/fpga/BOARD)")
    fb.add_argument("-v", "--verbose", action="store_true", help="show the toolchain's output")
    ff = fsub.add_parser("flash", help="program the board (openFPGALoader or iceprog)")
    ff.add_argument("--board", required=True, choices=BOARDS)
    ff.add_argument("--bitstream", help="default: the last build of this board")
    ff.add_argument("--tool", help="the programmer to run (default: openFPGALoader, then iceprog)")

    from .host.service.cli import add_serve_parser

    add_serve_parser(sub, _backend, _count)
    from .host.verify.cli import add_regress_parser

    add_regress_parser(sub, _count)
    return parser


def cmd_serve(args) -> int:
    from .host.service.cli import cmd_serve as serve
    from .host.service.registry import RegistryError

    try:
        return serve(args)
    except RegistryError as e:
        raise CliError(str(e)) from None


def cmd_regress(args) -> int:
    from .host.verify.cli import RegressError
    from .host.verify.cli import cmd_regress as regress

    try:
        return regress(args)
    except RegressError as e:
        raise CliError(str(e)) from None


HANDLERS = {"demo": cmd_demo, "convert": cmd_convert, "run": cmd_run, "map": cmd_map, "vms": cmd_vms,
            "fpga": cmd_fpga, "serve": cmd_serve, "regress": cmd_regress}


def _known_errors() -> tuple[type[BaseException], ...]:
    """The product's named errors: bad input, printed as one line with exit status 2."""
    from .fpga import FpgaError
    from .host import ChipError, RequestError, VMError
    from .host.model import ModelError
    from .host.nir_import import NirError
    from .host.serial_backend import BridgeError
    from .image import ImageError
    from .mapper import MapError

    return (CliError, ArrayError, ModelError, NirError, MapError, VMError, ChipError, RequestError, ImageError,
            FpgaError, BridgeError, SaveError, OSError)


def _one_line(message: str) -> str:
    """``message`` with its line breaks folded into spaces."""
    return re.sub(r"\s*\n\s*", " ", str(message).strip())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 fine, 1 failed check, 2 bad input).

    Usage errors and the product's named errors print one line on stderr and
    return 2. Anything else is a bug and propagates with its traceback.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"{e.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    if args.command not in HANDLERS:
        parser.print_help()
        return 0
    try:
        return HANDLERS[args.command](args)
    except _known_errors() as e:
        print(f"neurovm {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
