"""The container shared by NeuroVM's files (``.nvmap`` mapped networks, ``.nvm`` models):
a NumPy ``.npz`` holding a JSON header (``format``, ``version``, ...) and named arrays.

Reading is defensive: a file is untrusted input. :func:`load_npz` opens the zip
itself, reads the header member only after checking its declared size, parses
the JSON strictly (no ``NaN``/``Infinity``), and returns a :class:`NpzMembers`
that loads an array only after its ``.npy`` header (dtype, shape) has been read
from the zip and checked against limits the caller derives from the file's
``ChipConfig``. No member is decompressed beyond the size its checked header
declares, so no file can make the loader allocate more than its model needs.

Writing is atomic (:func:`neurovm.atomic.atomic_write`): the header is built
and checked first, and a failure or a kill at any point leaves the previous
file intact.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from .atomic import atomic_write

__all__ = ["save_npz", "load_npz", "load_checked", "read_npy_header", "NpyVersionError", "NpzMembers", "MAX_HEADER_BYTES",
           "INT64_MIN", "INT64_MAX"]

#: Largest JSON header accepted (the population lists of the largest chip,
#: 256 cores x 4096 neurons, take about 9 MB as JSON).
MAX_HEADER_BYTES = 32 << 20
INT64_MIN = int(np.iinfo(np.int64).min)
INT64_MAX = int(np.iinfo(np.int64).max)


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} in the JSON header")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} in the JSON header overflows to {value}")
    return value


class NpyVersionError(ValueError):
    """A ``.npy`` header of a format version this reader does not know; ``version`` names it."""

    def __init__(self, version: tuple[int, int]):
        super().__init__(f".npy version {version[0]} is not supported")
        self.version = version


def read_npy_header(fh) -> tuple[tuple[int, int], np.dtype, tuple, bool]:
    """``(version, dtype, shape, fortran_order)`` of the ``.npy`` stream ``fh``, nothing else read.

    Shared by the product's files (:class:`NpzMembers`) and the command line's input arrays
    (:mod:`neurovm.arrays`), which both check dtype and shape before any data is allocated.
    Raises :class:`NpyVersionError` for a major version other than 1, 2 or 3, and numpy's
    ``ValueError`` for a damaged header.
    """
    version = npy_format.read_magic(fh)
    if version[0] == 1:
        shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
    elif version[0] in (2, 3):
        shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
    else:
        raise NpyVersionError(version)
    return version, dtype, tuple(shape), bool(fortran)


def save_npz(path, header: dict, arrays: dict) -> None:
    """Write ``header`` (JSON) and ``arrays`` to ``path``, compressed, atomically.

    The header is serialised before the target is touched; a header holding
    ``NaN`` or an infinity raises ``ValueError`` and writes nothing. Any failure
    (or a kill) during the write leaves the previous ``path`` intact.

    Raises
    ------
    ValueError
        The header is not strict JSON (non-finite floats, unknown types).
    neurovm.atomic.SaveError
        The folder is missing or the file cannot be created.
    """
    blob = np.frombuffer(json.dumps(header, allow_nan=False).encode(), dtype=np.uint8)

    def write(fh):
        np.savez_compressed(fh, header=blob, **arrays)

    atomic_write(path, write)


class NpzMembers:
    """The arrays of an opened file, loaded one at a time after their ``.npy`` header is checked.

    Attributes
    ----------
    files : list of str
        Member names without ``.npy``.
    """

    def __init__(self, path: Path, zf: zipfile.ZipFile, error: type[Exception]):
        self.path, self._zf, self._error = path, zf, error
        self._infos = {}
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                self._infos[info.filename[:-4]] = info
        self.files = list(self._infos)

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def close(self) -> None:
        """Close the underlying zip file."""
        self._zf.close()

    def __enter__(self) -> "NpzMembers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fail(self, name: str, what: str):
        raise self._error(f"{self.path}: array {name!r}: {what}") from None

    def describe(self, name: str) -> tuple[np.dtype, tuple, bool]:
        """``(dtype, shape, fortran_order)`` from the member's ``.npy`` header, nothing else read."""
        if name not in self._infos:
            raise self._error(f"{self.path}: array {name!r} is missing")
        try:
            with self._zf.open(self._infos[name]) as fh:
                return read_npy_header(fh)[1:]
        except self._error:
            raise
        except Exception as e:   # noqa: BLE001 - zlib/CRC/format errors of a damaged member
            self._fail(name, f"unreadable ({type(e).__name__}: {e})")

    def integers(self, name: str, *, ndim: int, max_shape: tuple, what: str = "") -> np.ndarray:
        """Load integer array ``name`` as int64 after checking its header.

        Parameters
        ----------
        ndim : int
            Required number of dimensions.
        max_shape : tuple of int
            Upper bound of each dimension (inclusive), checked before any data is read.
        what : str
            Where the limit comes from, for the message (e.g. ``"neurons_per_core=256"``).

        Raises
        ------
        error
            Naming the file, the array, the offending dtype/shape/value and what is allowed.
        """
        info = self._infos.get(name)
        if info is None:
            raise self._error(f"{self.path}: array {name!r} is missing")
        try:
            with self._zf.open(info) as fh:
                _, dtype, shape, fortran = read_npy_header(fh)
                self._check_header(name, dtype, shape, ndim, max_shape, what)
                count = math.prod(shape)
                nbytes = count * dtype.itemsize
                prefix = fh.tell()
                if info.file_size != prefix + nbytes:
                    self._fail(name, f"declares {info.file_size - prefix} data bytes, its shape {shape} "
                                     f"and dtype {dtype} need {nbytes}")
                data = fh.read()   # bounded by the checked file_size; reading to the end checks the CRC
        except self._error:
            raise
        except Exception as e:   # noqa: BLE001 - zlib/CRC/format errors of a damaged member
            self._fail(name, f"unreadable ({type(e).__name__}: {e})")
        if len(data) != nbytes:
            self._fail(name, f"truncated: {len(data)} of {nbytes} data bytes")
        a = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
        return self._as_int64(name, a)

    def _check_header(self, name, dtype, shape, ndim, max_shape, what):
        if dtype.kind not in "iub" or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            self._fail(name, f"dtype {dtype} is not an integer type (allowed: int8..int64, uint8..uint64, bool)")
        if len(shape) != ndim:
            self._fail(name, f"has shape {shape}, a {ndim}-D array is required")
        for axis, (got, most) in enumerate(zip(shape, max_shape)):
            if got > most:
                self._fail(name, f"dimension {axis} is {got}, at most {most} allowed"
                                 + (f" ({what})" if what else ""))

    def _as_int64(self, name: str, a: np.ndarray) -> np.ndarray:
        if a.dtype.kind == "u" and a.dtype.itemsize == 8 and a.size and int(a.max()) > INT64_MAX:
            k = int(np.argmax(a > INT64_MAX))
            self._fail(name, f"value {int(a.flat[k])} at flat index {k} is outside the int64 range")
        return a.astype(np.int64)


