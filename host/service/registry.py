"""The service's registry: tenants, their hashed tokens and quotas, and every VM's saved state (SQLite).

One SQLite file (``DATA/registry.sqlite``, stdlib :mod:`sqlite3`) holds

* ``tenants``: name, salt and scrypt hash of the token (never the token), admin flag, quotas (JSON);
* ``vms``: per tenant VM: name, cores, the loaded network (``.nvmap`` bytes), the saved context
  (an ``.npz`` of every core region, counters and steps);
* ``outputs``: each VM's uncollected run results (``.npz`` bytes), oldest first.

Every change is one SQLite transaction (journal mode WAL, ``synchronous=FULL``): after a
``kill -9`` the file holds the state of the last committed request, never half of one.
Tokens are ``nvm.<tenant id>.<secret>``; only ``scrypt(secret, salt)`` is stored and it is
compared in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["Registry", "RegistryError", "Quota", "Tenant", "VMRecord", "ADMIN"]

#: The name of the administrator principal (it holds no VMs).
ADMIN = "admin"
#: scrypt cost parameters (16 MiB, ~50 ms per check; the server caches verified tokens).
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    salt BLOB NOT NULL,
    token_hash BLOB NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    quota TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    cores INTEGER NOT NULL,
    network BLOB,
    context BLOB,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS outputs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    data BLOB NOT NULL
);
"""


class RegistryError(RuntimeError):
    """A registry request that cannot be done (unknown tenant, name taken, bad quota); nothing changed."""


@dataclass(frozen=True)
class Quota:
    """What one tenant may use.

    Attributes
    ----------
    vms : int
        VMs held at once.
    cores : int
        Cores summed over its VMs.
    steps : int
        Timesteps in one run or predict request (per sample).
    rate : float
        Requests per second (a token bucket of ``burst`` requests).
    burst : int
        Requests the bucket holds.
    upload_bytes : int
        Largest request body.
    outputs : int
        Uncollected run outputs kept per VM.
    """

    vms: int = 4
    cores: int = 8
    steps: int = 10_000
    rate: float = 50.0
    burst: int = 100
    upload_bytes: int = 16 << 20
    outputs: int = 8

    @classmethod
    def from_dict(cls, d: dict) -> "Quota":
        """A Quota from a JSON object; unknown or non-positive fields are a RegistryError naming them."""
        if not isinstance(d, dict):
            raise RegistryError(f"quota must be a JSON object, not {type(d).__name__}")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise RegistryError(f"unknown quota {unknown[0]!r}; quotas are {', '.join(known)}")
        for k, v in d.items():
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            if not ok or (k != "rate" and not isinstance(v, int)):
                raise RegistryError(f"quota {k}={v!r}: must be a positive {'number' if k == 'rate' else 'integer'}")
        return cls(**{**asdict(cls()), **d})


@dataclass(frozen=True)
class Tenant:
    """A principal: id, name, admin flag and quota."""

    id: int
    name: str
    is_admin: bool
    quota: Quota


@dataclass
class VMRecord:
    """A VM as the registry keeps it."""

    id: int
    tenant: str
    name: str
    cores: int
    network: bytes | None
    context: bytes | None


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


