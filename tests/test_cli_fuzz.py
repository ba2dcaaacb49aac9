"""A seeded fuzzer of the ``neurovm`` command line (issue #13).

Random subcommands get random good, edge and bad values of every option and
random bad files (truncated and bit-flipped ``.nvm``/``.nvmap``, ``.npz`` where
``.npy`` is expected, missing files, folders, empty files, wrong dtypes, NaN
arrays, pickles, oversized headers). Every case, run in-process through
``neurovm.cli.main``, must exit 0 or 2; exit 2 prints exactly one stderr line;
no case prints a traceback or modifies an input file.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from neurovm.cli import main
from neurovm.examples import digits_onnx

FAST_CASES = 150
SLOW_CASES = 1500


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Good and bad input files, and places to write to."""
    d = tmp_path_factory.mktemp("fuzz")
    onx, data, _ = digits_onnx(hidden=(16,), seed=2)
    (d / "m.onnx").write_bytes(onx)
    x, y = data.x_test[:3], data.y_test[:3]
    np.save(d / "calib.npy", data.x_train[:100])
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    assert main(["convert", str(d / "m.onnx"), "--calibration", str(d / "calib.npy"), "-o", str(d / "m.nvm"),
                 "--steps", "8"]) == 0
    assert main(["map", str(d / "m.nvm"), "-o", str(d / "m.nvmap")]) == 0
    _bad_files(d, x, y)
    return d


