"""A certificate the pipeline really issues is checkable by anyone holding the published keys: by
``core.signing``, and by the two verifiers written without this project's code (Node's standard library,
openssl); a changed one, or one of another predicate type, is refused; a key rotation leaves old
certificates verifiable; and a certificate names no other person's request."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.ml.model import LoadedModel
from core.services import batching, erasures, pipeline
from core.services.certificates import PREDICATE_TYPE, verify_certificate
from core.signing import KeyStore, SignatureError, sign_envelope, statement
from core.suppression import SuppressionLedger
from tests.core.services.test_pipeline import INTAKE, settings

REPO = Path(__file__).resolve().parents[3]
VERIFIERS = {
    "node": ["node", str(REPO / "scripts" / "verify-certificate.mjs")],
    "openssl": ["bash", str(REPO / "scripts" / "verify-certificate-openssl.sh")],
}


def _issue(session: Session, tiny_model: LoadedModel, adapters_dir: Path, keys: KeyStore) -> list[Any]:
    """File two erasures, run their one job signing with ``keys``; their two envelopes, as served."""
    requests = [erasures.create_erasure_request(session, user, None, INTAKE)[0] for user in ("u7", "u9")]
    session.commit()
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()
    ledger = SuppressionLedger(adapters_dir.parent / "suppression-ledger.jsonl", INTAKE.salt)
    runtime = pipeline.PipelineRuntime(
        tiny_model, adapters_dir, "w1", keys.active(), ledger, lease_seconds=60, score_batch_size=8
    )
    outcome = pipeline.run_job(session, job_id, runtime, session.commit)
    assert outcome.status == "succeeded", outcome.reason
    return [(r.id, erasures.get_certificate(session, r.id)) for r in requests]


def _with_statement(envelope: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``envelope`` with its statement changed (top-level members) and the signature left as it was."""
    document = json.loads(base64.b64decode(envelope["payload"])) | change
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return {**envelope, "payload": base64.b64encode(payload).decode()}


def _external(
    verifier: str, tmp_path: Path, envelope: dict, key_set: dict
) -> subprocess.CompletedProcess[str]:
    certificate, keys = tmp_path / "certificate.json", tmp_path / "jwks.json"
    certificate.write_text(json.dumps(envelope))
    keys.write_text(json.dumps(key_set))
    command = [*VERIFIERS[verifier], str(certificate), str(keys)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_pipeline_certificate_verifies_anywhere_and_survives_rotation(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path, tmp_path: Path
) -> None:
    keys = KeyStore(tmp_path / "keys" / "signing-key.pem", tmp_path / "keys" / "retired", create_missing=True)
    [(mine, envelope), (theirs, _)] = _issue(session, tiny_model, adapters_dir, keys)
    published = keys.jwks()

    signed = verify_certificate(envelope, published)
    assert signed["predicateType"] == PREDICATE_TYPE and signed["predicate"]["request_id"] == mine
    assert signed["predicate"]["timestamps"]["old_weights_destroyed_at"] is not None
    assert [s["name"] for s in signed["subject"]] == [
        f"adapter:{signed['predicate']['child_adapter']['id']}",
        f"adapter:{v1_id}",
    ]
    # the batch's other request appears nowhere in this certificate
    assert theirs not in base64.b64decode(envelope["payload"]).decode()

    predicate = signed["predicate"]
    tampered = _with_statement(envelope, {"predicate": predicate | {"request_id": theirs}})
    # validly signed, but not our kind of statement: a verifier must check the predicate type too
    other_type = sign_envelope(
        statement(signed["subject"], "https://e2u.invalid/other/v1", predicate), keys.active()
    )
    with pytest.raises(SignatureError, match="no signature verifies"):
        verify_certificate(tampered, published)
    with pytest.raises(SignatureError, match="predicate type"):
        verify_certificate(other_type, published)
    for verifier, command in VERIFIERS.items():
        if shutil.which(command[0]) is None or shutil.which("openssl") is None:
            pytest.skip(f"{command[0]} or openssl is not installed on this machine")
        accepted = _external(verifier, tmp_path, envelope, published)
        assert accepted.returncode == 0 and "VERIFIED" in accepted.stdout, (verifier, accepted.stderr)
        refused = _external(verifier, tmp_path, tampered, published)
        assert refused.returncode == 1 and "no signature verifies" in refused.stderr, verifier
        refused = _external(verifier, tmp_path, other_type, published)
        assert refused.returncode == 1 and "predicate type" in refused.stderr, verifier

    old_kid, new_kid = keys.rotate()
    assert envelope["signatures"][0]["keyid"] == old_kid != new_kid == keys.active().kid
    after = keys.jwks()
    assert [k["kid"] for k in after["keys"]] == [new_kid, old_kid]
    assert verify_certificate(envelope, after)["predicate"]["request_id"] == mine
    for verifier in VERIFIERS:
        assert _external(verifier, tmp_path, envelope, after).returncode == 0, verifier
    # without the retired key published it would not verify: the retired folder is what keeps it valid
    with pytest.raises(SignatureError, match="no signature verifies"):
        verify_certificate(envelope, {"keys": after["keys"][:1]})
