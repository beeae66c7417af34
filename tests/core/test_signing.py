"""Certificates as DSSE-signed in-toto statements: verifiable with the public key alone, by this code and
by verifiers written without it (Node's standard library; openssl)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from core.signing import (
    SignatureError,
    SigningKey,
    jwks,
    pae,
    sign_envelope,
    statement,
    verify_envelope,
)

REPO = Path(__file__).resolve().parents[2]
PREDICATE = "https://e2u.invalid/unlearning-certificate/v1"
SUBJECT = [{"name": "adapter:v2", "digest": {"sha256": "ab" * 32}}]


def _envelope(key: SigningKey, predicate_type: str = PREDICATE) -> dict:
    return sign_envelope(statement(SUBJECT, predicate_type, {"request": "r-1", "auc": 0.61}), key)


def _tampered(envelope: dict) -> dict:
    document = json.loads(base64.b64decode(envelope["payload"]))
    document["predicate"]["auc"] = 0.99
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return {**envelope, "payload": base64.b64encode(payload).decode()}


def test_pae_matches_the_dsse_specification() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_a_signed_statement_verifies_with_the_public_keys_alone() -> None:
    key = SigningKey.generate()
    document = verify_envelope(_envelope(key), jwks(key), predicate_type=PREDICATE)
    assert document["subject"] == SUBJECT
    assert document["predicate"] == {"request": "r-1", "auc": 0.61}


def test_a_changed_payload_an_unknown_key_or_another_predicate_type_is_refused() -> None:
    key, stranger = SigningKey.generate(), SigningKey.generate()
    with pytest.raises(SignatureError, match="no signature verifies"):
        verify_envelope(_tampered(_envelope(key)), jwks(key))
    with pytest.raises(SignatureError, match="no signature verifies"):
        verify_envelope(_envelope(stranger), jwks(key))
    with pytest.raises(SignatureError, match="predicate type"):
        verify_envelope(_envelope(key, "https://e2u.invalid/other/v1"), jwks(key), predicate_type=PREDICATE)


def test_a_retired_key_still_verifies_what_it_signed() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    old_certificate = _envelope(old)
    published = jwks(new, [old.jwk])
    assert [k["kid"] for k in published["keys"]] == [new.kid, old.kid]
    assert verify_envelope(old_certificate, published)["predicate"]["request"] == "r-1"


def test_key_ids_are_jwk_thumbprints_and_keys_round_trip_through_pem(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.pem"
    created = SigningKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert SigningKey.load_or_create(path).kid == created.kid
    assert len(base64.urlsafe_b64decode(created.kid + "=")) == 32  # a SHA-256 thumbprint
    assert "d" not in created.jwk


def _external(
    command: list[str], tmp_path: Path, envelope: dict, key_set: dict
) -> subprocess.CompletedProcess[str]:
    certificate, keys = tmp_path / "certificate.json", tmp_path / "jwks.json"
    certificate.write_text(json.dumps(envelope))
    keys.write_text(json.dumps(key_set))
    return subprocess.run([*command, str(certificate), str(keys)], capture_output=True, text=True, timeout=60)


VERIFIERS = {
    "node": (["node", str(REPO / "scripts" / "verify-certificate.mjs")], "node"),
    "openssl": (["bash", str(REPO / "scripts" / "verify-certificate-openssl.sh")], "openssl"),
}


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
def test_a_verifier_without_this_projects_code_accepts_a_real_certificate_and_rejects_forgeries(
    verifier: str, tmp_path: Path
) -> None:
    command, binary = VERIFIERS[verifier]
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed on this machine")
    key = SigningKey.generate()
    accepted = _external(command, tmp_path, _envelope(key), jwks(key))
    assert accepted.returncode == 0, accepted.stderr
    assert "VERIFIED" in accepted.stdout
    tampered = _external(command, tmp_path, _tampered(_envelope(key)), jwks(key))
    assert tampered.returncode == 1 and "no signature verifies" in tampered.stderr
    other_type = _external(command, tmp_path, _envelope(key, "https://e2u.invalid/other/v1"), jwks(key))
    assert other_type.returncode == 1 and "predicate type" in other_type.stderr
