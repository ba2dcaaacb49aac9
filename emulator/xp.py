"""The array namespace the emulator's timestep runs on: numpy (CPU) or CuPy (GPU).

The timestep (:mod:`.engine`, :mod:`.lif`) is written once against an array
namespace ``xp``; this module picks it from a device name and supplies the few
primitives whose numpy and CuPy spellings differ.  CuPy is the GPU library
because it is numpy's API on the device: the same expressions (``bincount``,
``nonzero``, fancy indexing, integer shifts on ``int64``) run unchanged and
bit-exactly, so there is no second copy of the neuron or synapse math
(docs/architecture.md §15).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DeviceUnavailableError", "namespace", "namespace_of", "to_host", "segment_ids", "repeat", "ranges",
           "bincount", "DEVICES"]

DEVICES = ("cpu", "cuda")
_GPU_HINT = "install the GPU extra (pip install 'neurovm[gpu]', CuPy for CUDA 12) on a machine with an NVIDIA GPU"


class DeviceUnavailableError(RuntimeError):
    """The requested device (or the library that drives it) is not present on this machine."""


def namespace(device: str = "cpu"):
    """The array module for ``device``: numpy for ``"cpu"``, CuPy for ``"cuda"`` / ``"cuda:N"``.

    Raises
    ------
    ValueError
        ``device`` is not one of ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    DeviceUnavailableError
        CuPy is not installed, or it finds no CUDA device (the message says which).
    """
    name, _, index = str(device).partition(":")
    if name == "cpu" and not index:
        return np
    if name != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"emulator device {device!r}: allowed are 'cpu', 'cuda' and 'cuda:N'")
    try:
        import cupy
    except ImportError as exc:
        raise DeviceUnavailableError(
            f"emulator device {device!r}: CuPy is not installed ({exc}); {_GPU_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDA driver/runtime errors have many types
        raise DeviceUnavailableError(f"emulator device {device!r}: CuPy finds no usable CUDA driver ({exc})") from None
    want = int(index or 0)
    if want >= count:
        raise DeviceUnavailableError(f"emulator device {device!r}: {count} CUDA device(s) present, "
                                     f"index {want} does not exist")
    cupy.cuda.Device(want).use()
    return cupy


def namespace_of(*arrays):
    """The array module of the given arrays: CuPy if any is a CuPy array, else numpy."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy
            return cupy
    return np


def to_host(a) -> np.ndarray:
    """A numpy copy (CuPy) or the array itself (numpy)."""
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)


def segment_ids(xp, lens):
    """For segments of lengths ``lens`` laid end to end: the segment each element belongs to.

    ``segment_ids(xp, [2, 0, 3]) == [0, 0, 2, 2, 2]``.  numpy's ``repeat`` takes an
    array of counts; CuPy's does not, so there a binary search over the segment ends
    gives the same result.
    """
    if xp is np:
        return np.repeat(np.arange(lens.size, dtype=np.int64), lens)
    ends = xp.cumsum(lens)
    total = int(ends[-1]) if ends.size else 0
    return xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right").astype(xp.int64)


def repeat(xp, values, lens):
    """``values[i]`` repeated ``lens[i]`` times, in order (numpy's ``repeat`` with an array of counts)."""
    if xp is np:
        return np.repeat(values, lens)
    return values[segment_ids(xp, lens)]


def ranges(xp, starts, lens):
    """Concatenate ``arange(s, s + l)`` for every (s, l), in order, without a loop."""
    first = xp.cumsum(lens) - lens
    if xp is np:
        total = int(first[-1] + lens[-1]) if lens.size else 0
        return np.repeat(starts - first, lens) + np.arange(total, dtype=np.int64)
    seg = segment_ids(xp, lens)
    return (starts - first)[seg] + xp.arange(seg.size, dtype=xp.int64)


def bincount(xp, x, weights=None, minlength: int = 0):
    """``xp.bincount`` that also takes an empty ``x`` (CuPy's reduces ``max(x)`` first and fails on it).

    With ``weights`` the sums are float64; every caller adds integers whose partial sums
    stay below 2^53, so the result is exact in any order (CuPy adds with atomics).
    """
    if x.size == 0:
        return xp.zeros(minlength, dtype=xp.int64 if weights is None else xp.float64)
    if weights is not None and weights.dtype != xp.float64:
        weights = weights.astype(xp.float64)
    return xp.bincount(x, weights=weights, minlength=minlength)
