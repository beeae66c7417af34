"""Operators' tools at the HTTP edge and the CLI: API keys that expire, the audit log's export (JSON
lines, by time range and kind), webhook delivery records, and the jobs' figures in /metrics."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from core.db.models import utcnow
from core.db.repositories import jobs as job_repo
from core.services import batching, erasures
from core.services.api_keys import create_api_key
from tests.app.conftest import Env


def _cli_env(api_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2U_HOME", str(api_env.home))
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")
    monkeypatch.delenv("E2U_DATABASE_URL", raising=False)


def test_keys_expire_with_a_clear_error(api_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, keys = api_env.client, api_env.keys
    with api_env.sessions() as session:
        expired = create_api_key(
            session, "temp", ["erase"], now=utcnow() - timedelta(hours=2), expires_in=timedelta(hours=1)
        )
        session.commit()
    refused = client.get("/v1/erasure-requests", headers={"X-API-Key": expired})
    assert refused.status_code == 401
    error = refused.json()["error"]
    assert error["code"] == "api_key_expired" and "expired at" in error["message"]

    made = client.post(
        "/v1/admin/api-keys",
        json={"name": "ci", "scopes": ["erase"], "expires_in": "90d"},
        headers=keys.header("admin"),
    )
    assert made.status_code == 201, made.text
    assert abs(utcnow() + timedelta(days=90) - _time(made.json()["expires_at"])) < timedelta(minutes=1)
    assert client.get("/v1/erasure-requests", headers={"X-API-Key": made.json()["key"]}).status_code == 200
    bad = client.post(
        "/v1/admin/api-keys",
        json={"name": "ci", "scopes": ["erase"], "expires_in": "90x"},
        headers=keys.header("admin"),
    )
    assert bad.status_code == 422
    listed = {k["name"]: k for k in client.get("/v1/admin/api-keys", headers=keys.header("admin")).json()}
    assert listed["ci"]["expires_at"] == made.json()["expires_at"] and listed["ops"]["expires_at"] is None

    _cli_env(api_env, monkeypatch)
    created = CliRunner().invoke(cli, ["apikey", "create", "--name", "cron", "--expires-in", "12h"])
    assert created.exit_code == 0, created.output
    refused_cli = CliRunner().invoke(cli, ["apikey", "create", "--name", "cron", "--expires-in", "soon"])
    assert refused_cli.exit_code == 2 and "30m, 12h, 90d" in refused_cli.output
    table = CliRunner().invoke(cli, ["apikey", "list"]).output
    [row] = [line for line in table.splitlines() if " cron " in line]
    assert (utcnow() + timedelta(hours=12)).isoformat(timespec="minutes")[:13] in row
    assert "expires" in table.splitlines()[0]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_audit_log_export_streams_json_lines_by_time_and_kind(
    api_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, keys = api_env.client, api_env.keys
    start = utcnow()
    filed = client.post("/v1/erasure-requests", json={"user_id": "u3"}, headers=keys.header("erase"))
    assert filed.status_code == 201
    made = client.post(
        "/v1/admin/api-keys", json={"name": "x", "scopes": ["erase"]}, headers=keys.header("admin")
    )
    assert made.status_code == 201
    answer = client.get(
        "/v1/admin/audit-log",
        params={"since": start.isoformat(), "kind": "erasure"},
        headers=keys.header("admin"),
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [r["action"] for r in lines] == ["erasure.received"]
    assert lines[0]["subject_id"] == filed.json()["id"] and "u3" not in answer.text
    everything = client.get("/v1/admin/audit-log", headers=keys.header("admin")).text.splitlines()
    actions = [json.loads(line)["action"] for line in everything]
    assert actions.count("api_key.created") == 5 and "erasure.received" in actions  # 4 of the fixture
    ids = [json.loads(line)["id"] for line in everything]
    assert ids == sorted(ids)
    past = client.get(
        "/v1/admin/audit-log",
        params={"until": start.isoformat(), "kind": "erasure"},
        headers=keys.header("admin"),
    )
    assert past.status_code == 200 and past.text == ""
    naive = client.get(
        "/v1/admin/audit-log", params={"since": "2026-01-01T00:00:00"}, headers=keys.header("admin")
    )
    assert naive.status_code == 422 and "UTC offset" in naive.json()["error"]["message"]
    assert client.get("/v1/admin/audit-log", headers=keys.header("erase")).status_code == 403
    odd = client.get("/v1/admin/audit-log", params={"kind": "erasure%\x00"}, headers=keys.header("admin"))
    assert odd.status_code == 422 and "a kind is an action or its prefix" in odd.json()["error"]["message"]

    _cli_env(api_env, monkeypatch)
    out = api_env.home / "audit.jsonl"
    exported = CliRunner().invoke(
        cli,
        ["audit", "export", "--kind", "api_key.created", "--since", start.isoformat(), "--output", str(out)],
    )
    assert exported.exit_code == 0, exported.output
    assert [json.loads(line)["details"]["name"] for line in out.read_text().splitlines()] == ["x"]


def test_metrics_carry_job_figures_webhooks_and_the_serving_process(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    with api_env.sessions() as session:
        erasures.create_erasure_request(session, "u3", None, erasures.IntakeConfig(salt="s"))
        [job_id] = batching.trigger_batch_now(session, batching.JobSettings(method="test-nudge"))
        job_repo.add_phase_timing(session, job_id, "unlearn", 42.0, utcnow())
        job_repo.add_phase_timing(session, job_id, "unlearn", 400.0, utcnow())
        batching.get_job(session, job_id).verdict_class = "forgotten"
        session.commit()
    text = client.get("/metrics").text
    assert 'e2u_job_phase_seconds_bucket{le="60.0",phase="unlearn"} 1.0' in text
    assert 'e2u_job_phase_seconds_bucket{le="900.0",phase="unlearn"} 2.0' in text
    assert 'e2u_job_phase_seconds_count{phase="unlearn"} 2.0' in text
    assert 'e2u_job_phase_seconds_sum{phase="unlearn"} 442.0' in text
    assert 'e2u_gate_verdicts_total{verdict_class="forgotten"} 1.0' in text
    assert 'e2u_unlearning_jobs{status="pending"} 1.0' in text
    assert f'e2u_active_adapter_info{{pid="{os.getpid()}",version="{api_env.v1}"}} 1.0' in text
    assert "e2u_erasure_requests_open 1.0" in text
    deliveries = client.get("/v1/admin/webhook-deliveries", headers=keys.header("admin"))
    assert deliveries.status_code == 200 and deliveries.json() == []
