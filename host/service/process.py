"""A ``neurovm serve`` daemon as a child process on a free port of 127.0.0.1 (tests, benchmarks, notebooks).

:class:`ServeProcess` starts the server over a data folder, waits until it answers ``/healthz``,
reads the admin token the server wrote there, and offers the admin calls a harness needs
(``add_tenant``, ``admin_get``) beside :func:`~neurovm.host.service.connect` for tenants.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ServeProcess", "ServerStartError"]


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; the message names the log file and its tail."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``neurovm serve --data DATA --listen 127.0.0.1:PORT`` in a child process.

    Parameters
    ----------
    data : path
        The server's data folder (created by the server); its log goes beside it.
    backend, chips, body_timeout, quantum
        The ``serve`` options of the same names (None: the server's default).
    startup_timeout : float
        Seconds to wait for ``/healthz`` (a Verilator backend builds its model first).

    ``start()`` (or ``with``) starts it; ``stop()`` ends it with SIGTERM, ``kill9()`` with SIGKILL.
    """

    def __init__(self, data, backend: str = "emulator", chips: int | None = None, body_timeout: float | None = None,
                 quantum: int | None = None, startup_timeout: float = 60.0):
        self.data, self.backend, self.proc = Path(data), backend, None
        self.options = {"--chips": chips, "--body-timeout": body_timeout, "--quantum": quantum}
        self.startup_timeout = startup_timeout

    def start(self, env: dict | None = None) -> "ServeProcess":
        import httpx

        self.port = port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = self.data.parent / f"{self.data.name}-serve-{port}.log"
        self._log = open(self.log_path, "wb")
        args = [a for opt, v in self.options.items() if v is not None for a in (opt, str(v))]
        self.proc = subprocess.Popen([sys.executable, "-m", "neurovm.cli", "serve", "--data", str(self.data),
                                      "--listen", f"127.0.0.1:{port}", "--backend", self.backend, *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerStartError(f"the server exited with status {self.proc.returncode} "
                                       f"(log {self.log_path}): {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"the server did not answer /healthz within {self.startup_timeout:.0f} s "
                                       f"(log {self.log_path})")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        self.admin = (self.data / "admin.token").read_text().strip()
        return self

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_tenant(self, name: str, **quota) -> str:
        """Create tenant ``name`` with ``quota`` (the server's defaults for the rest); its token."""
        import httpx

        r = httpx.post(f"{self.url}/admin/tenants", json={"name": name, "quota": quota},
                       headers={"Authorization": f"Bearer {self.admin}"})
        if r.status_code != 201:
            raise RuntimeError(f"adding tenant {name!r}: HTTP {r.status_code} {r.text}")
        return r.json()["token"]

    def connect(self, token: str):
        """A tenant's connection (:func:`neurovm.host.service.connect`)."""
        from .client import connect

        return connect(self.url, token)

    def admin_get(self, path: str):
        """``GET path`` with the admin token: the httpx response."""
        import httpx

        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.admin}"})

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def kill9(self) -> None:
        """SIGKILL now (what the persistence tests do to the daemon)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()
