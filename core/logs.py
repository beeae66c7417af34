"""Log lines of every process: text or one JSON object per line, each naming the HTTP request or the
job it was written for.

The edges set the context: the API's request middleware (``app.middleware``) binds a request id for the
life of a request, the worker binds a job id while it runs a job (``job_context``).  A filter on the
handler copies both onto every record, so lines written by any library during that time carry them.
Nothing here adds data to a line: what a line says is the caller's business (``core.redaction``: error
texts never reach a log, paths with user ids never reach the access log).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any, Literal

from pythonjsonlogger.json import JsonFormatter

from core.redaction import redacted_traceback

LogFormat = Literal["text", "json"]

request_id: ContextVar[str | None] = ContextVar("e2u_request_id", default=None)
job_id: ContextVar[int | None] = ContextVar("e2u_job_id", default=None)

JSON_FIELDS = "%(levelname)s %(name)s %(message)s %(request_id)s %(job_id)s"


class ContextFilter(logging.Filter):
    """Copies the current request id and job id onto each record (None outside a request or a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        return True


def _redacted(exc_info: Any) -> str:
    """A logged exception (``log.exception``, Celery's task failures) as its frames and class, never its
    text: an exception's message can carry user ids or SQL parameters (``core.redaction``)."""
    error = exc_info[1] if isinstance(exc_info, tuple) else None
    return redacted_traceback(error) if isinstance(error, BaseException) else ""


class RedactedJsonFormatter(JsonFormatter):
    def formatException(self, ei: Any) -> str:
        return _redacted(ei)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request=... job=...]: message``."""

    def formatException(self, ei: Any) -> str:
        return _redacted(ei)

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(context)s]: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        request, job = getattr(record, "request_id", None), getattr(record, "job_id", None)
        parts = ([f"request={request}"] if request else []) + ([f"job={job}"] if job is not None else [])
        record.context = " ".join(parts) or "-"
        return super().formatMessage(record)


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        # "timestamp": ISO 8601 in UTC
        return RedactedJsonFormatter(
            JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger"}, timestamp=True
        )
    return TextFormatter()


def make_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in ``log_format``, each record with its context."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(log_format: LogFormat = "text", level: str | int = logging.INFO) -> None:
    """One handler on the root logger, writing to stderr in ``log_format``; every other logger (uvicorn's,
    Celery's) propagates to it.  Replaces handlers set before (idempotent)."""
    handler = make_handler(log_format)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


@contextmanager
def job_context(job: int) -> Iterator[None]:
    """Every line logged in this block (this thread, and threads started with its context) names ``job``."""
    token = job_id.set(job)
    try:
        yield
    finally:
        job_id.reset(token)
