"""The one place where an error becomes an HTTP response.

``HTTP_STATUS`` maps an error class to its status (the nearest ancestor wins); the response's ``code`` is
the error's own ``code`` (core's ``ServiceError`` classes and the edge's two below carry one).  Validation
failures become 422 with the offending fields; anything unexpected is logged and answered with a 500 JSON
body that leaks nothing.  Every body has the same shape::

    {"error": {"code": "not_found", "message": "erasure request 7 not found", "details": ...}}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import exc as sql_errors
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.metrics import ApiMetrics
from core.ml.model import ModelError
from core.redaction import redacted_traceback
from core.services import errors as service_errors
from core.serving import ModelBusy, NoActiveAdapter

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2  # the Retry-After of every 503: a dependency away or the service at capacity


class PayloadTooLarge(service_errors.ServiceError):
    """An upload over the configured size limit (a refusal only the edge can make)."""

    code = "payload_too_large"


class InvalidRequest(service_errors.ServiceError):
    """A request that names what does not exist, refused by the route with the code of schema failures."""

    code = "validation_error"


HTTP_STATUS: dict[type[Exception], int] = {
    service_errors.Unauthorized: 401,
    service_errors.Forbidden: 403,
    service_errors.NotFound: 404,
    service_errors.Conflict: 409,  # and its subclasses
    service_errors.LeaseLost: 409,
    PayloadTooLarge: 413,
    service_errors.InvalidInput: 422,
    InvalidRequest: 422,
    ModelError: 422,
    NoActiveAdapter: 503,
    ModelBusy: 503,  # the model's queue is full (E2U_MODEL_QUEUE)
    # the database pool exhausted past its timeout, or the database unreachable or locked: transient
    sql_errors.TimeoutError: 503,
    sql_errors.OperationalError: 503,
    # a value the database refuses (PostgreSQL: a NUL character, a number out of range): the caller's
    sql_errors.DataError: 422,
}

# their own text carries SQL and its parameters: answered with a fixed code and message
_DATABASE_ERRORS = {
    sql_errors.TimeoutError: ("database_busy", "no database connection free in time; retry later"),
    sql_errors.OperationalError: ("database_unavailable", "the database is unavailable; retry later"),
    sql_errors.DataError: ("invalid_input", "a value the database cannot store (a NUL character?)"),
}


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
        429: "Too many failed authentications from this address (see Retry-After)",
        503: "Not ready, or at capacity (see Retry-After)",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error")} for s in statuses}


def _status_of(error: BaseException) -> int | None:
    for klass in type(error).__mro__:
        if klass in HTTP_STATUS:
            return HTTP_STATUS[klass]
    return None


def _code_of(error: BaseException) -> str:
    """The error's ``code``; for a core error without one (``ModelError``), its class name in snake case."""
    code = getattr(error, "code", None)
    if isinstance(code, str):
        return code
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An error in the common shape; a 401 names the scheme, a 503 says when to retry."""
    body = {"error": {"code": code, "message": message, "details": details}}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "ApiKey"
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return JSONResponse(body, status_code=status, headers=headers or None)


def _clean_validation(errors: Any) -> list[dict[str, Any]]:
    cleaned = []
    for item in errors:
        entry = {"loc": list(item.get("loc", ())), "msg": item.get("msg", ""), "type": item.get("type", "")}
        cleaned.append(entry)
    return cleaned


def _allowed_methods(request: Request, error: StarletteHTTPException) -> str:
    """Every method of the OpenAPI paths that match the request's path (the router's own ``Allow``
    names only the first matching route's methods), plus those."""
    methods = {m.strip() for m in (error.headers or {}).get("Allow", "").split(",") if m.strip()}
    for template, operations in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    return ", ".join(sorted(methods))


async def render_error(request: Request, error: Exception) -> JSONResponse:
    """The single error handler: every exception that reaches the edge passes through here."""
    if isinstance(error, RequestValidationError):
        return error_response(
            422, "validation_error", "the request is not valid", _clean_validation(error.errors())
        )
    if isinstance(error, StarletteHTTPException) and error.status_code == 400:
        # the framework's answer to a body it cannot decode (not UTF-8, broken multipart): a validation
        # failure like malformed JSON, with the status every operation documents
        return error_response(422, "validation_error", str(error.detail))
    if isinstance(error, StarletteHTTPException):  # unknown route, wrong method, body too large
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            429: "too_many_requests",
        }
        code = codes.get(error.status_code, "http_error")
        headers = error.headers
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request, error)}
        return error_response(error.status_code, code, str(error.detail), headers=headers)
    status = _status_of(error)
    for klass, (code, message) in _DATABASE_ERRORS.items():
        if isinstance(error, klass):
            log.warning("%s on %s %s", code, request.method, ApiMetrics.route_label(request))
            return error_response(HTTP_STATUS[klass], code, message)
    if status is not None:  # expected refusals carry their details (ids, file/line/column) as a dict
        return error_response(status, _code_of(error), str(error), getattr(error, "details", None) or None)
    log.error(
        "unexpected error on %s %s\n%s",
        request.method,
        ApiMetrics.route_label(request),
        redacted_traceback(error),
    )
    return error_response(500, "internal_error", "internal error (logged)")


def install_error_handler(app: FastAPI) -> None:
    """Route every error class to ``render_error`` (Starlette looks handlers up by class; ``Exception``
    itself is the last resort, answered by the server-error middleware)."""
    for kind in (RequestValidationError, StarletteHTTPException, *HTTP_STATUS, Exception):
        app.add_exception_handler(kind, render_error)  # type: ignore[arg-type]
