"""Model configurations shared by the bodies of every domain (each domain's own are in its ``schemas``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict, JsonValue

from core.ml.data import ID_MAX_LENGTH, ID_PATTERN

# the largest value of an Integer column (PostgreSQL int4): row ids and offsets above it are refused (422)
# at the edge, not handed to a database that cannot bind them (SQLite stops at 2**63 - 1)
MAX_ROW_NUMBER = 2**31 - 1

# free text stored as given (a key's name, a reason): no control character but tab and line breaks
# (PostgreSQL refuses NUL in text; the others would forge lines in logs)
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

# a user or item id, wherever one enters (the rule: core.ml.data.ID_PATTERN)
EntityId = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, examples=["196"])]


def request_body(*examples: JsonDict) -> ConfigDict:
    """A request body: unknown fields are refused (422); ``examples`` show in the OpenAPI docs."""
    shown: list[JsonValue] = [*examples]
    return ConfigDict(extra="forbid", json_schema_extra={"examples": shown})


def response_body(*examples: JsonDict) -> ConfigDict:
    """A response body read from a row's attributes; ``examples`` show in the OpenAPI docs."""
    shown: list[JsonValue] = [*examples]
    return ConfigDict(from_attributes=True, json_schema_extra={"examples": shown})
