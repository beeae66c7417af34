#!/usr/bin/env bash
# Verifies an unlearning certificate with openssl (>= 3.0) and Python's standard library only, no code of
# this project:  bash scripts/verify-certificate-openssl.sh CERTIFICATE.json JWKS.json
# Exit 0 when a signature verifies under a published key and the predicate type is ours; 1 otherwise.
set -euo pipefail
envelope=$1 jwks=$2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 - "$envelope" "$jwks" "$work" <<'PY'
import base64, json, sys
envelope, jwks, work = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
payload = base64.b64decode(envelope["payload"])
kind = envelope["payloadType"].encode()
open(f"{work}/pae", "wb").write(b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload))
open(f"{work}/payload.json", "wb").write(payload)
keys = {k["kid"]: k for k in jwks["keys"]}
for n, signature in enumerate(envelope["signatures"]):
    key = keys.get(signature["keyid"])
    if key is None:
        continue
    raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
    # SubjectPublicKeyInfo for Ed25519 = a fixed 12-byte DER prefix + the 32-byte raw key
    der = bytes.fromhex("302a300506032b6570032100") + raw
    open(f"{work}/key{n}.der", "wb").write(der)
    open(f"{work}/sig{n}", "wb").write(base64.b64decode(signature["sig"]))
PY
ok=1
for key in "$work"/key*.der; do
  [ -e "$key" ] || break
  n=${key##*/key}; n=${n%.der}
  if openssl pkeyutl -verify -pubin -keyform DER -inkey "$key" -rawin -in "$work/pae" \
      -sigfile "$work/sig$n" >/dev/null 2>&1; then ok=0; break; fi
done
[ "$ok" = 0 ] || { echo "REJECTED: no signature verifies under a published key" >&2; exit 1; }
type=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["predicateType"])' "$work/payload.json")
[ "$type" = "https://e2u.invalid/unlearning-certificate/v1" ] || { echo "REJECTED: predicate type $type" >&2; exit 1; }
echo "VERIFIED"
