"""The HTTP edge's errors and the one place where every error becomes an HTTP response.

``AppError`` subclasses carry their status.  Core's own errors are mapped by ``CORE_ERROR_STATUS`` (by class,
nearest ancestor wins); validation failures become 422 with the offending fields; anything unexpected is
logged and answered with a 500 JSON body that leaks nothing.  Every body has the same shape::

    {"error": {"code": "not_found", "message": "erasure request 7 not found", "details": ...}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.ml.model import ModelError
from core.serving import NoActiveAdapter

log = logging.getLogger(__name__)


class AppError(Exception):
    """An expected refusal with an HTTP status; ``code`` is a stable machine-readable name."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class Unauthenticated(AppError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(AppError):
    status_code = 422
    code = "validation_error"


class Unavailable(AppError):
    status_code = 503
    code = "unavailable"


# Core errors by class -> (status, code).  Filled from core's hierarchy; the nearest ancestor wins.
CORE_ERROR_STATUS: dict[type[BaseException], tuple[int, str]] = {
    NoActiveAdapter: (503, "no_active_adapter"),
    ModelError: (422, "model_error"),
}


def register_core_errors(mapping: dict[type[BaseException], tuple[int, str]]) -> None:
    CORE_ERROR_STATUS.update(mapping)


class ErrorBody(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["erasure request 42 not found"])
    details: Any = Field(default=None, examples=[None])


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given statuses, all with the common error body."""
    text = {
        400: "Bad request",
        401: "Missing or unknown API key",
        403: "The API key lacks the scope",
        404: "Not found",
        409: "Refused in the current state",
        413: "Too large",
        422: "Validation error",
        503: "Not ready",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error")} for s in statuses}


def _status_of(error: BaseException) -> tuple[int, str] | None:
    for klass in type(error).__mro__:
        if klass in CORE_ERROR_STATUS:
            return CORE_ERROR_STATUS[klass]
    return None


def _json(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _clean_validation(errors: Any) -> list[dict[str, Any]]:
    cleaned = []
    for item in errors:
        entry = {"loc": list(item.get("loc", ())), "msg": item.get("msg", ""), "type": item.get("type", "")}
        cleaned.append(entry)
    return cleaned


async def render_error(request: Request, error: Exception) -> JSONResponse:
    """The single error handler: every exception that reaches the edge passes through here."""
    if isinstance(error, AppError):
        return _json(error.status_code, error.code, error.message, error.details)
    if isinstance(error, RequestValidationError):
        return _json(422, "validation_error", "the request is not valid", _clean_validation(error.errors()))
    if isinstance(error, StarletteHTTPException):  # unknown route, wrong method
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return _json(error.status_code, code, str(error.detail))
    mapped = _status_of(error)
    if mapped is not None:  # core errors carry their details (ids, file/line/column) as a dict
        return _json(mapped[0], mapped[1], str(error), getattr(error, "details", None) or None)
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return _json(500, "internal_error", "internal error (logged)")


def install_error_handler(app: FastAPI) -> None:
    """Route every error class to ``render_error`` (Starlette looks handlers up by class; ``Exception``
    itself is the last resort, answered by the server-error middleware)."""
    kinds = (AppError, RequestValidationError, StarletteHTTPException, *CORE_ERROR_STATUS, Exception)
    for kind in kinds:
        app.add_exception_handler(kind, render_error)  # type: ignore[arg-type]
