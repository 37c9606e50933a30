"""Every error rayfleet reports to a client, and the one table mapping each to HTTP.

The tree::

    RayfleetError                 500  base; never raised bare
    ├── InvalidInput              400  malformed body, wrong name, dtype or shape
    ├── Unauthorized              401  admin route without the right bearer token
    ├── NotFound                  404
    │   ├── ModelNotFound         404  unknown model
    │   └── VersionNotFound       404  unknown version of a known model
    ├── Conflict                  409  an admin action the rollout's phase refuses
    ├── PayloadTooLarge           413  body over the router's limit
    ├── UnsupportedMediaType      415  a Content-Type no codec reads
    ├── ModelError                500  the model itself raised
    ├── ServiceUnavailable        503  no replica could take the request (Retry-After)
    └── DeadlineExceeded          504  the request outlived the router's deadline
    ConfigError (not a request error: raised at deploy time, never over HTTP)
    StoreError (a ConfigError: missing version, manifest or artifact)

Handlers never pick a status themselves: they raise one of these and
:func:`http_status` answers. Anything that is not a :class:`RayfleetError` is a bug;
the shell logs it and answers a generic 500 that leaks nothing.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "DeadlineExceeded",
    "InvalidInput",
    "ModelError",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "RayfleetError",
    "ServiceUnavailable",
    "StoreError",
    "Unauthorized",
    "UnsupportedMediaType",
    "VersionNotFound",
    "error_body",
    "http_status",
]


class RayfleetError(Exception):
    """Base of every error that reaches a client with its message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RayfleetError):
    """The request cannot be decoded or does not match the version's signature."""


class Unauthorized(RayfleetError):
    """An admin route was called without the configured bearer token."""


class Conflict(RayfleetError):
    """The action does not apply in the rollout's current phase."""


class NotFound(RayfleetError):
    """A named thing does not exist."""


class ModelNotFound(NotFound):
    """No model of that name is served."""


class VersionNotFound(NotFound):
    """The model exists but not that version."""


class PayloadTooLarge(RayfleetError):
    """The body is larger than the router accepts."""


class UnsupportedMediaType(RayfleetError):
    """No codec reads the request's Content-Type."""


class ModelError(RayfleetError):
    """The model's own code raised while predicting."""


class ServiceUnavailable(RayfleetError):
    """No replica could take the request now; the client should retry later."""

    retry_after_s = 1


class DeadlineExceeded(RayfleetError):
    """The request did not finish within the router's deadline."""


class ConfigError(Exception):
    """A config, spec or store layout is wrong; raised at deploy time."""


class StoreError(ConfigError):
    """A version, manifest or artifact is missing or unreadable in the store."""


# Most specific first: the first class an error is an instance of wins.
_STATUS: tuple[tuple[type[RayfleetError], int], ...] = (
    (InvalidInput, 400),
    (Unauthorized, 401),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (ModelError, 500),
    (ServiceUnavailable, 503),
    (DeadlineExceeded, 504),
)


def http_status(error: RayfleetError) -> int:
    """The HTTP status a client gets for ``error``."""
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_body(error: RayfleetError) -> dict[str, str]:
    """The JSON body for ``error``: ``{"error": message}``, as KServe v2 specifies."""
    return {"error": error.message}
