"""Unlearning certificates: a JSON document per completed request, signed with HMAC-SHA256 over its
canonical JSON (sorted keys, no spaces, UTF-8), the ``signature`` member left out."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

ALGORITHM = "HMAC-SHA256"
DOCUMENT_TYPE = "e2u.unlearning-certificate"


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (not JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def canonical_json(document: dict[str, Any]) -> bytes:
    body = {k: v for k, v in document.items() if k != "signature"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sign_certificate(document: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of ``document`` with ``signature`` = {algorithm, value: hex HMAC of its canonical JSON}."""
    digest = hmac.new(key.encode(), canonical_json(document), hashlib.sha256).hexdigest()
    return {**document, "signature": {"algorithm": ALGORITHM, "value": digest}}


def verify_certificate(document: dict[str, Any], key: str) -> bool:
    """True iff ``document`` carries a valid signature made with ``key`` (any change to it breaks it)."""
    signature = document.get("signature")
    if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
        return False
    try:
        expected = hmac.new(key.encode(), canonical_json(document), hashlib.sha256).hexdigest()
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(expected, str(signature.get("value", "")))
