"""The HTTP server of ``neurovm serve``: FastAPI on uvicorn (spec §23).

:func:`create_app` builds the application over a data folder; :func:`serve` runs it.  Every
route but ``/healthz`` needs ``Authorization: Bearer <token>``; arrays travel as ``.npz``
bodies (``application/octet-stream``), small things as JSON.  Errors are JSON
``{"error": message}`` with the status of their :mod:`~neurovm.host.service.errors` class.

Tenant routes (``/v1``)::

    GET    /v1/info                      the caller, its quota, the chip configuration
    GET    /v1/vms                       the caller's VMs
    POST   /v1/vms                       {"name", "cores"}            create
    PUT    /v1/vms/{name}/network        .nvmap bytes                  load
    POST   /v1/vms/{name}/run?steps=N[&keep=1]   .npz inputs  -> .npz spikes (keep: queued, JSON)
    GET    /v1/vms/{name}/output         the oldest kept output (.npz)
    POST   /v1/vms/{name}/reset_state
    GET    /v1/vms/{name}/state          .npz u, v, ref, acc
    GET    /v1/vms/{name}/telemetry      JSON
    DELETE /v1/vms/{name}
    POST   /v1/predict?steps=N           .npz {model: .nvm bytes as uint8, x} -> .npz {pred, scores}

Administrator routes: ``POST /admin/tenants`` ({"name", "quota"} -> {"token"}), ``PATCH
/admin/tenants/{name}`` (quota), ``GET /admin/status``, ``GET /admin/scheduler``, ``POST
/admin/migrate``, ``GET /metrics``.
"""

import asyncio
import hashlib
import logging
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .errors import AuthError, BadRequest, Forbidden, RateLimited, ServiceError, Timeout, TooLarge
from .hypervisor import ServiceHypervisor, spikes_arrays
from .registry import ADMIN, Registry, RegistryError, Tenant
from .wire import MEDIA_TYPE, pack, unpack

__all__ = ["create_app", "serve", "open_data", "ensure_admin", "BODY_TIMEOUT_S"]

log = logging.getLogger("neurovm.serve")
#: Seconds a client may take to send its request body; a stalled upload is refused (408).
BODY_TIMEOUT_S = 30.0
#: Largest body of an administrator request.
_ADMIN_BODY = 64 << 10


def open_data(data) -> Registry:
    """The registry of data folder ``data`` (created, with the folder, when missing)."""
    data = Path(data)
    data.mkdir(parents=True, exist_ok=True)
    return Registry(data / "registry.sqlite")


def ensure_admin(registry: Registry, data) -> Path | None:
    """Create the administrator token if there is none: written to ``DATA/admin.token`` (mode 0600,
    atomically); returns that path, or None when the administrator existed already."""
    import os

    from neurovm.atomic import atomic_write

    if registry.has_admin():
        return None
    token = registry.add_tenant(ADMIN, admin=True)
    path = Path(data) / "admin.token"
    atomic_write(path, lambda fh: fh.write(token.encode() + b"\n"))
    os.chmod(path, 0o600)
    return path


class _Buckets:
    """Token buckets of the request-rate quota, one per tenant."""

    def __init__(self):
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, tenant: Tenant) -> None:
        q = tenant.quota
        now = time.monotonic()
        with self._lock:
            level, then = self._state.get(tenant.name, (float(q.burst), now))
            level = min(float(q.burst), level + (now - then) * q.rate)
            if level < 1.0:
                self._state[tenant.name] = (level, now)
                raise RateLimited(f"quota rate={q.rate:g}/s (burst {q.burst}) of tenant {tenant.name!r}: "
                                  f"too many requests, retry in {(1.0 - level) / q.rate:.2f} s")
            self._state[tenant.name] = (level - 1.0, now)


