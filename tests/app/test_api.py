"""The HTTP edge in process (TestClient): auth scopes, validation (4xx and nothing changed), idempotency,
erasure scope exclusion, admin refusals, probes.  Tiny untrained model: behaviour only."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import func, select

from core.db.models import ApiKey, ErasureRequest, Interaction, UnlearningJob
from tests.app.conftest import Env


def _counts(env: Env) -> dict[str, int]:
    with env.sessions() as session:
        return {
            "interactions": session.scalar(select(func.count(Interaction.id))) or 0,
            "requests": session.scalar(select(func.count(ErasureRequest.id))) or 0,
            "jobs": session.scalar(select(func.count(UnlearningJob.id))) or 0,
            "keys": session.scalar(select(func.count(ApiKey.id))) or 0,
        }


def _error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["message"]
    if code is not None:
        assert body["code"] == code, body
    return dict(body)


def test_probes_and_openapi(api_env: Env) -> None:
    client = api_env.client
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["adapter_version"] == api_env.v1
    client.post(
        "/v1/recommendations", json={"user_id": "u1", "k": 2}, headers=api_env.keys.header("recommend")
    )
    metrics = client.get("/metrics").text
    assert f'e2u_active_adapter_info{{pid="{os.getpid()}",version="{api_env.v1}"}} 1.0' in metrics
    assert 'e2u_http_requests_total{method="POST",route="/v1/recommendations",status="200"}' in metrics
    spec = client.get("/openapi.json").json()
    assert "/v1/erasure-requests" in spec["paths"]
    assert spec["components"]["schemas"]["ErasureRequestCreate"]["examples"]
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])


def test_auth_scopes(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    body = {"user_id": "u1", "k": 2}
    _error(client.post("/v1/recommendations", json=body), 401, "unauthenticated")
    _error(client.post("/v1/recommendations", json=body, headers={"X-API-Key": "e2u_nope"}), 401)
    _error(client.post("/v1/recommendations", json=body, headers=keys.header("erase")), 403, "forbidden")
    assert (
        client.post(
            "/v1/recommendations", json=body, headers={"Authorization": f"Bearer {keys.recommend}"}
        ).status_code
        == 200
    )
    _error(client.get("/v1/admin/jobs", headers=keys.header("recommend")), 403)
    _error(client.post("/v1/erasure-requests", json={"user_id": "u1"}, headers=keys.header("admin")), 403)
    assert client.get("/v1/admin/jobs", headers=keys.header("all")).status_code == 200
    assert _counts(api_env)["requests"] == 0


def test_recommendations_and_scores_name_the_adapter(api_env: Env) -> None:
    client, headers = api_env.client, api_env.keys.header("recommend")
    recs = client.post("/v1/recommendations", json={"user_id": "u1", "k": 3}, headers=headers).json()
    assert recs["adapter_version"] == api_env.v1
    assert len(recs["items"]) == 3 and all(0 <= i["score"] <= 1 for i in recs["items"])
    assert [i["score"] for i in recs["items"]] == sorted((i["score"] for i in recs["items"]), reverse=True)
    given = client.post(
        "/v1/recommendations", json={"user_id": "u1", "k": 5, "candidates": ["i3", "i4"]}, headers=headers
    ).json()
    assert sorted(i["item_id"] for i in given["items"]) == ["i3", "i4"]
    assert given["items"][0]["title"].startswith("Movie ")
    scores = client.post(
        "/v1/scores",
        json={"pairs": [{"user_id": "u1", "item_id": "i3"}, {"user_id": "u2", "item_id": "i4"}]},
        headers=headers,
    ).json()
    assert scores["adapter_version"] == api_env.v1 and len(scores["scores"]) == 2


def test_validation_errors_change_nothing(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    before = _counts(api_env)
    bad = _error(
        client.post("/v1/recommendations", json={"user_id": "u1", "k": 0}, headers=keys.header("recommend")),
        422,
    )
    assert bad["details"][0]["loc"] == ["body", "k"]
    _error(
        client.post("/v1/recommendations", json={"user_id": "u1", "kk": 1}, headers=keys.header("recommend")),
        422,
    )
    _error(
        client.post(
            "/v1/recommendations",
            json={"user_id": "u1", "candidates": ["zz"]},
            headers=keys.header("recommend"),
        ),
        422,
        "validation_error",
    )
    _error(
        client.post("/v1/recommendations", json={"user_id": "nobody"}, headers=keys.header("recommend")), 404
    )
    _error(client.post("/v1/scores", json={"pairs": []}, headers=keys.header("recommend")), 422)
    ratings = {"ratings": [{"item_id": "i1", "rating": 4}, {"item_id": "zz", "rating": 4}]}
    _error(
        client.post("/v1/users/u1/ratings", json=ratings, headers=keys.header("recommend")),
        422,
        "invalid_input",
    )
    _error(
        client.post(
            "/v1/users/u1/ratings",
            json={"ratings": [{"item_id": "i1", "rating": 11}]},
            headers=keys.header("recommend"),
        ),
        422,
    )
    _error(client.post("/v1/erasure-requests", json={"user_id": ""}, headers=keys.header("erase")), 422)
    _error(client.post("/v1/erasure-requests", json={"user_id": "nobody"}, headers=keys.header("erase")), 404)
    _error(
        client.post(
            "/v1/erasure-requests", json={"user_id": "u1", "items": ["zz"]}, headers=keys.header("erase")
        ),
        422,
    )
    _error(
        client.post(
            "/v1/erasure-requests", json={"user_id": "u1", "items": []}, headers=keys.header("erase")
        ),
        422,
    )
    _error(
        client.post(
            "/v1/admin/api-keys", json={"name": "x", "scopes": ["root"]}, headers=keys.header("admin")
        ),
        422,
    )
    _error(client.get("/v1/erasure-requests/nope", headers=keys.header("erase")), 404, "not_found")
    _error(client.get("/v1/nowhere"), 404)
    assert _counts(api_env) == before


def test_add_ratings(api_env: Env) -> None:
    client, headers = api_env.client, api_env.keys.header("recommend")
    with api_env.sessions() as session:
        rated = set(session.scalars(select(Interaction.item_id).where(Interaction.user_id == "u1")))
    new = sorted({f"i{i}" for i in range(20)} - rated)[:2]
    body = {"ratings": [{"item_id": new[0], "rating": 5}, {"item_id": new[1], "rating": 1, "timestamp": 5}]}
    created = client.post("/v1/users/u1/ratings", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert {r["item_id"]: r["label"] for r in created.json()["added"]} == {new[0]: 1, new[1]: 0}
    before = _counts(api_env)
    _error(client.post("/v1/users/u1/ratings", json=body, headers=headers), 409)  # rated already
    assert _counts(api_env) == before


def test_erasure_idempotency_exclusion_and_cancel(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    headers = keys.header("erase") | {"Idempotency-Key": "req-1"}
    first = client.post("/v1/erasure-requests", json={"user_id": "u2"}, headers=headers)
    assert first.status_code == 201, first.text
    request = first.json()
    assert request["status"] == "received" and request["scope"] == "user" and request["deadline_at"]
    assert first.headers["Location"] == f"/v1/erasure-requests/{request['id']}"
    again = client.post("/v1/erasure-requests", json={"user_id": "u2"}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == request["id"]
    _error(
        client.post("/v1/erasure-requests", json={"user_id": "u3"}, headers=headers),
        409,
        "idempotency_key_reused",
    )
    assert _counts(api_env)["requests"] == 1
    # from acceptance on, the user's data is in no prompt
    _error(client.post("/v1/recommendations", json={"user_id": "u2"}, headers=keys.header("recommend")), 404)
    _error(client.get(f"/v1/erasure-requests/{request['id']}/certificate", headers=keys.header("erase")), 404)
    listed = client.get("/v1/erasure-requests?status=received", headers=keys.header("erase")).json()[
        "requests"
    ]
    assert [r["id"] for r in listed] == [request["id"]]
    cancelled = client.post(f"/v1/erasure-requests/{request['id']}/cancel", headers=keys.header("erase"))
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancelled_at"]
    assert (
        client.post(
            "/v1/recommendations", json={"user_id": "u2"}, headers=keys.header("recommend")
        ).status_code
        == 200
    )
    partial = client.post(
        "/v1/erasure-requests", json={"user_id": "u3", "items": ["i0"]}, headers=keys.header("erase")
    )
    if partial.status_code == 422:  # u3 may not have rated i0 in the synthetic data: pick one it did
        with api_env.sessions() as session:
            item = session.scalar(select(Interaction.item_id).where(Interaction.user_id == "u3").limit(1))
        partial = client.post(
            "/v1/erasure-requests", json={"user_id": "u3", "items": [item]}, headers=keys.header("erase")
        )
    assert (
        partial.status_code == 201
        and partial.json()["scope"] == "items"
        and len(partial.json()["items"]) == 1
    )


def test_trigger_enqueues_after_commit_and_cancel_is_refused_once_in_a_job(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    request = client.post("/v1/erasure-requests", json={"user_id": "u4"}, headers=keys.header("erase")).json()
    assert client.post("/v1/admin/jobs/trigger", headers=keys.header("recommend")).status_code == 403
    assert api_env.sent == []
    triggered = client.post("/v1/admin/jobs/trigger", headers=keys.header("admin"))
    assert triggered.status_code == 202
    job_ids = triggered.json()["job_ids"]
    assert len(job_ids) == 1 and api_env.sent == job_ids
    with api_env.sessions() as session:  # committed before it was sent
        assert session.get(UnlearningJob, job_ids[0]) is not None
    job = client.get(f"/v1/admin/jobs/{job_ids[0]}", headers=keys.header("admin")).json()
    assert job["request_ids"] == [request["id"]] and job["status"] == "pending" and "phase" in job
    assert [
        j["id"] for j in client.get("/v1/admin/jobs", headers=keys.header("admin")).json()["jobs"]
    ] == job_ids
    _error(
        client.post(f"/v1/erasure-requests/{request['id']}/cancel", headers=keys.header("erase")),
        409,
        "not_cancellable",
    )
    assert client.post("/v1/admin/jobs/trigger", headers=keys.header("admin")).json() == {"job_ids": []}
    _error(client.get("/v1/admin/jobs/999", headers=keys.header("admin")), 404)


def test_adapters_and_refused_moves(api_env: Env) -> None:
    client, headers = api_env.client, api_env.keys.header("admin")
    listed = client.get("/v1/admin/adapters", headers=headers).json()
    assert listed["active_version_id"] == api_env.v1
    assert listed["versions"][0]["lineage"] == [api_env.v1] and listed["versions"][0]["active"]
    _error(client.post(f"/v1/admin/adapters/{api_env.v1}/promote", headers=headers), 409, "stale_promotion")
    _error(client.post("/v1/admin/adapters/nope/rollback", headers=headers, json={"reason": "x"}), 404)
    events = client.get("/v1/admin/activations", headers=headers).json()["events"]
    assert events[0]["version_id"] == api_env.v1 and events[0]["kind"] == "bootstrap"


def test_admin_creates_api_keys(api_env: Env) -> None:
    client = api_env.client
    created = client.post(
        "/v1/admin/api-keys",
        json={"name": "svc", "scopes": ["recommend"]},
        headers=api_env.keys.header("admin"),
    )
    assert created.status_code == 201
    key = created.json()["key"]
    with api_env.sessions() as session:
        assert key not in {k.key_hash for k in session.scalars(select(ApiKey))}  # stored hashed
    ok = client.post("/v1/recommendations", json={"user_id": "u1", "k": 1}, headers={"X-API-Key": key})
    assert ok.status_code == 200