def load_npz(path, fmt: str, version: int, kind: str, error: type[Exception]) -> tuple[dict, NpzMembers]:
    """Open ``path`` and check its header's format and version; returns ``(header, members)``.

    Every problem raises ``error`` with a message naming the file: missing, not a
    file, unreadable (truncated, not an npz, a damaged or oversized header, bad or
    non-finite JSON), another format, an unsupported version. The arrays are not
    read here: ``members.integers(name, ...)`` loads one after checking it.
    """
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file")
    if not path.is_file():
        raise error(f"{path}: not a regular file")
    try:
        zf = zipfile.ZipFile(path)
    except Exception as e:   # noqa: BLE001 - corrupt, truncated, not a zip: one clear message
        raise error(f"{path}: not a readable {kind} ({type(e).__name__}: {e})") from None
    members = NpzMembers(path, zf, error)
    try:
        header = _read_header(members, error, path, kind)
        _check_format(header, fmt, version, kind, error, path)
    except BaseException:
        members.close()
        raise
    return header, members


def load_checked(path, fmt: str, version: int, kind: str, error: type[Exception], build, also=()):
    """``build(header, members)`` of the file ``path`` opened with :func:`load_npz`; the members
    are closed afterwards.  A header field ``build`` finds missing (``KeyError``), and an
    ``error`` or one of the exception types ``also`` raised without the file's name, become
    ``error`` naming the file."""
    path = Path(path)
    header, members = load_npz(path, fmt, version, kind, error)
    with members:
        try:
            return build(header, members)
        except KeyError as e:
            raise error(f"{path}: damaged header, field {e} is missing") from None
        except (error, *also) as e:
            raise e if isinstance(e, error) and str(e).startswith(str(path)) else error(f"{path}: {e}") from None


def _check_format(header, fmt: str, version: int, kind: str, error, path: Path) -> None:
    if not isinstance(header, dict) or header.get("format") != fmt:
        found = header.get("format") if isinstance(header, dict) else None
        raise error(f"{path}: format {found!r} is not {fmt!r}")
    found = header.get("version")
    if type(found) is not int or found != version:
        raise error(f"{path}: {kind} version {found!r} is not supported (this is version {version})")


def _read_header(members: NpzMembers, error, path: Path, kind: str):
    """The JSON header: size checked before reading, UTF-8, strict JSON (no NaN/Infinity)."""
    if "header" not in members:
        raise error(f"{path}: not a readable {kind} (no 'header' member)")
    raw = members.integers("header", ndim=1, max_shape=(MAX_HEADER_BYTES,), what="the header size limit")
    if raw.size and (raw.min() < 0 or raw.max() > 255):
        raise error(f"{path}: not a readable {kind} (the header array does not hold bytes)")
    try:
        return json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"), parse_constant=_reject_constant,
                          parse_float=_finite_float)
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise error(f"{path}: not a readable {kind} (bad JSON header: {type(e).__name__}: {e})") from None