def _bad_files(d, x, y):
    """Every kind of bad file the fuzzer feeds."""
    for good in ("m.nvm", "m.nvmap"):
        raw = (d / good).read_bytes()
        stem, ext = good.split(".")
        (d / f"cut.{ext}").write_bytes(raw[: len(raw) // 2])
        for k, at in enumerate((40, len(raw) // 2, len(raw) - 30)):
            flipped = bytearray(raw)
            flipped[at] ^= 0x5A
            (d / f"flip{k}.{ext}").write_bytes(bytes(flipped))
        (d / f"empty.{ext}").write_bytes(b"")
        (d / f"npy.{ext}").write_bytes((d / "x.npy").read_bytes())
    np.savez(d / "two.npz", x=x, y=y)
    np.savez(d / "one.npz", x)
    np.save(d / "nan.npy", np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x))
    np.save(d / "inf.npy", np.full_like(x, np.inf))
    np.save(d / "complex.npy", x.astype(np.complex128))
    np.save(d / "text.npy", np.array(["a", "b", "c"]))
    np.save(d / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(d / "y_float.npy", y.astype(np.float32))
    np.save(d / "y_neg.npy", -np.ones_like(y))
    np.save(d / "x_1d.npy", x[0])
    np.save(d / "x_3d.npy", x[:, None, :])
    np.save(d / "x_cols.npy", x[:, :10])
    np.save(d / "x_zero.npy", x[:0])
    np.save(d / "x_bool.npy", x > 8)
    np.save(d / "x_int.npy", x.astype(np.int8))
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (1 << 40, 64)
    with open(d / "huge.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
    raw = (d / "x.npy").read_bytes()
    (d / "x_cut.npy").write_bytes(raw[:-20])
    (d / "empty.npy").write_bytes(b"")
    (d / "garbage.npy").write_bytes(b"not an array at all")
    (d / "folder").mkdir()
    (d / "folder.nvm").mkdir()
    (d / "notnir.nir").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    (d / "out").mkdir()


ARRAYS = ["x.npy", "one.npz", "two.npz", "two.npz:x", "two.npz:y", "two.npz:z", "nan.npy", "inf.npy", "complex.npy",
          "text.npy", "object.npy", "x_1d.npy", "x_3d.npy", "x_cols.npy", "x_zero.npy", "x_bool.npy", "x_int.npy",
          "huge.npy", "x_cut.npy", "empty.npy", "garbage.npy", "folder", "missing.npy", "m.nvm", "x.npy:x"]
LABELS = ["y.npy", "two.npz:y", "y_float.npy", "y_neg.npy", "x.npy", "two.npz", "empty.npy", "missing.npy", "huge.npy"]
MODELS = ["m.nvm", "cut.nvm", "flip0.nvm", "flip1.nvm", "flip2.nvm", "empty.nvm", "npy.nvm", "folder.nvm",
          "missing.nvm", "m.nvmap", "m.onnx"]
NETWORKS = MODELS + ["cut.nvmap", "flip0.nvmap", "flip1.nvmap", "flip2.nvmap", "empty.nvmap", "npy.nvmap",
                     "notnir.nir", "x.npy"]
OUTPUTS = ["out/new", "out/new.npy", "out/new.png", "out/new.nvm", "out/new.nvmap", "nowhere/new.png", "folder",
           "out", "x.npy", "out/r.pdf", ""]
STEPS = ["1", "3", "0", "-5", "1000000000000", "x", "2.5", ""]
COUNTS = ["1", "2", "3", "4", "0", "-2", "nan", "99999999999999999999"]
RATES = ["0", "0.3", "1", "1.5", "-0.1", "nan", "inf", "abc"]
PERCENTILES = ["99.9", "100", "50", "0", "200", "-1", "nan", "inf", "x"]
SEEDS = ["0", "7", "-1", "1e3", "18446744073709551616"]
BACKENDS = ["emulator", "fpga:/nonexistent/tty", "fpga:", "silicon", "Emulator"]
POPULATIONS = ["input", "output", "layer1", "nosuch", ""]


# Each subcommand: a valid argv (positionals, then {option: value}), optional good extras, and the pool
# every option's value is mutated from. File pools name corpus files; "" is an empty argument.
COMMANDS = {
    "run-model": (["m.nvm"], {"--input": "x.npy", "-q": None},
                  {"--labels": "y.npy", "--samples": "2", "--steps": "3", "-o": "out/new.npy",
                   "--raster": "out/new.png"}),
    "run-network": (["m.nvmap"], {"--steps": "3", "-q": None},
                    {"--rate": "0.3", "--input-population": "input", "--seed": "7", "--raster": "out/new.png"}),
    "map": (["m.nvm"], {}, {"-o": "out/new.nvmap", "--json": None}),
    "vms": (["m.nvm", "m.nvm"], {"--input": "x.npy", "-q": None}, {"--samples": "2"}),
    "convert": (["m.onnx"], {"--calibration": "calib.npy", "-o": "out/new.nvm"},
                {"--steps": "3", "--percentile": "99"}),
    "demo": ([], {"--steps": "10"}, {"--seed": "3", "--backend": "emulator"}),
}
POOLS = {"--input": ARRAYS, "--calibration": ARRAYS, "--labels": LABELS, "--samples": COUNTS, "--steps": STEPS,
         "--rate": RATES, "--input-population": POPULATIONS, "--seed": SEEDS, "--raster": OUTPUTS, "-o": OUTPUTS,
         "--percentile": PERCENTILES, "--backend": BACKENDS, "--waves": OUTPUTS}
FILE_POOLS = (ARRAYS, LABELS, OUTPUTS)
POSITIONAL_POOLS = {"run": NETWORKS, "map": NETWORKS, "vms": MODELS,
                    "convert": ["m.onnx", "x.npy", "missing.onnx", "folder", "empty.npy", "m.nvm"]}


def _value(rng: random.Random, pool: list, d) -> str:
    """A random value of ``pool``; corpus file names become paths (the empty string stays empty)."""
    value = rng.choice(pool)
    return str(d / value) if value and pool in FILE_POOLS + tuple(POSITIONAL_POOLS.values()) else value


def _case(rng: random.Random, d) -> list[str]:
    """One random argv: a valid command with a few good extras, then 0..3 mutations."""
    kind = rng.choice(list(COMMANDS) + ["run-model", "run-network", "fpga", "junk"])
    if kind == "fpga":
        return ["fpga"] + rng.choice([["boards"], ["build"], ["build", "--board", "nosuch"], ["flash"],
                                      ["flash", "--board", "ulx3s", "--bitstream", str(d / "folder")],
                                      ["flash", "--board", "ulx3s", "--bitstream", str(d / "missing.bit")], []])
    if kind == "junk":
        return [rng.choice(["junk", "--bogus", "-x", "runn", ""])]
    positional, options, extras = COMMANDS[kind]
    command = kind.split("-")[0]
    positional = [str(d / p) for p in positional]
    options = {k: (str(d / v) if v and k in ("--input", "--calibration", "--labels", "-o", "--raster") else v)
               for k, v in {**options, **{k: v for k, v in extras.items() if rng.random() < 0.3}}.items()}
    for _ in range(rng.choices([0, 1, 2, 3], weights=[25, 45, 20, 10])[0]):
        target = rng.choice(["positional", "add", *options] if command in POSITIONAL_POOLS else ["add", *options])
        if target == "positional":
            positional[rng.randrange(len(positional))] = _value(rng, POSITIONAL_POOLS[command], d)
        elif target == "add":
            flag = rng.choice(list(POOLS))
            options[flag] = _value(rng, POOLS[flag], d)
        elif options[target] is None:
            del options[target]
        else:
            options[target] = _value(rng, POOLS[target], d)
    argv = [command] + positional
    for flag, value in options.items():
        argv += [flag] if value is None else [flag, value]
    if rng.random() < 0.05:
        argv.insert(rng.randrange(1, len(argv) + 1), rng.choice(["--bogus", "extra", "--steps", "--input"]))
    return argv


def _digests(d) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir() if p.is_file()}


OUTPUT_FLAGS = ("-o", "--raster", "--waves")


def _check(corpus, capsys, argv):
    """Run one case; exit 0 or 2, one stderr line on 2, no traceback, no input file changed.

    A corpus file named as this case's output (``-o x.npy``) may be replaced: it is not an input.
    """
    outputs = {argv[i + 1] for i in range(len(argv) - 1) if argv[i] in OUTPUT_FLAGS}
    before = {k: v for k, v in _digests(corpus).items() if str(corpus / k) not in outputs}
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:        # only --help/--version exit through argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc in (0, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    if rc == 2:
        assert err.count("\n") == 1 and err.endswith("\n") and ": error: " in err, (argv, err)
    after = _digests(corpus)
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, (argv, changed)
    return rc


def _sweep(corpus, capsys, seed, cases):
    """``cases`` random cases; returns how many exited 0 and 2. Each case starts from the same corpus."""
    rng = random.Random(seed)
    pristine = {p: p.read_bytes() for p in corpus.iterdir() if p.is_file()}
    outcomes = {0: 0, 2: 0}
    for _ in range(cases):
        argv = _case(rng, corpus)
        outcomes[_check(corpus, capsys, argv)] += 1
        for p in (corpus / "out").iterdir():       # outputs are fine; start each case from an empty folder
            p.unlink()
        for p, data in pristine.items():           # a corpus file replaced as an output (-o x.npy) comes back
            if p.read_bytes() != data:
                p.write_bytes(data)
    return outcomes


def test_fuzz_cli_every_case_is_clean(corpus, capsys):
    outcomes = _sweep(corpus, capsys, seed=13, cases=FAST_CASES)
    assert outcomes[0] >= FAST_CASES // 5 and outcomes[2] >= FAST_CASES // 3   # good and bad paths both exercised


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_fuzz_cli_large_sweep(corpus, capsys, seed):
    _sweep(corpus, capsys, seed=1000 + seed, cases=SLOW_CASES)