class Registry:
    """The SQLite registry of one service data folder.

    Parameters
    ----------
    path : str or Path
        The database file; its folder must exist.
    """

    def __init__(self, path):
        path = Path(path)
        if not path.parent.is_dir():
            raise RegistryError(f"{path}: the data folder {path.parent} does not exist")
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # ---- transactions ------------------------------------------------------------------------
    def transaction(self):
        """A context manager: one SQLite transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error)."""
        return _Transaction(self)

    # ---- tenants -------------------------------------------------------------------------------
    def add_tenant(self, name: str, quota: dict | None = None, admin: bool = False) -> str:
        """Create a tenant and return its token (shown once: only its salted scrypt hash is stored)."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise RegistryError(f"tenant name {name!r}: use 1..64 letters, digits, '-' or '_'")
        if name == ADMIN and not admin:
            raise RegistryError(f"tenant name {name!r} is reserved for the administrator")
        q = Quota.from_dict(quota or {})
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise RegistryError(f"tenant {name!r} already exists")
            cur = db.execute("INSERT INTO tenants (name, salt, token_hash, is_admin, quota) VALUES (?, ?, ?, ?, ?)",
                             (name, salt, _hash(secret, salt), int(admin), json.dumps(asdict(q))))
            tid = cur.lastrowid
        return f"nvm.{tid}.{secret}"

    def has_admin(self) -> bool:
        """Whether the administrator token exists."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM tenants WHERE is_admin = 1").fetchone() is not None

    def authenticate(self, token: str) -> Tenant | None:
        """The tenant whose token this is, or None (unknown id, wrong secret, malformed token)."""
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != "nvm" or not parts[1].isdigit() or len(parts[2]) > 200:
            return None
        with self._lock:
            row = self._db.execute("SELECT id, name, salt, token_hash, is_admin, quota FROM tenants WHERE id = ?",
                                   (int(parts[1]),)).fetchone()
        if row is None:
            _hash(parts[2], b"\0" * 16)        # same work whether or not the id exists
            return None
        if not hmac.compare_digest(_hash(parts[2], row[2]), row[3]):
            return None
        return Tenant(row[0], row[1], bool(row[4]), Quota(**json.loads(row[5])))

    def tenants(self) -> list[Tenant]:
        """Every principal, by id."""
        with self._lock:
            rows = self._db.execute("SELECT id, name, is_admin, quota FROM tenants ORDER BY id").fetchall()
        return [Tenant(r[0], r[1], bool(r[2]), Quota(**json.loads(r[3]))) for r in rows]

    def set_quota(self, name: str, quota: dict) -> Quota:
        """Change some of a tenant's quotas; returns the new quota."""
        with self.transaction() as db:
            row = db.execute("SELECT quota FROM tenants WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise RegistryError(f"no tenant named {name!r}")
            q = Quota.from_dict({**json.loads(row[0]), **(quota or {})})
            db.execute("UPDATE tenants SET quota = ? WHERE name = ?", (json.dumps(asdict(q)), name))
        return q

    # ---- VMs -----------------------------------------------------------------------------------
    def vms(self, tenant: str | None = None) -> list[VMRecord]:
        """Every VM (of ``tenant``), by id."""
        sql = ("SELECT v.id, t.name, v.name, v.cores, v.network, v.context FROM vms v "
               "JOIN tenants t ON t.id = v.tenant_id")
        args: tuple = ()
        if tenant is not None:
            sql, args = sql + " WHERE t.name = ?", (tenant,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY v.id", args).fetchall()
        return [VMRecord(*r) for r in rows]

    def add_vm(self, tenant_id: int, name: str, cores: int, context: bytes) -> int:
        """Record a new VM (with its empty context); returns its registry id."""
        with self.transaction() as db:
            cur = db.execute("INSERT INTO vms (tenant_id, name, cores, context) VALUES (?, ?, ?, ?)",
                             (tenant_id, name, cores, context))
            return cur.lastrowid

    def save_vm(self, vm_id: int, context: bytes, network: bytes | None = None, set_network: bool = False,
                output: bytes | None = None) -> None:
        """Store a VM's context (and network, and one more uncollected output) in one transaction."""
        with self.transaction() as db:
            if set_network:
                db.execute("UPDATE vms SET network = ?, context = ? WHERE id = ?", (network, context, vm_id))
            else:
                db.execute("UPDATE vms SET context = ? WHERE id = ?", (context, vm_id))
            if output is not None:
                db.execute("INSERT INTO outputs (vm_id, data) VALUES (?, ?)", (vm_id, output))

    def delete_vm(self, vm_id: int) -> None:
        """Forget a VM and its outputs."""
        with self.transaction() as db:
            db.execute("DELETE FROM outputs WHERE vm_id = ?", (vm_id,))
            db.execute("DELETE FROM vms WHERE id = ?", (vm_id,))

    def outputs(self, vm_id: int) -> list[tuple[int, bytes]]:
        """The VM's uncollected outputs ``(id, data)``, oldest first."""
        with self._lock:
            return self._db.execute("SELECT id, data FROM outputs WHERE vm_id = ? ORDER BY id", (vm_id,)).fetchall()

    def pop_output(self, vm_id: int) -> bytes | None:
        """Remove and return the VM's oldest uncollected output (None when there is none)."""
        with self.transaction() as db:
            row = db.execute("SELECT id, data FROM outputs WHERE vm_id = ? ORDER BY id LIMIT 1", (vm_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM outputs WHERE id = ?", (row[0],))
            return row[1]


class _Transaction:
    """``with registry.transaction() as db``: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on error."""

    def __init__(self, registry: Registry):
        self._r = registry

    def __enter__(self) -> sqlite3.Connection:
        self._r._lock.acquire()
        self._r._db.execute("BEGIN IMMEDIATE")
        return self._r._db

    def __exit__(self, kind, value, tb) -> bool:
        try:
            self._r._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self._r._lock.release()
        return False
