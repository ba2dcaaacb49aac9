"""The container shared by NeuroVM's files (``.nvmap`` mapped networks, ``.nvm`` models):
a NumPy ``.npz`` holding a JSON header (``format``, ``version``, ...) and named arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["save_npz", "load_npz"]


def save_npz(path, header: dict, arrays: dict) -> None:
    """Write ``header`` (JSON) and ``arrays`` to ``path``, compressed."""
    with open(path, "wb") as fh:
        np.savez_compressed(fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)


def load_npz(path, fmt: str, version: int, kind: str, error: type[Exception]):
    """Open ``path`` and check its header's format and version; returns ``(header, arrays)``.

    Every problem raises ``error`` with a message naming the file: missing, unreadable
    (truncated, not an npz, bad JSON), another format, an unsupported version.
    """
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
        header = json.loads(bytes(z["header"]).decode())
    except Exception as e:   # noqa: BLE001 - corrupt, truncated, not npz: one clear message
        raise error(f"{path}: not a readable {kind} ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        found = header.get("format") if isinstance(header, dict) else None
        raise error(f"{path}: format {found!r} is not {fmt!r}")
    if header.get("version") != version:
        raise error(f"{path}: {kind} version {header.get('version')} is not supported (this is version {version})")
    return header, z
