"""Request and response bodies of erasure requests."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import EntityId, request_body, response_body
from core.db.models import ErasureStatus


class ErasureRequestCreate(BaseModel):
    model_config = request_body({"user_id": "196"}, {"user_id": "196", "items": ["242", "393"]})
    user_id: EntityId = Field(description="whose data to erase")
    items: list[EntityId] | None = Field(
        None,
        min_length=1,
        max_length=10000,
        description="erase only these items of the user; omitted: the whole user (ratings and profile)",
    )


class ErasureRequestPublic(BaseModel):
    model_config = response_body(
        {
            "id": "0b6f6f4e-3c1a-4d7e-9d0e-6a2f0f1b2c3d",
            "user_id": "196",
            "scope": "user",
            "items": [],
            "status": "queued",
            "created_at": "2026-01-05T10:00:00Z",
            "queued_at": "2026-01-05T10:00:00Z",
            "updated_at": "2026-01-05T10:00:00Z",
            "deadline_at": "2026-02-04T10:00:00Z",
            "retry_count": 0,
            "certificate_url": None,
        }
    )
    id: str
    user_id: str | None = Field(
        description="shown to the key that filed the request only; redacted (null) once the data is deleted "
        "or the request cancelled"
    )
    user_hash: str = Field(description="salted hash of the user id, as written in the certificate")
    scope: Literal["user", "items"]
    items: list[str] = Field(default_factory=list, description="the items of a partial request")
    status: ErasureStatus
    created_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    failed_at: datetime | None = None
    updated_at: datetime
    deadline_at: datetime = Field(description="the statutory deadline (created + 30 days by default)")
    retry_count: int = 0
    job_id: int | None = None
    failure_reason: str | None = None
    forget_samples: int | None = Field(None, description="training samples in scope (the forget set)")
    rows_deleted: int | None = None
    certificate_url: str | None = Field(None, description="where the signed certificate is, once completed")
    deadline_at_risk: bool = Field(
        False,
        description="still open and past the configured fraction (E2U_DEADLINE_RISK_FRACTION) of the time "
        "from filing to the deadline",
    )


class ErasureRequestList(BaseModel):
    requests: list[ErasureRequestPublic]


class CertificateSignature(BaseModel):
    keyid: str = Field(description="the signing key's JWK thumbprint (see /.well-known/jwks.json)")
    sig: str = Field(description="base64 Ed25519 signature over the DSSE PAE of the payload")


class RequeueResult(BaseModel):
    request_id: str
    job_id: int = Field(description="the exact-retrain job the request is now in")


class CertificatePublic(BaseModel):
    """The certificate as issued: a DSSE envelope over an in-toto Statement v1 (predicate type
    https://e2u.invalid/unlearning-certificate/v1), verifiable with the keys at /.well-known/jwks.json
    (`e2u certificate verify FILE --jwks URL`, or `node scripts/verify-certificate.mjs FILE JWKS`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "payloadType": "application/vnd.in-toto+json",
                    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLC4uLn0=",
                    "signatures": [{"keyid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "sig": "..."}],
                }
            ]
        },
    )
    payloadType: str = Field(description="application/vnd.in-toto+json")
    payload: str = Field(description="base64 of the in-toto Statement (JSON)")
    signatures: list[CertificateSignature]
