"""Personal data outside the tables, at the HTTP edge: access logs name route templates, not paths that
carry user ids; filing an erasure empties the prompt cache of the process at once (not at the next
swap).  The whole flow with a worker: tests/app/test_end_to_end.py::test_erasure_leaves_no_trace."""

from __future__ import annotations

import logging

import pytest

from tests.app.conftest import Env

SUBJECT = "subject-7f3a9c"


def test_access_log_names_route_templates_not_user_ids(
    api_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    client, keys = api_env.client, api_env.keys
    with caplog.at_level(logging.DEBUG):
        added = client.post(
            f"/v1/users/{SUBJECT}/ratings",
            json={"ratings": [{"item_id": "i1", "rating": 4}]},
            headers=keys.header("recommend"),
        )
        refused = client.post(
            f"/v1/users/{SUBJECT}/ratings",
            json={"ratings": [{"item_id": "i1", "rating": 11}]},
            headers=keys.header("recommend"),
        )
        filed = client.post("/v1/erasure-requests", json={"user_id": SUBJECT}, headers=keys.header("erase"))
    assert (added.status_code, refused.status_code, filed.status_code) == (201, 422, 201)
    access = [r.getMessage() for r in caplog.records if r.name == "e2u.access"]
    assert access == [
        "POST /v1/users/{user_id}/ratings 201" + access[0].split("201", 1)[1],
        "POST /v1/users/{user_id}/ratings 422" + access[1].split("422", 1)[1],
        "POST /v1/erasure-requests 201" + access[2].split("201", 1)[1],
    ]
    served = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]  # not the client's
    assert not [line for line in served if SUBJECT in line]


def test_filing_an_erasure_empties_the_prompt_cache(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    server = client.app.state.runtime.model_server  # type: ignore[attr-defined]
    answer = client.post(
        "/v1/recommendations", json={"user_id": "u1", "k": 2}, headers=keys.header("recommend")
    )
    assert answer.status_code == 200
    assert server.scorer._encode.cache_info().currsize > 0
    filed = client.post("/v1/erasure-requests", json={"user_id": "u1"}, headers=keys.header("erase"))
    assert filed.status_code == 201
    assert server.scorer._encode.cache_info().currsize == 0 and server.active_version == api_env.v1
