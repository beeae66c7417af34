"""Unlearning certificates: per completed request, a DSSE envelope (Ed25519, key id = JWK thumbprint)
over an in-toto Statement v1 whose subjects are the adapter now serving and the destroyed parent adapter
(by the sha256 the registry stores for their weights), whose predicate type is ``PREDICATE_TYPE`` and
whose predicate is ``certificate_document``.  Anyone holding the published JWKS can check one
(``core.signing.verify_envelope``, or ``scripts/verify-certificate.mjs`` / ``-openssl.sh``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.db.models import AdapterVersion, ErasureRequest, UnlearningJob
from core.serialization import json_safe
from core.signing import SigningKey, sign_envelope, statement, verify_envelope

# versioned: a change of the predicate's meaning gets a new version, old certificates keep theirs
PREDICATE_TYPE = "https://e2u.invalid/unlearning-certificate/v1"
DOCUMENT_TYPE = "e2u.unlearning-certificate"
DOCUMENT_VERSION = 1


def certificate_document(
    request: ErasureRequest,
    scope_items: int,
    job: UnlearningJob,
    parent: AdapterVersion,
    child: AdapterVersion,
    issued_at: datetime,
    serving: dict[str, Any] | None = None,
    deleted_before_unlearning_at: datetime | None = None,
) -> dict[str, Any]:
    """The unsigned certificate of ``request``, completed by ``job`` (which made ``child`` from
    ``parent``; the same version when nothing was trained on the data).  ``scope_items``: how many items
    a partial request named (0 for a whole user).  JSON-safe; sign it with ``sign_certificate``.  Names
    no other request: the job's per-request accounts stay out of the verification figures.  ``serving``:
    the job's account of the serving processes' switch to ``child`` (``core.services.pipeline``).
    ``deleted_before_unlearning_at``: when the request's stored data was deleted ahead of unlearning (its
    deadline came first: ``core.services.pipeline.delete_data_due``), None otherwise."""
    prepared = job.metrics.get("prepared_data") or {}
    document = {
        "type": DOCUMENT_TYPE,
        "version": DOCUMENT_VERSION,
        "request_id": request.id,
        "subject": {"user_hash": request.user_hash, "hash": "HMAC-SHA256(salt, user_id)"},
        "scope": {"kind": request.scope, "items": scope_items},
        "erased": {
            "forget_samples": request.forget_samples,
            "rows_deleted": request.rows_deleted,
            "profile_deleted": bool(request.profile_deleted),
            "prepared_data": _prepared_data_record(prepared, request.id),
            "deleted_before_unlearning_at": _stamp(deleted_before_unlearning_at),
        },
        "job_id": job.id,
        "parent_adapter": {"id": parent.id, "sha256": parent.sha256},
        "child_adapter": {"id": child.id, "sha256": child.sha256},
        "verification": {
            "verdict": job.verdict,
            "verdict_class": job.metrics.get("verdict"),
            "reasons": job.metrics.get("reasons"),
            "figures": _evidence_figures(job.metrics.get("evidence")),
            # prepared_data counts samples per request of the whole batch: this request's share is above
            "metrics": {k: v for k, v in job.metrics.items() if k not in ("prepared_data", "serving")},
            "thresholds": job.thresholds,
        },
        # when each serving process seen live confirmed it serves the child, which did not (missing), and
        # when all had (None: one is missing); None for a job that predates the record
        "serving": _serving_record(serving),
        "timestamps": {
            "received_at": _stamp(request.created_at),
            "deadline_at": _stamp(request.deadline_at),
            "promoted_at": _stamp(child.promoted_at),
            "old_weights_destroyed_at": _stamp(parent.destroyed_at) if parent.id != child.id else None,
            "prepared_data_purged_at": prepared.get("purged_at"),
            "issued_at": _stamp(issued_at),
        },
    }
    return json_safe(document)


def _serving_record(serving: dict[str, Any] | None) -> dict[str, Any] | None:
    if not serving:
        return None
    keys = ("version_id", "liveness_seconds", "checked_at", "confirmed", "missing", "all_switched_at")
    return {k: serving[k] for k in keys}


def _stamp(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _evidence_figures(evidence: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the verdict class rests on (``core.ml.evidence.Evidence.to_dict``), figure by figure: each
    estimate with its interval, its p-value and the smallest effect its test could detect (MDE) at the
    stated power; None when nothing was verified (no training sample in scope)."""
    if not evidence:
        return None

    def memorisation(test: dict[str, Any]) -> dict[str, Any]:
        keys = ("n", "excess", "p_value", "p_value_lower", "mde", "reference_users", "reference_samples")
        return {k: test[k] for k in keys}

    change, utility, config = evidence["forget_change"], evidence["utility"], evidence["config"]
    return {
        "parent_memorisation": memorisation(evidence["parent"]),
        "child_memorisation": memorisation(evidence["child"]),
        "forget_change": {k: change[k] for k in ("n", "mean", "p_value", "mde")},
        "utility_auc": {k: utility[k] for k in ("n", "parent_auc", "child_auc", "difference", "mde")},
        "alpha": config["alpha"],
        "power": config["power"],
        "effect_of_interest": config["effect_of_interest"],
        "units": "memorisation and forget change in nats of gold-label log-probability; utility in AUC",
    }


def _prepared_data_record(record: dict[str, Any], request_id: str) -> dict[str, Any] | None:
    """The account of the prepared data files (the job's ``prepared_data`` metrics): this request's
    samples removed from them and the files' content hash after the rewrite; None when none was purged."""
    if not record:
        return None
    if not record.get("present"):
        return {"present": False}
    return {
        "present": True,
        "samples_removed": int(record["samples_removed"].get(request_id, 0)),
        "sha256_before": record["sha256_before"],
        "sha256_after": record["sha256_after"],
    }


def certificate_subjects(parent: AdapterVersion, child: AdapterVersion) -> list[dict[str, Any]]:
    """The in-toto subjects: the adapter serving after the erasure, then the destroyed parent (one subject
    when nothing was trained on the data and the parent serves on).  Name: the registry's content id."""
    versions = [child] if parent.id == child.id else [child, parent]
    return [{"name": f"adapter:{v.id}", "digest": {"sha256": v.sha256}} for v in versions]


def sign_certificate(
    document: dict[str, Any], parent: AdapterVersion, child: AdapterVersion, key: SigningKey
) -> dict[str, Any]:
    """The certificate: a DSSE envelope over the Statement (subjects of ``parent`` and ``child``,
    ``PREDICATE_TYPE``, predicate ``document``) signed by ``key``."""
    payload = statement(certificate_subjects(parent, child), PREDICATE_TYPE, document)
    return sign_envelope(payload, key)


def verify_certificate(envelope: dict[str, Any], jwks: dict[str, Any]) -> dict[str, Any]:
    """The verified Statement of ``envelope`` (``subject``, ``predicate``), checked against the published
    key set ``jwks`` (retired keys included); ``core.signing.SignatureError`` says why when it is not."""
    return verify_envelope(envelope, jwks, predicate_type=PREDICATE_TYPE)
