"""The service layer's error hierarchy.  The HTTP edge maps each class to one status code in one
place (``app.errors.HTTP_STATUS``): NotFound -> 404, Conflict (and subclasses) -> 409, InvalidInput -> 422,
Unauthorized -> 401, Forbidden -> 403; the response's ``code`` is the class's ``code``."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

S = TypeVar("S", bound=StrEnum)


class ServiceError(Exception):
    """Base of every expected refusal; ``code`` is a stable machine-readable word."""

    code = "service_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(ServiceError):
    code = "not_found"


class InvalidInput(ServiceError):
    code = "invalid_input"


class Conflict(ServiceError):
    code = "conflict"


class IdempotencyKeyReused(Conflict):
    """The idempotency key was used before for a different request."""

    code = "idempotency_key_reused"


class NotCancellable(Conflict):
    code = "not_cancellable"


class NotRequeueable(Conflict):
    """Only a request that could not be unlearned (``not_unlearned``) can be re-queued."""

    code = "not_requeueable"


class StalePromotion(Conflict):
    """The active alias moved since the caller read it (compare-and-swap failed)."""

    code = "stale_promotion"


class PredatesErasure(Conflict):
    """The version still carries data of a completed erasure; it may never serve again."""

    code = "predates_erasure"


class VersionUnavailable(Conflict):
    """The version's weights are destroyed or it was rejected."""

    code = "version_unavailable"


class ImportRefused(Conflict):
    """An import's rows that the database's state refuses (erased data, ratings already stored)."""

    code = "import_refused"


class Unauthorized(ServiceError):
    """No API key, or one that is unknown or revoked (HTTP 401: the caller is not authenticated)."""

    code = "unauthenticated"


class ApiKeyExpired(Unauthorized):
    """A key past its expiry (HTTP 401): an admin makes a new one."""

    code = "api_key_expired"


class Forbidden(ServiceError):
    code = "forbidden"


class LeaseLost(ServiceError):
    """Another worker took over the job (our lease expired)."""

    code = "lease_lost"


def parse_status(vocabulary: type[S], value: str | None) -> S | None:
    """``value`` as a member of ``vocabulary`` (None stays None); InvalidInput names the allowed values."""
    if value is None:
        return None
    try:
        return vocabulary(value)
    except ValueError:
        raise InvalidInput(f"status must be one of {[s.value for s in vocabulary]}") from None
