"""Numeric arrays from ``.npy`` and ``.npz`` files, checked before anything large is allocated.

The command line reads its inputs, labels and calibration data through
:func:`load_array`. A file is recognised by its content (the ``.npy`` magic
``\\x93NUMPY`` or a zip archive), not by its name. Before the data is read:

* the ``.npy`` header (of the file, or of the chosen member of an ``.npz``)
  is parsed on its own;
* the dtype must be a real number type: bool, signed or unsigned integer, or
  float (no complex, strings, objects, records; pickles are never loaded);
* the element count must not exceed ``max_elements`` and the stored bytes must
  match the header (a truncated file is refused, not padded).

After reading, float arrays must be finite (the first NaN or infinity is named
by its index) and labels must be integers in ``0 .. classes - 1``.
Every problem raises :class:`ArrayError` naming the file and what is wrong.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .npzfile import NpyVersionError, read_npy_header

__all__ = ["ArrayError", "MAX_ELEMENTS", "load_array", "split_array_spec"]

#: The largest array :func:`load_array` reads by default (elements; 512 MiB as float64).
MAX_ELEMENTS = 1 << 26
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_NUMERIC_KINDS = "biuf"   # bool, signed int, unsigned int, float


class ArrayError(ValueError):
    """An input array that cannot be used; the message names the file and the problem."""


def split_array_spec(spec: str) -> tuple[str, str | None]:
    """Split ``FILE.npz:NAME`` into ``(FILE.npz, NAME)``; anything else is ``(spec, None)``.

    Only a colon after a name ending in ``.npz`` separates an array name, so
    ``.npy`` paths that contain colons are read as they are.
    """
    head, sep, tail = spec.rpartition(":")
    if sep and head.lower().endswith(".npz"):
        return head, tail
    return spec, None


def load_array(path, what: str, name: str | None = None, *, max_elements: int = MAX_ELEMENTS,
               labels: bool = False, classes: int | None = None) -> np.ndarray:
    """Read one numeric array from a ``.npy`` file or one member of an ``.npz`` file.

    Parameters
    ----------
    path : str or Path
        The file. ``FILE.npz:NAME`` is accepted too (see :func:`split_array_spec`).
    what : str
        What the array is ("input", "labels", ...), used in every message.
    name : str, optional
        The array of an ``.npz`` to read; without it the archive must hold exactly one.
        Giving a name for a ``.npy`` file is an error.
    max_elements : int
        Refuse arrays with more elements than this (checked on the header, before reading).
    labels : bool
        The array holds class labels: integer dtype, values in ``0 .. classes - 1``.
    classes : int, optional
        Number of classes, for ``labels``.

    Returns
    -------
    numpy.ndarray
        The array, as stored.

    Raises
    ------
    ArrayError
        Missing file, a folder, empty or truncated file, not an array file, an unknown
        or ambiguous ``.npz`` member, a non-numeric dtype, too many elements, NaN or
        infinity, labels that are not integers in range.
    """
    if name is None:
        path, name = split_array_spec(str(path))
    path = Path(path)
    label = f"{what} {path}" + (f":{name}" if name is not None else "")
    magic = _read_magic(path, what)
    if magic.startswith(_NPY_MAGIC):
        if name is not None:
            raise ArrayError(f"{label}: a .npy file holds one array; ':{name}' selects arrays of a .npz only")
        with open(path, "rb") as fh:
            arr = _read_npy(fh, label, path.stat().st_size, max_elements)
    elif magic.startswith(_ZIP_MAGIC):
        arr = _read_npz_member(path, what, name, max_elements)
    else:
        raise ArrayError(f"{what} {path}: not a .npy or .npz array file (it starts with {magic[:8]!r})")
    _check_values(arr, label, labels, classes)
    return arr


def _read_magic(path: Path, what: str) -> bytes:
    """The first bytes of ``path``; a missing file, a folder or an empty file is an ArrayError."""
    if not path.exists():
        raise ArrayError(f"{what} {path}: no such file")
    if path.is_dir():
        raise ArrayError(f"{what} {path}: is a folder, not an array file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as e:
        raise ArrayError(f"{what} {path}: cannot be read ({e.strerror or e})") from None
    if not magic:
        raise ArrayError(f"{what} {path}: empty file")
    return magic


def _read_npz_member(path: Path, what: str, name: str | None, max_elements: int) -> np.ndarray:
    """The array ``name`` of the ``.npz`` archive ``path`` (the only one when ``name`` is None)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
            names = sorted(members)
            if name is None:
                if len(names) != 1:
                    raise ArrayError(f"{what} {path}: the archive holds {len(names)} arrays "
                                     f"({', '.join(names) or 'none'}); choose one as {path}:NAME")
                name = names[0]
            elif name not in members:
                raise ArrayError(f"{what} {path}: no array {name!r} in the archive; it holds "
                                 f"{', '.join(names) or 'none'}")
            label = f"{what} {path}:{name}"
            with zf.open(members[name]) as fh:
                return _read_npy(fh, label, members[name].file_size, max_elements)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise ArrayError(f"{what} {path}: not a readable .npz archive ({type(e).__name__}: {e})") from None


def _read_npy(fh, label: str, stored_bytes: int, max_elements: int) -> np.ndarray:
    """Parse the ``.npy`` header from ``fh``, check dtype, size and length, then read the data."""
    try:
        version, dtype, shape, fortran = read_npy_header(fh)
    except NpyVersionError as e:
        version = e.version
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise ArrayError(f"{label}: damaged .npy header ({type(e).__name__}: {e})") from None
    if version not in ((1, 0), (2, 0)):
        raise ArrayError(f"{label}: .npy format version {version} is not supported (1.0 or 2.0)")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _NUMERIC_KINDS:
        raise ArrayError(f"{label}: dtype {dtype} is not a real number type (bool, int, uint or float)")
    count = int(np.prod(shape, dtype=object))
    if count > max_elements:
        raise ArrayError(f"{label}: shape {tuple(shape)} has {count:,} elements, more than the limit "
                         f"of {max_elements:,}")
    need = count * dtype.itemsize
    data_start = fh.tell()
    if stored_bytes - data_start < need:
        raise ArrayError(f"{label}: truncated, the header promises {need:,} bytes of data for shape "
                         f"{tuple(shape)} but {max(stored_bytes - data_start, 0):,} are stored")
    raw = fh.read(need)
    if len(raw) != need:
        raise ArrayError(f"{label}: truncated, {len(raw):,} of {need:,} data bytes could be read")
    arr = np.frombuffer(raw, dtype=dtype, count=count)
    return (arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)).copy()


def _check_values(arr: np.ndarray, label: str, labels: bool, classes: int | None) -> None:
    """Float arrays finite; labels integer and within ``0 .. classes - 1``."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ArrayError(f"{label}: {arr[index]} at index {index if arr.ndim != 1 else index[0]}; "
                             f"values must be finite numbers")
    if not labels:
        return
    if arr.dtype.kind not in "iu":
        raise ArrayError(f"{label}: labels must be integers, not {arr.dtype}")
    if classes is not None and arr.size:
        out = (arr < 0) | (arr >= classes)
        if out.any():
            index = tuple(int(i) for i in np.argwhere(out)[0])
            raise ArrayError(f"{label}: label {arr[index]} at index {index if arr.ndim != 1 else index[0]} is "
                             f"outside 0..{classes - 1} (the model has {classes} classes)")
