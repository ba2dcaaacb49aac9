"""The client of ``neurovm serve``: the in-process VM API over HTTP (httpx).

    conn = neurovm.connect("http://127.0.0.1:8750")        # token from $NEUROVM_TOKEN
    vm = conn.create_vm("net", cores=2)
    vm.load(network)                                          # DiGraph, Network, MappedNetwork or .nvmap path
    out = vm.run(100, {"in": raster})                         # SpikeTrains, as in-process
    vm.state(); vm.telemetry(); vm.destroy()
    conn.predict(model, x)                                    # an SnnModel or a .nvm path

Errors come back as the classes of :mod:`neurovm.host.service.errors` with the server's message.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..runtime import SpikeTrains
from .errors import ServiceError, error_for_status
from .wire import MEDIA_TYPE, pack, unpack

__all__ = ["connect", "Connection", "RemoteVM", "TOKEN_ENV", "read_token"]

#: The environment variable that holds a tenant's token.
TOKEN_ENV = "NEUROVM_TOKEN"
_NO_LIMIT = 1 << 40


def read_token(token: str | None = None, token_file=None) -> str:
    """The token: given, else read from ``token_file``, else ``$NEUROVM_TOKEN``; ServiceError if none."""
    if token:
        return token
    if token_file is not None:
        try:
            text = Path(token_file).read_text().strip()
        except OSError as e:
            raise ServiceError(f"token file {token_file}: {e.strerror or e}") from None
        if not text:
            raise ServiceError(f"token file {token_file} is empty")
        return text
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    raise ServiceError(f"no token: set {TOKEN_ENV} or give a token file")


def connect(url: str, token: str | None = None, token_file=None, timeout: float = 600.0) -> "Connection":
    """Connect to a NeuroVM server as the tenant whose token is given (or in ``token_file``, or in
    ``$NEUROVM_TOKEN``)."""
    return Connection(url, read_token(token, token_file), timeout)


class Connection:
    """A tenant's session with a server: creates and finds its VMs, predicts with models."""

    def __init__(self, url: str, token: str, timeout: float = 600.0):
        import httpx

        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        self._config = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, json=None, content: bytes | None = None, params=None):
        """One request; the response, or the server's error raised as its ServiceError class."""
        import httpx

        headers = {"Content-Type": MEDIA_TYPE} if content is not None else None
        try:
            r = self._http.request(method, path, json=json, content=content, params=params, headers=headers)
        except httpx.HTTPError as e:
            raise ServiceError(f"{self.url}: {type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]
            except Exception:  # noqa: BLE001 - not our JSON error: report the status and text
                message = f"HTTP {r.status_code}: {r.text[:200]}"
            raise error_for_status(r.status_code, message)
        return r

    # ---- the API ------------------------------------------------------------------------------------------
    def info(self) -> dict:
        """The caller's name, quota and the server's chip configuration."""
        return self.request("GET", "/v1/info").json()

    @property
    def config(self):
        """The server's ChipConfig."""
        from neurovm.config import ChipConfig

        if self._config is None:
            self._config = ChipConfig.from_dict(self.info()["config"])
        return self._config

    @property
    def vms(self) -> list["RemoteVM"]:
        """The caller's VMs."""
        return [RemoteVM(self, v["name"], v["cores"]) for v in self.request("GET", "/v1/vms").json()]

    def vm(self, name: str) -> "RemoteVM":
        """The caller's VM ``name`` (NotFound otherwise)."""
        found = [v for v in self.vms if v.name == name]
        if not found:
            from .errors import NotFound

            raise NotFound(f"no VM named {name!r}")
        return found[0]

    def create_vm(self, name: str, cores: int = 1) -> "RemoteVM":
        """A new VM of ``cores`` cores."""
        r = self.request("POST", "/v1/vms", json={"name": name, "cores": cores}).json()
        return RemoteVM(self, r["name"], r["cores"])

    def predict(self, model, x, steps: int | None = None, return_scores: bool = False):
        """Class predictions of ``model`` (an SnnModel or a ``.nvm`` path) for samples ``x``."""
        blob = _model_bytes(model)
        params = {"steps": steps} if steps is not None else None
        r = self.request("POST", "/v1/predict", params=params,
                         content=pack({"model": np.frombuffer(blob, dtype=np.uint8), "x": np.asarray(x)}))
        got = unpack(r.content, _NO_LIMIT, "predict response")
        return (got["pred"], got["scores"]) if return_scores else got["pred"]


class RemoteVM:
    """A VM on the server: the in-process :class:`~neurovm.host.runtime.VM` API."""

    def __init__(self, conn: Connection, name: str, cores: int):
        self._conn = conn
        self.name = name
        self.cores = cores

    def __repr__(self) -> str:
        return f"RemoteVM({self.name!r}, cores={self.cores}, server={self._conn.url!r})"

    def _path(self, tail: str = "") -> str:
        from urllib.parse import quote

        return f"/v1/vms/{quote(self.name, safe='')}{tail}"

    def load(self, network, weight_exp: int = 0) -> "RemoteVM":
        """Load a DiGraph, Network, MappedNetwork or ``.nvmap`` path (mapped here, placed by the server)."""
        self._conn.request("PUT", self._path("/network"), content=_network_bytes(network, self._conn, weight_exp))
        return self

    def run(self, steps: int, inputs: dict | None = None, keep: bool = False):
        """Run ``steps`` steps with ``inputs`` (population -> raster or spike times); SpikeTrains.
        With ``keep`` the output is kept on the server (see :meth:`output`) and the number waiting is
        returned."""
        arrays = {str(k): np.asarray(v) for k, v in (inputs or {}).items()}
        params = {"steps": steps, "keep": "true" if keep else "false"}
        r = self._conn.request("POST", self._path("/run"), params=params, content=pack(arrays))
        if keep:
            return r.json()["pending"]
        return _spikes(unpack(r.content, _NO_LIMIT, "run response"))

    def output(self) -> SpikeTrains:
        """The oldest output kept by ``run(..., keep=True)`` (NotFound when none waits)."""
        return _spikes(unpack(self._conn.request("GET", self._path("/output")).content, _NO_LIMIT, "output"))

    def reset_state(self) -> None:
        self._conn.request("POST", self._path("/reset_state"))

    def state(self) -> dict[str, np.ndarray]:
        return unpack(self._conn.request("GET", self._path("/state")).content, _NO_LIMIT, "state")

    def telemetry(self) -> dict:
        return self._conn.request("GET", self._path("/telemetry")).json()

    def destroy(self) -> None:
        self._conn.request("DELETE", self._path())


def _spikes(d: dict) -> SpikeTrains:
    steps, n = (int(v) for v in d["shape"])
    return SpikeTrains(d["step"], d["neuron"], n, steps)


def _model_bytes(model) -> bytes:
    if isinstance(model, (str, Path)):
        return Path(model).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.nvm"
        model.save(path)
        return path.read_bytes()


def _network_bytes(network, conn: Connection, weight_exp: int) -> bytes:
    """``.nvmap`` bytes of a network: a path is sent as it is; a graph or Network is mapped for the
    server's configuration first."""
    from neurovm.mapper import MappedNetwork, map_network

    if isinstance(network, (str, Path)):
        return Path(network).read_bytes()
    if not isinstance(network, MappedNetwork):
        network = map_network(network, conn.config, weight_exp=weight_exp)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.nvmap"
        network.save(path)
        return path.read_bytes()
