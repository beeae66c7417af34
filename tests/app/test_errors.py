"""The one error table: every expected error class answers its status with the code it carries, in the
common body; anything else is a 500 that leaks nothing."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.errors import HTTP_STATUS, InvalidRequest, PayloadTooLarge, install_error_handler
from core.ml.model import ModelError
from core.services import errors as service_errors
from core.serving import NoActiveAdapter

# What the API has always answered for each error class (status, code).
EXPECTED: list[tuple[Exception, int, str]] = [
    (service_errors.NotFound("gone"), 404, "not_found"),
    (service_errors.InvalidInput("bad"), 422, "invalid_input"),
    (service_errors.Conflict("no"), 409, "conflict"),
    (service_errors.IdempotencyKeyReused("no"), 409, "idempotency_key_reused"),
    (service_errors.NotCancellable("no"), 409, "not_cancellable"),
    (service_errors.NotRequeueable("no"), 409, "not_requeueable"),
    (service_errors.StalePromotion("no"), 409, "stale_promotion"),
    (service_errors.PredatesErasure("no"), 409, "predates_erasure"),
    (service_errors.VersionUnavailable("no"), 409, "version_unavailable"),
    (service_errors.ImportRefused("no"), 409, "import_refused"),
    (service_errors.Unauthorized("who?"), 401, "unauthenticated"),
    (service_errors.ApiKeyExpired("expired at ..."), 401, "api_key_expired"),
    (service_errors.Forbidden("no"), 403, "forbidden"),
    (service_errors.LeaseLost("no"), 409, "lease_lost"),
    (PayloadTooLarge("big", file="r.csv"), 413, "payload_too_large"),
    (InvalidRequest("unknown item(s) ['x']", items=["x"]), 422, "validation_error"),
    (ModelError("broken adapter"), 422, "model_error"),
    (NoActiveAdapter("not yet"), 503, "no_active_adapter"),
]


def _client(error: Exception) -> TestClient:
    app = FastAPI()
    install_error_handler(app)

    @app.get("/boom")
    def boom() -> None:
        raise error

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(("error", "status", "code"), EXPECTED, ids=lambda v: getattr(v, "__name__", None))
def test_each_error_answers_its_status_and_own_code(error: Exception, status: int, code: str) -> None:
    response = _client(error).get("/boom")
    assert response.status_code == status
    details = getattr(error, "details", None) or None
    assert response.json() == {"error": {"code": code, "message": str(error), "details": details}}
    assert ("WWW-Authenticate" in response.headers) == (status == 401)


def test_every_service_error_has_a_status() -> None:
    classes = [c for c in vars(service_errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    unmapped = [
        c.__name__
        for c in classes
        if c is not service_errors.ServiceError and not set(c.__mro__) & set(HTTP_STATUS)
    ]
    assert unmapped == []
    assert {type(e) for e, _, _ in EXPECTED} >= set(classes) - {service_errors.ServiceError}


def test_an_unexpected_error_is_a_bare_500() -> None:
    response = _client(RuntimeError("secret path /etc/x")).get("/boom")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "internal error (logged)", "details": None}
    }
