"""Atomic file saves: a save either replaces the target whole or leaves it as it was.

Every file NeuroVM writes (``.nvm`` models, ``.nvmap`` mapped networks, rasters,
reports) goes through :func:`atomic_write`: the data is written to a temporary
file in the target's own folder (so the final ``rename`` never crosses a file
system), flushed and ``fsync``-ed, then renamed over the target with
``os.replace`` (atomic on POSIX and Windows), and the folder is ``fsync``-ed so
the rename itself survives a power cut. A failure or a kill at any point leaves
the previous file intact and no temporary file behind (except after SIGKILL,
where a ``.<name>.<random>.tmp`` may remain beside an intact target).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, BinaryIO

__all__ = ["SaveError", "atomic_write", "unwritable"]


class SaveError(OSError):
    """A save could not be done; the message names the file and why. The old file is unchanged."""


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file, then atomically replace ``path`` with it.

    Parameters
    ----------
    path : str or Path
        The target. Its folder must exist (a missing folder is a ``SaveError``
        naming it, not created silently).
    write : callable
        Writes the whole content to the binary file object it is given. Any
        exception it raises propagates unchanged after the temporary file is removed.

    Returns
    -------
    Path
        The target path.
    """
    path = Path(path)
    problem = unwritable(path)
    if problem:
        raise SaveError(f"{path}: cannot save, {problem}")
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise SaveError(f"{path}: cannot save ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)
    return path


def unwritable(path) -> str | None:
    """Why ``path`` cannot be saved to (its folder is missing, or it is a folder), or None.

    The command line asks before doing any work; :func:`atomic_write` asks again before writing.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return f"folder {str(folder)!r} does not exist"
    if path.is_dir():
        return "it is a folder; give a file name"
    return None


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
