"""Signed attestations that anyone can check without trusting (or running) this service.

The format is the one software supply chains use: an in-toto Statement v1 (what is attested: subjects by
digest, a versioned predicate type, the predicate) inside a DSSE envelope, signed with Ed25519 under a key
id.  DSSE signs the payload *bytes* (through its pre-authentication encoding, PAE), so a verifier needs no
JSON canonicalisation: it checks the signature over ``PAE(payloadType, payload)`` and only then parses.

Key ids are RFC 7638 JWK thumbprints of the public key, so a verifier can recompute them; public keys are
published as a JWKS (RFC 7517/8037, ``kty=OKP, crv=Ed25519``), retired keys included so that certificates
signed years ago still verify.  The Ed25519 primitive comes from ``cryptography`` (pyca), the
well-kept standard binding of OpenSSL for Python.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.secret_files import write_secret_file

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


class SignatureError(ValueError):
    """An envelope that does not verify: unknown key, bad signature, wrong payload or predicate type."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the exact bytes that are signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as a JWK with its thumbprint as ``kid``."""
    x = _b64url(_raw_public(key))
    # RFC 7638: the thumbprint hashes the required members only, in lexicographic order, no spaces.
    required = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    kid = _b64url(hashlib.sha256(required.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


def key_from_jwk(jwk: dict[str, Any]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise SignatureError(f"not an Ed25519 public JWK: kid {jwk.get('kid')!r}")
    return Ed25519PublicKey.from_public_bytes(_unb64url(jwk["x"]))


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and its key id (the JWK thumbprint of its public half)."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("the signing key must be an Ed25519 private key (PKCS#8 PEM)")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """The key stored at ``path`` (PKCS#8 PEM); ``SignatureError`` naming the file if it cannot be."""
        try:
            return cls.from_pem(path.read_bytes())
        except (OSError, ValueError, TypeError) as error:
            raise SignatureError(f"cannot read the Ed25519 signing key {path}: {error}") from error

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key stored at ``path`` (PKCS#8 PEM); a new one is written there, mode 0600, if none exists.
        Safe when two processes start at once: the file is linked into place only if still absent, and
        whoever loses the race reads the winner's key (so nothing is ever signed by an unpublished key)."""
        if not path.exists():
            key = cls.generate()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_secret_file(path, key.to_pem(), replace=False)
        return cls.load(path)

    def to_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def jwk(self) -> dict[str, str]:
        return public_jwk(self.public)

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def statement(subjects: list[dict[str, Any]], predicate_type: str, predicate: dict[str, Any]) -> bytes:
    """An in-toto Statement v1 as JSON bytes.  ``subjects``: ``{"name": ..., "digest": {"sha256": hex}}``."""
    for subject in subjects:
        if not subject.get("name") or not subject.get("digest"):
            raise ValueError(f"an in-toto subject needs a name and a digest: {subject!r}")
    document = {
        "_type": IN_TOTO_STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign_envelope(
    payload: bytes, key: SigningKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> dict[str, Any]:
    """A DSSE envelope over ``payload`` signed by ``key``."""
    signature = key.private.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": _b64(payload),
        "signatures": [{"keyid": key.kid, "sig": _b64(signature)}],
    }


def verify_envelope(
    envelope: dict[str, Any], jwks: dict[str, Any], predicate_type: str | None = None
) -> dict[str, Any]:
    """The verified in-toto Statement of ``envelope``, or ``SignatureError`` saying why not.

    ``jwks``: ``{"keys": [...]}`` (active and retired keys alike; a retired key still verifies what it
    signed).  ``predicate_type``: when given, the statement must carry exactly this predicate type.
    """
    try:
        payload_type = envelope["payloadType"]
        payload = _unb64(envelope["payload"])
        signatures = envelope["signatures"]
    except (KeyError, TypeError, ValueError) as error:
        raise SignatureError(f"not a DSSE envelope: {error}") from error
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise SignatureError(f"payload type {payload_type!r} is not {IN_TOTO_PAYLOAD_TYPE!r}")
    keys = {k.get("kid"): k for k in jwks.get("keys", []) if isinstance(k, dict)}
    message = pae(payload_type, payload)
    verified = False
    for signature in signatures if isinstance(signatures, list) else []:
        jwk = keys.get(signature.get("keyid")) if isinstance(signature, dict) else None
        if jwk is None:
            continue
        try:
            key_from_jwk(jwk).verify(_unb64(signature["sig"]), message)
            verified = True
            break
        except (InvalidSignature, KeyError, ValueError):
            continue
    if not verified:
        raise SignatureError("no signature verifies under a published key")
    try:
        document: dict[str, Any] = json.loads(payload)
    except ValueError as error:
        raise SignatureError(f"signed payload is not JSON: {error}") from error
    if document.get("_type") != IN_TOTO_STATEMENT_TYPE:
        raise SignatureError(f"payload is not an in-toto Statement v1: {document.get('_type')!r}")
    if predicate_type is not None and document.get("predicateType") != predicate_type:
        raise SignatureError(f"predicate type {document.get('predicateType')!r} is not {predicate_type!r}")
    return document


def jwks(active: SigningKey, retired_public_jwks: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The published key set: the active key first, then every retired public key (never dropped)."""
    seen = {active.kid}
    keys: list[dict[str, Any]] = [active.jwk]
    for jwk in retired_public_jwks:
        if jwk.get("kid") not in seen:
            seen.add(jwk["kid"])
            keys.append({k: v for k, v in jwk.items() if k != "d"})  # a private member is never published
    return {"keys": keys}


@dataclass(frozen=True)
class KeyStore:
    """Where the signing keys live: the active private key (``active_path``, PKCS#8 PEM) and the public
    halves of retired keys (``retired_dir/<kid>.jwk.json``), which are published for ever.

    ``create_missing``: create the active key on first use (development only; production refuses to start
    without a key file, see ``core.settings``)."""

    active_path: Path
    retired_dir: Path
    create_missing: bool = False

    def active(self) -> SigningKey:
        """The key that signs now."""
        if self.create_missing:
            return SigningKey.load_or_create(self.active_path)
        return SigningKey.load(self.active_path)

    def retired(self) -> list[dict[str, Any]]:
        """The retired public keys, oldest file name first (each file one public JWK)."""
        if not self.retired_dir.is_dir():
            return []
        keys = []
        for path in sorted(self.retired_dir.glob("*.jwk.json")):
            jwk = json.loads(path.read_text())
            key_from_jwk(jwk)  # a malformed file fails here, not in a verifier years later
            keys.append(jwk)
        return keys

    def jwks(self) -> dict[str, Any]:
        """The published key set: the active key and every retired one."""
        return jwks(self.active(), self.retired())

    def rotate(self) -> tuple[str, str]:
        """Make a new key active; the old key's public half moves to the retired folder first (so that
        at every moment each key that may have signed is published).  Returns (old kid, new kid)."""
        old = self.active()
        self.retired_dir.mkdir(parents=True, exist_ok=True)
        retired = self.retired_dir / f"{old.kid}.jwk.json"
        tmp = retired.with_name(f".{retired.name}.tmp")
        tmp.write_text(json.dumps(old.jwk, indent=2, sort_keys=True) + "\n")
        tmp.replace(retired)
        new = SigningKey.generate()
        write_secret_file(self.active_path, new.to_pem(), replace=True)
        return old.kid, new.kid
