"""What an operator sees of the HTTP edge: /docs with nothing from outside, a request id on every answer
and every log line written for it (JSON lines), and unhandled errors counted like any other answer."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

from core import logs
from core.services import api_keys as api_key_service
from tests.app.conftest import Env


class _Assets(HTMLParser):
    """Every URL a page loads: src and href attributes, and the ``url:`` of Swagger UI's init script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", data)


def test_docs_page_and_every_asset_come_from_the_service(api_env: Env) -> None:
    client = api_env.client
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "://" not in page.text  # no absolute URL at all: no CDN, no validator badge
    parser = _Assets()
    parser.feed(page.text)
    assert len(parser.urls) >= 4  # the script, the styles, the icon, the OpenAPI document
    for url in parser.urls:
        assert url.startswith("/"), url
        answer = client.get(url)
        assert answer.status_code == 200 and answer.content, url
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/redoc").status_code == 404  # ReDoc loads from a CDN: not served


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger's lines, as the JSON format writes them, while the test runs."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_request_id_is_echoed_and_on_every_line_of_the_request(api_env: Env, json_lines: io.StringIO) -> None:
    client, keys = api_env.client, api_env.keys
    kept = client.get("/v1/admin/api-keys", headers={**keys.header("admin"), "X-Request-ID": "abc-123"})
    made = client.get("/v1/admin/api-keys", headers={**keys.header("admin"), "X-Request-ID": "bad id\x01"})
    assert kept.headers["X-Request-ID"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    records = [r for r in _records(json_lines) if r["logger"] == "e2u.access"]
    assert [r["request_id"] for r in records] == ["abc-123", made.headers["X-Request-ID"]]
    assert all(set(r) >= {"timestamp", "level", "logger", "message", "job_id"} for r in records)


def test_an_unhandled_error_is_a_counted_500_logged_with_its_request_id(
    api_env: Env, json_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, keys = api_env.client, api_env.keys

    def broken(session: object) -> list[object]:
        raise RuntimeError("secret detail of user u3")

    monkeypatch.setattr(api_key_service, "list_api_keys", broken)
    answer = client.get("/v1/admin/api-keys", headers={**keys.header("admin"), "X-Request-ID": "r-500"})
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    assert answer.headers["X-Request-ID"] == "r-500"
    metrics = client.get("/metrics").text
    assert 'e2u_http_requests_total{method="GET",route="/v1/admin/api-keys",status="500"} 1.0' in metrics
    lines = [r for r in _records(json_lines) if r["request_id"] == "r-500"]
    assert {r["logger"] for r in lines} >= {"app.errors", "e2u.access"}
    assert "secret detail" not in json_lines.getvalue()
