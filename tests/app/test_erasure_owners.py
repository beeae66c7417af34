"""Erasure requests over HTTP: each belongs to the key that filed it; listing all is admin scope; one
Idempotency-Key sent 15 times at once answers one request; the backlog and the deadline risk are exposed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import update

from core.db.models import ErasureRequest, utcnow
from core.services.api_keys import create_api_key
from tests.app.conftest import Env
from tests.app.test_api import _error


def _second_erase_key(env: Env) -> dict[str, str]:
    with env.sessions() as session:
        key = create_api_key(session, "another-team", ["erase"])
        session.commit()
    return {"X-API-Key": key}


def test_a_key_reaches_only_its_own_requests(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    mine = client.post("/v1/erasure-requests", json={"user_id": "u2"}, headers=keys.header("erase")).json()
    assert mine["user_id"] == "u2"
    other = _second_erase_key(api_env)
    for method, path in (
        ("GET", f"/v1/erasure-requests/{mine['id']}"),
        ("POST", f"/v1/erasure-requests/{mine['id']}/cancel"),
        ("GET", f"/v1/erasure-requests/{mine['id']}/certificate"),
    ):  # 404, as for an id that does not exist (403 would confirm that it does)
        body = _error(client.request(method, path, headers=other), 404, "not_found")
        assert body["message"] == f"no erasure request '{mine['id']}'"
    assert client.get("/v1/erasure-requests", headers=other).json()["requests"] == []
    listed = client.get("/v1/erasure-requests", headers=keys.header("erase")).json()["requests"]
    assert [r["id"] for r in listed] == [mine["id"]]
    # the same Idempotency-Key under another key is another caller's own: a new request, no conflict
    shared = {"Idempotency-Key": "k-1"}
    first = client.post("/v1/erasure-requests", json={"user_id": "u3"}, headers=keys.header("erase") | shared)
    second = client.post("/v1/erasure-requests", json={"user_id": "u4"}, headers=other | shared)
    assert (first.status_code, second.status_code) == (201, 201) and first.json()["id"] != second.json()["id"]
    conflict = _error(
        client.post("/v1/erasure-requests", json={"user_id": "u5"}, headers=other | shared), 409
    )
    assert conflict["details"] == {"request_id": second.json()["id"]}  # its own, never the other key's

    # listing every owner's requests takes the admin scope, and shows no other owner's user ids
    _error(client.get("/v1/admin/erasure-requests", headers=keys.header("erase")), 403, "forbidden")
    everyone = client.get("/v1/admin/erasure-requests", headers=keys.header("admin")).json()["requests"]
    assert len(everyone) == 3 and {r["user_id"] for r in everyone} == {None}
    assert all(r["user_hash"] for r in everyone)
    # a key with the admin scope reaches any request through the erase routes too
    seen = client.get(f"/v1/erasure-requests/{mine['id']}", headers=keys.header("all"))
    assert seen.status_code == 200 and seen.json()["user_id"] is None
    assert client.post(f"/v1/erasure-requests/{mine['id']}/cancel", headers=other).status_code == 404
    _error(
        client.post(f"/v1/admin/erasure-requests/{mine['id']}/requeue", headers=keys.header("admin")),
        409,
        "not_requeueable",
    )


def test_fifteen_concurrent_requests_with_one_key_answer_one_request(api_env: Env) -> None:
    headers = api_env.keys.header("erase") | {"Idempotency-Key": "burst-1"}

    def file(_: int) -> tuple[int, str]:
        response = api_env.client.post("/v1/erasure-requests", json={"user_id": "u6"}, headers=headers)
        return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(15) as pool:
        answers = list(pool.map(file, range(15)))
    assert sorted(status for status, _ in answers) == [200] * 14 + [201], answers
    assert len({request_id for _, request_id in answers}) == 1


def test_deadline_risk_and_backlog_are_exposed(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    fresh = client.post("/v1/erasure-requests", json={"user_id": "u2"}, headers=keys.header("erase")).json()
    old = client.post("/v1/erasure-requests", json={"user_id": "u3"}, headers=keys.header("erase")).json()
    assert not fresh["deadline_at_risk"] and not old["deadline_at_risk"]
    with api_env.sessions() as session:  # filed 20 of its 30 days ago: past the default half
        session.execute(
            update(ErasureRequest)
            .where(ErasureRequest.id == old["id"])
            .values(created_at=utcnow() - timedelta(days=20), deadline_at=utcnow() + timedelta(days=10))
        )
        session.commit()
    read = client.get(f"/v1/erasure-requests/{old['id']}", headers=keys.header("erase")).json()
    assert read["deadline_at_risk"] is True
    metrics = client.get("/metrics").text
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("e2u_erasure")
    }
    assert figures["e2u_erasure_requests_open"] == 2
    assert figures["e2u_erasure_requests_deadline_at_risk"] == 1
    assert figures["e2u_erasure_requests_overdue"] == 0
    assert figures["e2u_erasure_requests_not_unlearned"] == 0
    assert 20 * 86400 - 60 < figures["e2u_erasure_oldest_open_age_seconds"] < 20 * 86400 + 60
    assert abs(figures["e2u_erasure_oldest_open_deadline_fraction"] - 2 / 3) < 0.01
