#!/usr/bin/env node
// Verifies an unlearning certificate with nothing but Node's standard library (no code of this project):
//   node scripts/verify-certificate.mjs CERTIFICATE.json JWKS.json
// CERTIFICATE.json is a DSSE envelope; JWKS.json is the service's /.well-known/jwks.json.
// Exit 0 and print the statement's predicate on success; exit 1 with the reason otherwise.
import { readFileSync } from "node:fs";
import { createPublicKey, verify } from "node:crypto";

const PREDICATE_TYPE = "https://e2u.invalid/unlearning-certificate/v1";
const [envelopePath, jwksPath] = process.argv.slice(2);
const envelope = JSON.parse(readFileSync(envelopePath, "utf8"));
const jwks = JSON.parse(readFileSync(jwksPath, "utf8"));

function fail(reason) {
  console.error(`REJECTED: ${reason}`);
  process.exit(1);
}

if (envelope.payloadType !== "application/vnd.in-toto+json") fail(`payload type ${envelope.payloadType}`);
const payload = Buffer.from(envelope.payload, "base64");
const type = Buffer.from(envelope.payloadType, "utf8");
// DSSE pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(payload)> <payload>"
const pae = Buffer.concat([
  Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload,
]);
const verified = (envelope.signatures || []).some((signature) => {
  const jwk = (jwks.keys || []).find((key) => key.kid === signature.keyid);
  if (!jwk) return false;
  const key = createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, format: "jwk" });
  return verify(null, pae, key, Buffer.from(signature.sig, "base64"));
});
if (!verified) fail("no signature verifies under a published key");
const statement = JSON.parse(payload.toString("utf8"));
if (statement._type !== "https://in-toto.io/Statement/v1") fail(`not an in-toto statement: ${statement._type}`);
if (statement.predicateType !== PREDICATE_TYPE) fail(`predicate type ${statement.predicateType}`);
console.log(`VERIFIED by key ${envelope.signatures[0].keyid}`);
console.log(JSON.stringify({ subject: statement.subject, predicate: statement.predicate }, null, 2));
