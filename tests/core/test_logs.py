"""Log lines: one JSON object per line (or text) naming the request and the job they were written for,
and never an exception's text."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from core import logs


def _emit(log_format: logs.LogFormat, action: object) -> str:
    stream = io.StringIO()
    logger = logging.getLogger("tests.logs")
    handler = logs.make_handler(log_format, stream)
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    try:
        action(logger)  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_json_lines_name_the_request_and_the_job() -> None:
    def action(logger: logging.Logger) -> None:
        logger.info("outside")
        token = logs.request_id.set("r-1")
        logger.info("in request")
        logs.request_id.reset(token)
        with logs.job_context(7):
            logger.warning("in job %s", 7)

    records = [json.loads(line) for line in _emit("json", action).splitlines()]
    assert [(r["message"], r["request_id"], r["job_id"]) for r in records] == [
        ("outside", None, None),
        ("in request", "r-1", None),
        ("in job 7", None, 7),
    ]
    assert {"timestamp", "level", "logger"} <= set(records[0]) and records[2]["level"] == "WARNING"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_logged_exception_keeps_its_frames_not_its_text(log_format: logs.LogFormat) -> None:
    def action(logger: logging.Logger) -> None:
        try:
            {}["u9-secret"]
        except KeyError:
            logger.exception("lookup failed")

    out = _emit(log_format, action)
    assert "KeyError (message withheld)" in out and "u9-secret" not in out and "lookup failed" in out


def test_threads_started_in_a_job_context_name_the_job() -> None:
    def action(logger: logging.Logger) -> None:
        import contextvars

        with logs.job_context(3):
            context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(logger.info, "from a thread"))
        thread.start()
        thread.join()

    out = _emit("text", action)
    assert "[job=3]: from a thread" in out
