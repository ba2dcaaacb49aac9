"""The ``neurovm`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neurovm", description="NeuroVM neuromorphic chip toolkit")
    parser.add_argument("--version", action="version", version=f"neurovm {__version__}")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="two tenant VMs sharing one chip; prints spikes and telemetry")
    demo.add_argument("--backend", default="emulator", choices=["emulator", "verilator"])
    demo.add_argument("--check", action="store_true",
                      help="also run on the emulator; fail on the first output word that differs")
    demo.add_argument("--waves", metavar="FILE.vcd", help="verilator: write a waveform")
    demo.add_argument("--steps", type=int, default=200, help="timesteps to run (default 200)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the input spike trains")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(backend=args.backend, steps=args.steps, seed=args.seed, check=args.check, waves=args.waves)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
