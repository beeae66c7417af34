"""Model configurations shared by the bodies of every domain (each domain's own are in its ``schemas``)."""

from __future__ import annotations

from pydantic import ConfigDict
from pydantic.config import JsonDict, JsonValue


def request_body(*examples: JsonDict) -> ConfigDict:
    """A request body: unknown fields are refused (422); ``examples`` show in the OpenAPI docs."""
    shown: list[JsonValue] = [*examples]
    return ConfigDict(extra="forbid", json_schema_extra={"examples": shown})


def response_body(*examples: JsonDict) -> ConfigDict:
    """A response body read from a row's attributes; ``examples`` show in the OpenAPI docs."""
    shown: list[JsonValue] = [*examples]
    return ConfigDict(from_attributes=True, json_schema_extra={"examples": shown})
