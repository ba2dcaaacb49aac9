"""``neurovm serve`` and the command line's ``--server`` runs (wired into :mod:`neurovm.cli`).

    neurovm serve [--backend emulator|verilator|fpga:PORT] [--chips N] [--data DIR] [--listen HOST:PORT]
    neurovm serve add-tenant NAME [--data DIR] [--quota KEY=VALUE ...]     prints the token once
    neurovm run MODEL.nvm|NET.nvmap ... --server URL [--token-file FILE]   token: $NEUROVM_TOKEN or the file
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from .errors import ServiceError

__all__ = ["add_serve_parser", "cmd_serve", "run_remote", "DEFAULT_DATA", "DEFAULT_LISTEN"]

DEFAULT_DATA = "neurovm-data"
DEFAULT_LISTEN = "127.0.0.1:8750"


def _listen(value: str) -> tuple[str, int]:
    """argparse type of --listen: HOST:PORT with a port in 1..65535."""
    m = re.fullmatch(r"(.+):(\d{1,5})", value)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT with a port in 1..65535 "
                                         f"(e.g. {DEFAULT_LISTEN})")
    return m.group(1), int(m.group(2))


def _seconds(value: str) -> float:
    """argparse type of --body-timeout: a positive finite number of seconds."""
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if not 0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: expected a positive number of seconds")
    return x


def _quota_item(value: str) -> tuple[str, float]:
    """argparse type of --quota: KEY=NUMBER."""
    key, sep, num = value.partition("=")
    try:
        number = float(num) if "." in num or "e" in num.lower() else int(num)
    except ValueError:
        number = None
    if not sep or number is None:
        raise argparse.ArgumentTypeError(f"{value!r}: expected KEY=NUMBER, e.g. vms=2 or rate=10")
    return key, number


def add_serve_parser(sub, backend_type, count_type) -> None:
    """Add ``serve`` (and ``serve add-tenant``) to the subcommands ``sub``."""
    serve = sub.add_parser("serve", help="run the hypervisor as a service (HTTP), or add a tenant to it")
    serve.add_argument("--backend", default="emulator", type=backend_type, help="emulator, verilator or fpga:PORT")
    serve.add_argument("--chips", type=count_type, default=1, help="chips the daemon owns (default 1)")
    serve.add_argument("--data", default=DEFAULT_DATA, help=f"data folder: registry, admin token (default "
                                                            f"./{DEFAULT_DATA})")
    serve.add_argument("--listen", type=_listen, default=_listen(DEFAULT_LISTEN), metavar="HOST:PORT",
                       help=f"address to serve on (default {DEFAULT_LISTEN})")
    serve.add_argument("--body-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                       help="a client must send its request body within this time (default 30)")
    serve.add_argument("--quantum", type=count_type, default=1000, metavar="STEPS",
                       help="longer runs go to the chip in slices of this many steps, others served in between "
                            "(default 1000)")
    ssub = serve.add_subparsers(dest="serve_command")
    add = ssub.add_parser("add-tenant", help="create a tenant; prints its token once (only a hash is stored)")
    add.add_argument("name")
    add.add_argument("--data", default=argparse.SUPPRESS, help="data folder (as for serve)")
    add.add_argument("--quota", type=_quota_item, action="append", default=[], metavar="KEY=VALUE",
                     help="vms, cores, steps, rate, burst, upload_bytes, outputs (repeatable)")


def cmd_serve(args) -> int:
    """``neurovm serve``: run the daemon, or add a tenant to its data folder."""
    from .server import ensure_admin, open_data, serve

    if args.serve_command == "add-tenant":
        registry = open_data(args.data)
        try:
            made = ensure_admin(registry, args.data)
            token = registry.add_tenant(args.name, dict(args.quota))
        finally:
            registry.close()
        if made is not None:
            print(f"administrator token written to {made}", file=sys.stderr)
        print(token)
        print(f"tenant {args.name!r} added; the token above is shown only once (export NEUROVM_TOKEN=...)",
              file=sys.stderr)
        return 0
    host, port = args.listen
    serve(args.data, backend=args.backend, chips=args.chips, host=host, port=port, body_timeout=args.body_timeout,
          quantum=args.quantum)
    return 0


class CliError(ServiceError):
    """Bad use of ``--server`` (the command line prints it as one line, exit status 2)."""


def run_remote(args, raster, output) -> int:
    """``neurovm run ... --server URL``: the model's predictions, or the network's spikes, from a server.
    Every refusal raises :class:`ServiceError` (the CLI prints it as one line)."""
    from .client import connect

    if args.backend != "emulator":
        raise CliError("--backend is the server's choice (neurovm serve --backend); not with --server")
    if raster is not None:
        raise CliError("--raster is not available with --server")
    with connect(args.server, token_file=args.token_file) as conn:
        if Path(args.network).suffix == ".nvm":
            return _predict_remote(args, conn, output)
        return _run_network_remote(args, conn)


def _predict_remote(args, conn, output) -> int:
    """``run MODEL.nvm --server``: predictions (and accuracy) from the server."""
    from neurovm.arrays import load_array
    from neurovm.atomic import atomic_write

    if args.input is None:
        raise CliError("run MODEL.nvm needs --input X.npy (samples x inputs)")
    x = load_array(args.input, "input")
    if args.samples is not None:
        x = x[: args.samples]
    pred = conn.predict(args.network, x, steps=args.steps)
    print(f"{x.shape[0]} samples on {args.server}")
    print("predictions:", " ".join(map(str, pred[:40])) + (" ..." if pred.size > 40 else ""))
    if args.labels:
        y = load_array(args.labels, "labels", labels=True)[: x.shape[0]]
        print(f"accuracy: {float((pred == y).mean()) * 100:.2f} %")
    if output is not None:
        atomic_write(output, lambda fh: np.save(fh, pred))
    return 0


def _run_network_remote(args, conn) -> int:
    from neurovm.mapper import MappedNetwork

    if args.steps is None:
        raise CliError("run with --server needs --steps N for a network")
    if Path(args.network).suffix != ".nvmap":
        raise CliError("with --server a network is sent as a mapped network (.nvmap; see neurovm map)")
    mapped = MappedNetwork.load(args.network)
    name = f"run-{Path(args.network).stem}"[:64]
    vm = conn.create_vm(name, cores=len(mapped.images))
    try:
        vm.load(args.network)
        feed = {}
        if args.rate is not None:
            pop = args.input_population or next(iter(mapped.populations))
            size = mapped.neurons(pop).size
            rng = np.random.default_rng(0 if args.seed is None else args.seed)
            feed = {pop: rng.random((args.steps, size)) < args.rate}
        out = vm.run(args.steps, feed)
        counts = out.counts()
        print(f"{args.steps} steps on {args.server}: {len(out)} reported spikes from {int((counts > 0).sum())} "
              f"neurons")
        tel = vm.telemetry()
        print(" ".join(f"{k}={v}" for k, v in tel.items()))
    finally:
        vm.destroy()
    return 0
