"""The published signing keys (no API key: anyone checking a certificate fetches them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from app.deps import SettingsDep

router = APIRouter(tags=["certificates"])

# keys change only on a rotation, and a retired key stays published: a short public cache is safe
CACHE_CONTROL = "public, max-age=300"


@router.get(
    "/.well-known/jwks.json",
    summary="Public keys that verify certificates (JWKS)",
    responses={
        200: {
            "description": "the active key first, then every retired key (kept so old certificates verify)",
            "content": {
                "application/json": {
                    "example": {
                        "keys": [
                            {
                                "kty": "OKP",
                                "crv": "Ed25519",
                                "x": "11qYAYKx...",
                                "kid": "kPrK_qmx...",
                                "alg": "EdDSA",
                                "use": "sig",
                            }
                        ]
                    }
                }
            },
        }
    },
)
async def jwks(settings: SettingsDep, response: Response) -> dict[str, Any]:
    """The Ed25519 public keys (RFC 8037 JWKs, ``kid`` = RFC 7638 thumbprint) of every key that has signed
    certificates here.  Verify a certificate with `node scripts/verify-certificate.mjs CERT JWKS`."""
    response.headers["Cache-Control"] = CACHE_CONTROL
    return await run_in_threadpool(lambda: settings.signing_keys.jwks())
