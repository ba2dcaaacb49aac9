"""The service's errors: one class per HTTP status, the same classes on both sides of the wire."""

from __future__ import annotations

__all__ = ["ServiceError", "BadRequest", "AuthError", "Forbidden", "NotFound", "Conflict", "QuotaError",
           "RateLimited", "Timeout", "TooLarge", "Busy", "error_for_status"]


class ServiceError(RuntimeError):
    """A refused service request; ``status`` is its HTTP status.  The VM and the registry are unchanged."""

    status = 500


class BadRequest(ServiceError):
    """The request is malformed or refused by the hypervisor (bad network, inputs, steps)."""

    status = 400


class AuthError(ServiceError):
    """No token, or a token no tenant holds."""

    status = 401


class Forbidden(ServiceError):
    """The operation is the administrator's."""

    status = 403


class NotFound(ServiceError):
    """No such VM among the caller's (another tenant's VM reads the same)."""

    status = 404


class Conflict(ServiceError):
    """The name is taken, or the VM's uncollected outputs are full."""

    status = 409


class Timeout(ServiceError):
    """The client did not send its request body in time."""

    status = 408


class TooLarge(ServiceError):
    """The request body passes the tenant's upload quota."""

    status = 413


class QuotaError(ServiceError):
    """A quota (VMs, cores, steps) would be exceeded; the message names it."""

    status = 429


class RateLimited(QuotaError):
    """The tenant's request-rate quota is spent for now."""


class Busy(ServiceError):
    """The chip has no room now and nothing can be swapped out."""

    status = 503


_BY_STATUS = {c.status: c for c in (BadRequest, AuthError, Forbidden, NotFound, Timeout, Conflict, TooLarge,
                                     QuotaError, Busy)}


def error_for_status(status: int, message: str) -> ServiceError:
    """The error class of an HTTP status (ServiceError for others), with ``message``."""
    err = _BY_STATUS.get(status, ServiceError)(message)
    if type(err) is ServiceError:
        err.status = status
    return err
