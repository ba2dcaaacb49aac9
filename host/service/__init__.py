"""The hypervisor as a service: ``neurovm serve``, remote tenants, tokens, quotas, persistence (spec §23).

* :mod:`.registry` -- SQLite registry of tenants (hashed tokens, quotas) and VMs (network, context);
* :mod:`.hypervisor` -- the daemon's chips and tenant VMs: quotas, swapping, persistence, billing;
* :mod:`.server` -- the FastAPI application and :func:`serve` (uvicorn);
* :mod:`.client` -- :func:`connect`, the in-process VM API over HTTP (httpx);
* :mod:`.cli` -- the ``neurovm serve`` subcommands and the CLI's ``--server`` runs;
* :mod:`.process` -- :class:`~.process.ServeProcess`, a daemon as a child process on a free local port.
"""

from .client import Connection, RemoteVM, connect
from .errors import (AuthError, BadRequest, Busy, Conflict, Forbidden, NotFound, QuotaError, RateLimited,
                     ServiceError, Timeout, TooLarge)

__all__ = ["connect", "Connection", "RemoteVM", "ServiceError", "BadRequest", "AuthError", "Forbidden", "NotFound",
           "Conflict", "QuotaError", "RateLimited", "Timeout", "TooLarge", "Busy"]
