"""What may get in: a body limit checked before parsing and before the key, one id rule at every entry
point (erasure requests, ratings, recommendations, CSV imports), 405 answers that name the allowed
methods, and database saturation answered 503 + Retry-After, never 500.  In process, tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc as sql_errors
from sqlalchemy import func, select

from benchmarks.load import prepare_target, throwaway_schema
from core.db.models import ErasureRequest, Interaction
from core.ml.data import ID_MAX_LENGTH, encode_history
from core.services import erasures as erasure_service
from tests.app.conftest import Env
from tests.core.conftest import PG_URL

MIB = 2**20


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


# ---------------------------------------------------------------------------------------------- body limit


def test_an_oversized_body_is_refused_before_parsing_and_before_the_key(api_env: Env) -> None:
    huge = b'{"user_id": "' + b"x" * (2 * MIB) + b'"}'
    # no key at all: refused for its size (it was parsed first, then answered 401)
    response = api_env.client.post(
        "/v1/erasure-requests", content=huge, headers={"Content-Type": "application/json"}
    )
    _error(response, 413, "payload_too_large")


def test_an_oversized_body_without_content_length_is_cut_off(api_env: Env) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to refuse up front
        yield b'{"user_id": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    headers = {"Content-Type": "application/json", **api_env.keys.header("erase")}
    response = api_env.client.post("/v1/erasure-requests", content=chunks(), headers=headers)
    _error(response, 413, "payload_too_large")


def test_a_large_import_is_read_only_from_an_admin_key(api_env: Env) -> None:
    ratings = "user,item,rating,timestamp\n" + "nu0,i0,5,100\n" * (MIB // 12)  # ~1 MiB, over the body limit
    files = {
        "ratings": ("r.csv", ratings, "text/csv"),
        "items": ("i.csv", "item,title\ni0,Zero\n", "text/csv"),
    }
    anonymous = api_env.client.post("/v1/admin/imports", files=files)
    _error(anonymous, 413, "payload_too_large")
    wrong_scope = api_env.client.post("/v1/admin/imports", files=files, headers=api_env.keys.header("erase"))
    _error(wrong_scope, 413, "payload_too_large")
    admin = api_env.client.post("/v1/admin/imports", files=files, headers=api_env.keys.header("admin"))
    # parsed and judged on its content (the same rating repeated), not on its size
    assert admin.status_code == 422, admin.text
    assert admin.json()["error"]["details"]["line"] == 3


def test_a_body_that_cannot_be_decoded_is_a_documented_422(api_env: Env) -> None:
    admin = api_env.keys.header("admin")
    broken = {"Content-Type": "multipart/form-data; boundary=zzz", **admin}
    response = api_env.client.post("/v1/admin/imports", content=b"--zzz\r\nnot a part", headers=broken)
    _error(response, 422, "validation_error")  # was an undocumented 400
    not_utf8 = {"Content-Type": "application/json", **api_env.keys.header("erase")}
    response = api_env.client.post("/v1/erasure-requests", content=b'{"user_id": "\xff"}', headers=not_utf8)
    _error(response, 422, "validation_error")


# ---------------------------------------------------------------------------------------------- ids

BAD_IDS = ["a|b", "a:5", "a b", "a,b", "a\nb", "é", "x" * (ID_MAX_LENGTH + 1), ""]


def test_the_id_rule_holds_for_erasure_requests(api_env: Env) -> None:
    headers = api_env.keys.header("erase")
    for bad in BAD_IDS:
        for body in ({"user_id": bad}, {"user_id": "u1", "items": [bad]}):
            response = api_env.client.post("/v1/erasure-requests", json=body, headers=headers)
            _error(response, 422, "validation_error")
    with api_env.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ErasureRequest)) == 0


def test_an_id_at_the_limit_is_accepted_and_can_then_be_erased(api_env: Env) -> None:
    longest = "u" * ID_MAX_LENGTH
    rated = api_env.client.post(
        f"/v1/users/{longest}/ratings",
        json={"ratings": [{"item_id": "i1", "rating": 4}]},
        headers=api_env.keys.header("recommend"),
    )
    assert rated.status_code == 201, rated.text
    erased = api_env.client.post(
        "/v1/erasure-requests", json={"user_id": longest}, headers=api_env.keys.header("erase")
    )
    assert erased.status_code == 201, erased.text


def test_the_id_rule_holds_for_ratings_and_recommendations(api_env: Env) -> None:
    for bad in ["a|b", "a:5", "x" * (ID_MAX_LENGTH + 1)]:
        _refused_everywhere(api_env, bad)


def _refused_everywhere(api_env: Env, bad: str) -> None:
    client, headers = api_env.client, api_env.keys.header("recommend")
    rating = {"ratings": [{"item_id": "i1", "rating": 4}]}
    # ids past the erasure endpoint's limit were stored, and could then never be erased
    _error(client.post(f"/v1/users/{bad}/ratings", json=rating, headers=headers), 422, "validation_error")
    bad_item = {"ratings": [{"item_id": bad, "rating": 4}]}
    _error(client.post("/v1/users/u1/ratings", json=bad_item, headers=headers), 422, "validation_error")
    for body in ({"user_id": bad}, {"user_id": "u1", "candidates": [bad]}):
        _error(client.post("/v1/recommendations", json=body, headers=headers), 422, "validation_error")
    pair = {"pairs": [{"user_id": bad, "item_id": "i1"}]}
    _error(client.post("/v1/scores", json=pair, headers=headers), 422, "validation_error")
    with api_env.sessions() as session:
        assert session.scalar(select(func.count()).where(Interaction.user_id == bad)) == 0


def test_an_item_id_with_the_history_separator_is_refused_by_imports(api_env: Env) -> None:
    # "x|y" in a history would decode as two entries: encode_history cannot carry it
    assert encode_history([("x|y", 4.0)]).count("|") == 1
    items = "item,title\nx|y,Broken\n"
    ratings = "user,item,rating,timestamp\nnu0,x|y,5,100\n"
    files = {"ratings": ("r.csv", ratings, "text/csv"), "items": ("i.csv", items, "text/csv")}
    response = api_env.client.post("/v1/admin/imports", files=files, headers=api_env.keys.header("admin"))
    details = _error(response, 422, "invalid_input")["details"]
    assert details == {"file": "i.csv", "line": 2, "column": "item"}
    long_user = "user,item,rating,timestamp\n" + "u" * (ID_MAX_LENGTH + 1) + ",i0,5,100\n"
    files = {
        "ratings": ("r.csv", long_user, "text/csv"),
        "items": ("i.csv", "item,title\ni0,Z\n", "text/csv"),
    }
    response = api_env.client.post("/v1/admin/imports", files=files, headers=api_env.keys.header("admin"))
    assert _error(response, 422, "invalid_input")["details"] == {"file": "r.csv", "line": 2, "column": "user"}


# ---------------------------------------------------------------------------------------------- errors


def test_405_names_the_allowed_methods(api_env: Env) -> None:
    response = api_env.client.delete("/v1/erasure-requests", headers=api_env.keys.header("erase"))
    _error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (sql_errors.TimeoutError("QueuePool limit of size 5 overflow 10 reached"), "database_busy"),
        (
            sql_errors.OperationalError("SELECT secret_user_id", {}, Exception("database is locked")),
            "database_unavailable",
        ),
    ],
)
def test_database_saturation_is_a_503_with_retry_after(
    api_env: Env, monkeypatch: pytest.MonkeyPatch, error: Exception, code: str
) -> None:
    def saturated(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(erasure_service, "list_erasure_requests", saturated)
    response = api_env.client.get("/v1/erasure-requests", headers=api_env.keys.header("erase"))
    body = _error(response, 503, code)
    assert response.headers["Retry-After"].isdigit()
    assert "secret_user_id" not in body["message"] and "QueuePool" not in body["message"]


def test_text_the_database_cannot_store_is_refused_not_a_500(api_env: Env) -> None:
    admin = api_env.keys.header("admin")
    for name in ["a\x00b", "a\x1bb"]:
        response = api_env.client.post(
            "/v1/admin/api-keys", json={"name": name, "scopes": ["admin"]}, headers=admin
        )
        _error(response, 422, "validation_error")
    reason = {"reason": "x\x00y"}
    response = api_env.client.post(f"/v1/admin/adapters/{api_env.v1}/promote", json=reason, headers=admin)
    _error(response, 422, "validation_error")


@pytest.mark.postgres
def test_a_nul_character_in_a_path_is_a_422_on_postgresql(tmp_path: Path) -> None:
    # PostgreSQL refuses NUL in text (a DataError, that was a 500 with the SQL in the log's message)
    with throwaway_schema(PG_URL) as url:
        target = prepare_target(tmp_path, url, users=3)
        with TestClient(target.app()) as client:
            headers = {"X-API-Key": target.all_key}
            for path in ["/v1/admin/adapters/a%00b", "/v1/erasure-requests/a%00b"]:
                body = _error(client.get(path, headers=headers), 422, "invalid_input")
                assert "SELECT" not in body["message"]