class _Metrics:
    """Per-tenant Prometheus metrics: requests, latency, steps, synaptic operations, energy."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("neurovm_requests", "Requests served", ["tenant", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("neurovm_request_seconds", "Request latency", ["tenant"], registry=self.registry)
        self.steps = Counter("neurovm_steps", "Timesteps run", ["tenant"], registry=self.registry)
        self.syn_ops = Counter("neurovm_syn_ops", "Synaptic operations", ["tenant"], registry=self.registry)
        self.energy = Counter("neurovm_energy_pj", "Estimated energy (pJ)", ["tenant"], registry=self.registry)
        self.swaps = Gauge("neurovm_context_swaps", "VM contexts swapped out so far", registry=self.registry)

    def bill(self, tenant: str, report) -> None:
        self.steps.labels(tenant).inc(report.steps)
        self.syn_ops.labels(tenant).inc(report.syn_ops)
        self.energy.labels(tenant).inc(report.energy_pj)


def create_app(data, backend: str = "emulator", chips: int = 1, config=None, body_timeout: float = BODY_TIMEOUT_S,
               quantum: int = 1000):
    """The FastAPI application serving the data folder ``data`` on ``chips`` chips of ``backend``; a request
    body must arrive within ``body_timeout`` seconds; runs are sliced into ``quantum`` steps."""
    import neurovm
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    registry = open_data(data)
    hv = ServiceHypervisor(registry, [neurovm.open(backend, config) for _ in range(chips)], Path(data), quantum)
    buckets, metrics = _Buckets(), _Metrics()
    known: dict[bytes, Tenant] = {}       # sha256(token) -> tenant, after one scrypt check
    app = FastAPI(title="NeuroVM hypervisor", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hypervisor = hv

    def authenticate(request: Request) -> Tenant:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise AuthError("no token: send 'Authorization: Bearer <token>'")
        token = header[len("Bearer "):].strip()
        key = hashlib.sha256(token.encode()).digest()
        tenant = known.get(key)
        if tenant is None:
            tenant = registry.authenticate(token)
            if tenant is None:
                raise AuthError("the token is not valid")
            known[key] = tenant
        request.state.tenant = tenant.name
        if not tenant.is_admin:
            buckets.take(tenant)
        return tenant

    def guest(request: Request) -> Tenant:
        tenant = authenticate(request)
        if tenant.is_admin:
            raise Forbidden("the administrator holds no VMs; use a tenant's token")
        return tenant

    def admin(request: Request) -> Tenant:
        tenant = authenticate(request)
        if not tenant.is_admin:
            raise Forbidden("this operation is the administrator's")
        return tenant

    async def body(request: Request, limit: int) -> bytes:
        """The request body, refused past ``limit`` bytes or when the client stalls."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"the body has {declared} bytes, over the upload_bytes quota of {limit}")

        async def read() -> bytes:
            parts, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the body passes the upload_bytes quota of {limit} bytes")
                parts.append(chunk)
            return b"".join(parts)
        try:
            return await asyncio.wait_for(read(), body_timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"the request body did not arrive within {body_timeout:g} s") from None

    async def json_body(request: Request, limit: int) -> dict:
        import json

        raw = await body(request, limit)
        try:
            value = json.loads(raw or b"{}")
        except ValueError as e:
            raise BadRequest(f"the body is not JSON ({e})") from None
        if not isinstance(value, dict):
            raise BadRequest("the body must be a JSON object")
        return value

    def npz(arrays: dict) -> Response:
        return Response(pack(arrays), media_type=MEDIA_TYPE)

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        t0 = time.perf_counter()
        request.state.tenant = "-"
        response = await call_next(request)
        dt = time.perf_counter() - t0
        tenant = getattr(request.state, "tenant", "-")
        route = request.scope.get("route")
        metrics.requests.labels(tenant, getattr(route, "path", "?"), str(response.status_code)).inc()
        metrics.latency.labels(tenant).observe(dt)
        log.info("tenant=%s %s %s status=%d ms=%.1f", tenant, request.method, request.url.path,
                 response.status_code, dt * 1e3)
        return response

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, e: ServiceError):
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, e: RegistryError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    @app.get("/v1/info")
    async def info(request: Request):
        t = guest(request)
        return {"tenant": t.name, "quota": asdict(t.quota), "config": hv.config.to_dict(), "chips": len(hv.chips)}

    @app.get("/v1/vms")
    async def list_vms(request: Request):
        t = guest(request)
        return [{"name": v.name, "cores": v.cores, "loaded": v.context.mapped is not None,
                 "resident": v.resident} for v in hv.vms_of(t.name)]

    @app.post("/v1/vms", status_code=201)
    async def create_vm(request: Request):
        t = guest(request)
        req = await json_body(request, min(t.quota.upload_bytes, _ADMIN_BODY))
        svm = await run_in_threadpool(hv.create_vm, t, req.get("name"), req.get("cores", 1))
        return {"name": svm.name, "cores": svm.cores}

    @app.put("/v1/vms/{name}/network")
    async def load(name: str, request: Request):
        t = guest(request)
        blob = await body(request, t.quota.upload_bytes)
        hv.find(t, name)
        svm = await run_in_threadpool(hv.load, t, name, blob)
        return {"name": svm.name, "neurons": int(svm.context.mapped.n)}

    @app.post("/v1/vms/{name}/run")
    async def run(name: str, request: Request, steps: int, keep: bool = False):
        t = guest(request)
        hv.find(t, name)
        inputs = unpack(await body(request, t.quota.upload_bytes), t.quota.upload_bytes, "run inputs")
        out, report = await run_in_threadpool(hv.run, t, name, steps, inputs, keep)
        metrics.bill(t.name, report)
        metrics.swaps.set(hv.swaps)
        if keep:
            return JSONResponse({"pending": hv.pending_outputs(t, name)}, status_code=202)
        return npz(spikes_arrays(out))

    @app.get("/v1/vms/{name}/output")
    async def output(name: str, request: Request):
        t = guest(request)
        return Response(await run_in_threadpool(hv.take_output, t, name), media_type=MEDIA_TYPE)

    @app.post("/v1/vms/{name}/reset_state")
    async def reset_state(name: str, request: Request):
        t = guest(request)
        await run_in_threadpool(hv.reset_state, t, name)
        return {"name": name}

    @app.get("/v1/vms/{name}/state")
    async def state(name: str, request: Request):
        t = guest(request)
        return npz(await run_in_threadpool(hv.state, t, name))

    @app.get("/v1/vms/{name}/telemetry")
    async def telemetry(name: str, request: Request):
        t = guest(request)
        return await run_in_threadpool(hv.telemetry, t, name)

    @app.delete("/v1/vms/{name}")
    async def destroy(name: str, request: Request):
        t = guest(request)
        await run_in_threadpool(hv.destroy, t, name)
        return {"name": name, "destroyed": True}

    @app.post("/v1/predict")
    async def predict(request: Request, steps: int | None = None):
        t = guest(request)
        parts = unpack(await body(request, t.quota.upload_bytes), t.quota.upload_bytes, "predict request")
        if set(parts) != {"model", "x"} or parts["model"].dtype != np.uint8 or parts["model"].ndim != 1:
            raise BadRequest("predict needs members 'model' (the .nvm file as a 1-D uint8 array) and 'x'")
        pred, scores = await run_in_threadpool(hv.predict, t, parts["model"].tobytes(), parts["x"], steps)
        return npz({"pred": pred, "scores": scores})

    @app.post("/admin/tenants", status_code=201)
    async def add_tenant(request: Request):
        admin(request)
        req = await json_body(request, _ADMIN_BODY)
        token = registry.add_tenant(req.get("name"), req.get("quota"))
        return {"name": req.get("name"), "token": token}

    @app.patch("/admin/tenants/{name}")
    async def set_quota(name: str, request: Request):
        admin(request)
        q = registry.set_quota(name, await json_body(request, _ADMIN_BODY))
        known.clear()                      # the cached tenants carry their old quota
        return {"name": name, "quota": asdict(q)}

    @app.get("/admin/status")
    async def admin_status(request: Request):
        admin(request)
        return {"vms": hv.status(), "swaps": hv.swaps, "chips": len(hv.chips), "batches": hv.batcher.batches,
                "largest_batch": hv.batcher.largest}

    @app.get("/admin/scheduler")
    async def scheduler(request: Request):
        admin(request)      # read without the hypervisor's lock: answers while a run is in progress
        return {"batches": hv.batcher.batches, "largest_batch": hv.batcher.largest, "serving": hv.batcher.serving,
                "queued": hv.batcher.queued(), "recent": [list(t) for t in hv.batcher.recent(32)]}

    @app.post("/admin/migrate")
    async def migrate(request: Request):
        admin(request)
        req = await json_body(request, _ADMIN_BODY)
        await run_in_threadpool(hv.migrate, req.get("tenant"), req.get("name"), req.get("chip"))
        return {"moved": True}

    @app.get("/metrics")
    async def prometheus(request: Request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        admin(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(data, backend: str = "emulator", chips: int = 1, host: str = "127.0.0.1", port: int = 8750,
          config=None, body_timeout: float = BODY_TIMEOUT_S, quantum: int = 1000) -> None:
    """Run the daemon until interrupted: one line per request on stderr."""
    import uvicorn

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    registry = open_data(data)
    made = ensure_admin(registry, data)
    registry.close()
    if made is not None:
        log.info("administrator token written to %s (readable by its owner only)", made)
    app = create_app(data, backend, chips, config, body_timeout, quantum)
    log.info("serving %s x %s on http://%s:%d, data in %s", chips, backend, host, port, data)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5)
