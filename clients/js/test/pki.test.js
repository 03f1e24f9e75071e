// Party key checks: the CA chain (PKI.js + WebCrypto) and pinned fingerprints, against Python-made certificates.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { PartyKeyError, b64decode, checkPinned, ecdsaDerToRaw, isLoopback, pemToDer, verifyPartyKey } from '../src/index.js';

const V = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8'));
const P = V.pki;
const proofOf = (p) => ({ rank: p.rank, publicKey: b64decode(p.public_key), certificate: p.certificate, signature: b64decode(p.signature) });

let pkijsMissing = false;
try {
  await import('pkijs');
} catch {
  pkijsMissing = 'PKI.js is not installed: run `npm ci` in clients/js (the CA-chain checks need it; pins do not)';
}

test('CA chain: the Python-signed party keys verify', { skip: pkijsMissing }, async () => {
  for (const p of P.good) await verifyPartyKey(proofOf(p), P.ca_pem, { now: new Date(P.now) });
});

test('CA chain: every proof that Python refuses is refused, for the same reason', { skip: pkijsMissing }, async () => {
  const reasons = {
    'substituted key (signature over another key)': /not signed by the party's certificate key/,
    "party 1's certificate and signature offered for rank 0": /names role "party1", not "party0"/,
    'a certificate for the coordinator role': /names role "coordinator", not "party1"/,
    'a certificate from another CA': /not issued by the given CA/,
    "signature by party 0 over rank 1's statement": /not signed by the party's certificate key/,
    'no certificate or signature': /no certificate or signature/,
    'a 31-byte key': /31 bytes, expected 32/,
    'tampered signature': /not signed|not a DER ECDSA signature/,
    'the certificate is not valid yet': /not valid now/,
    'the certificate has expired': /not valid now/,
  };
  for (const bad of P.bad) {
    const now = new Date(bad.now || P.now);
    await assert.rejects(verifyPartyKey(proofOf(bad.proof), P.ca_pem, { now }), (err) => {
      assert.ok(err instanceof PartyKeyError, `${bad.why}: ${err}`);
      assert.match(err.message, reasons[bad.why], bad.why);
      return true;
    });
  }
  // the right proof under another CA, and garbage certificates
  await assert.rejects(verifyPartyKey(proofOf(P.good[0]), P.other_ca_pem, { now: new Date(P.now) }), /not issued by the given CA/);
  await assert.rejects(verifyPartyKey({ ...proofOf(P.good[0]), certificate: 'not a certificate' }, P.ca_pem), /unreadable certificate/);
  await assert.rejects(verifyPartyKey({ ...proofOf(P.good[0]), rank: 2 }, P.ca_pem), PartyKeyError);
});

test('CA chain: a certificate edited to name another role is refused (the CA signed the original bytes)', { skip: pkijsMissing }, async () => {
  const der = pemToDer(P.good[0].certificate);
  const text = Buffer.from(der).toString('latin1');
  assert.ok(text.includes('party0'));
  const forged = Buffer.from(text.replaceAll('party0', 'party1'), 'latin1');
  const pem = `-----BEGIN CERTIFICATE-----\n${forged.toString('base64')}\n-----END CERTIFICATE-----\n`;
  const proof = { ...proofOf(P.good[0]), rank: 1, certificate: pem };
  await assert.rejects(verifyPartyKey(proof, P.ca_pem, { now: new Date(P.now) }), /not issued by the given CA/);
});

test('pins: the fingerprint of each key, sha256: prefix or bare hex, any case', async () => {
  for (const r of [0, 1]) {
    const key = b64decode(V.keys.party_public[r]);
    await checkPinned(r, key, V.keys.party_fingerprints[r]);
    await checkPinned(r, key, V.keys.party_fingerprints[r].slice(7).toUpperCase());
    await assert.rejects(checkPinned(r, key, V.keys.party_fingerprints[1 - r]), PartyKeyError);
  }
});

test('DER signatures are read strictly', () => {
  const sig = b64decode(P.good[0].signature);
  assert.equal(ecdsaDerToRaw(sig).length, 64);
  assert.throws(() => ecdsaDerToRaw(Uint8Array.from([...sig, 0])), /length|trailing/);
  const padded = Uint8Array.from([0x30, 0x08, 0x02, 0x02, 0x00, 0x01, 0x02, 0x02, 0x00, 0x01]);
  assert.throws(() => ecdsaDerToRaw(padded), /non-minimal/);
  assert.throws(() => ecdsaDerToRaw(Uint8Array.from([0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01])), /negative/);
});

test('loopback hosts', () => {
  for (const h of ['127.0.0.1', '127.5.6.7', 'localhost', '[::1]', '::1', 'LOCALHOST']) assert.ok(isLoopback(h), h);
  for (const h of ['10.0.0.1', 'example.org', '127.0.0.1.example.org', '128.0.0.1', '[::2]', '0127.0.0.1']) assert.ok(!isLoopback(h), h);
});
