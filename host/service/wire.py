"""Arrays on the wire: ``.npz`` bodies (``application/octet-stream``), never JSON lists.

A body is an uncompressed ``.npz`` archive: every member a ``.npy`` array, no pickles.  Before
any member is read its declared size is checked, so a small body cannot unpack into a huge
array (a zip bomb), and the whole archive must lie within the caller's upload quota.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from .errors import BadRequest, TooLarge

__all__ = ["pack", "unpack", "MEDIA_TYPE"]

MEDIA_TYPE = "application/octet-stream"


def pack(arrays: dict) -> bytes:
    """``{name: array}`` as ``.npz`` bytes (uncompressed, no pickles)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack(body: bytes, limit: int, what: str = "request body") -> dict[str, np.ndarray]:
    """The arrays of ``.npz`` bytes; BadRequest (malformed, object arrays) or TooLarge (unpacked size
    over ``limit`` bytes) naming the member."""
    if not body:
        return {}
    try:
        zf = zipfile.ZipFile(io.BytesIO(body))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise BadRequest(f"{what}: not an .npz archive ({e})") from None
    total = sum(i.file_size for i in infos)
    if total > limit:
        raise TooLarge(f"{what}: unpacks to {total} bytes, over the upload_bytes quota of {limit}")
    out = {}
    for info in infos:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        try:
            with zf.open(info) as fh:
                out[name] = np.lib.format.read_array(fh, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise BadRequest(f"{what}: member {name!r} is not a readable .npy array ({e})") from None
    return out
