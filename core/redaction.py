"""What may leave a process about an error: its class and where it happened, never its text.

An exception's text can carry personal data: SQL parameters (user ids, ratings), a pandas ``KeyError`` of a
user id, a path built from an id.  Texts that outlive the moment (failure reasons on jobs and requests,
the append-only audit log, the queue's result backend, log files) get ``error_class`` and a fixed message
chosen by the caller; a log line that needs the stack for debugging gets ``redacted_traceback``: the frames
(file, line, function) without the exception's message, nor its chained exceptions' messages.
"""

from __future__ import annotations

import traceback


def error_class(error: BaseException) -> str:
    """The exception's class name (``OperationalError``): safe to store and to show."""
    return type(error).__name__


def redacted_traceback(error: BaseException) -> str:
    """The stack of ``error`` and of the exceptions it was raised from, each as ``Class`` plus its frames;
    no message text.  For ``log.error("...\\n%s", redacted_traceback(error))`` in place of ``exc_info``."""
    parts: list[str] = []
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        lines = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in frames]
        parts.append("\n".join([*lines, f"{error_class(current)} (message withheld)"]))
        current = current.__cause__ or current.__context__
    return "\nraised while handling:\n".join(reversed(parts))
