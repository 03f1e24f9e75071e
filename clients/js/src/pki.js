// Checking a party's sealing key before anything is sealed to it (the twin of mpcvit/pki.py's client side).
//
// * Pinned fingerprints: `sha256:<hex>` of the 32-byte X25519 key (keyFingerprint, checkPinned). WebCrypto only.
// * The deployment's CA (verifyPartyKey): the party's certificate must be issued by the CA certificate the
//   client was given (issuer name and ECDSA signature), valid now, and name role `party<rank>` both in its
//   subject CN and in its one DNS name under `role.mpcvit.invalid`; the certificate's ECDSA P-256 key must
//   have signed  "mpcvit party sealing key v1" || 0x00 || rank || public key  (SHA-256, DER signature).
//   Certificates are parsed with PKI.js (npm `pkijs`, pinned in package-lock.json; README.md says why),
//   loaded only when a CA is used; the signatures are checked with WebCrypto.

import { b64decode, concatBytes, subtle, toBytes, toHex, utf8 } from './sealing.js';

export const KEY_STATEMENT = 'mpcvit party sealing key v1';
export const ROLES = Object.freeze(['dealer', 'party0', 'party1', 'coordinator']);
export const ROLE_DOMAIN = 'role.mpcvit.invalid';
const OID_COMMON_NAME = '2.5.4.3';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const GENERAL_NAME_DNS = 2;

/** A party's sealing key whose binding to the party does not verify. */
export class PartyKeyError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'PartyKeyError';
  }
}

export function partyRole(rank) {
  if (rank !== 0 && rank !== 1) throw new PartyKeyError(`rank must be 0 or 1, got ${rank}`);
  return `party${rank}`;
}

/** `sha256:<hex>` of a 32-byte X25519 public key (what a client pins). */
export async function keyFingerprint(publicKey) {
  const digest = await subtle().digest('SHA-256', toBytes(publicKey, 'public key'));
  return 'sha256:' + toHex(new Uint8Array(digest));
}

/** Compare a party's sealing key with a pinned fingerprint (`sha256:<hex>` or bare hex); PartyKeyError if it differs. */
export async function checkPinned(rank, publicKey, pinned) {
  if (typeof pinned !== 'string') throw new PartyKeyError(`party ${rank}: a pin is a string sha256:<hex>`);
  const want = pinned.toLowerCase().replace(/^sha256:/, '');
  const got = (await keyFingerprint(publicKey)).slice('sha256:'.length);
  if (want !== got) throw new PartyKeyError(`party ${rank}: the sealing key's fingerprint sha256:${got} is not the pinned sha256:${want}`);
}

/** The statement a party signs: "mpcvit party sealing key v1" || 0x00 || rank || public key. */
export function keyStatement(rank, publicKey) {
  return concatBytes(utf8(KEY_STATEMENT), Uint8Array.of(0, rank), toBytes(publicKey, 'public key'));
}

/**
 * A DER ECDSA signature (SEQUENCE { INTEGER r, INTEGER s }) as WebCrypto's r || s, each `size` bytes.
 * Strict DER: short-form lengths, minimal positive integers, nothing after the sequence.
 */
export function ecdsaDerToRaw(der, size = 32) {
  const bad = (why) => new PartyKeyError(`the signature is not a DER ECDSA signature (${why})`);
  const sig = toBytes(der, 'signature');
  if (sig.length < 8 || sig[0] !== 0x30) throw bad('no SEQUENCE');
  if (sig[1] >= 0x80 || sig[1] !== sig.length - 2) throw bad('length');
  const out = new Uint8Array(2 * size);
  let at = 2;
  for (let k = 0; k < 2; k++) {
    if (at + 2 > sig.length || sig[at] !== 0x02) throw bad('no INTEGER');
    const len = sig[at + 1];
    if (len === 0 || len >= 0x80 || at + 2 + len > sig.length) throw bad('INTEGER length');
    let int = sig.subarray(at + 2, at + 2 + len);
    if (int[0] & 0x80) throw bad('negative INTEGER');
    if (int[0] === 0 && (len === 1 || !(int[1] & 0x80))) throw bad('non-minimal INTEGER');
    if (int[0] === 0) int = int.subarray(1);
    if (int.length > size) throw bad('INTEGER too large');
    out.set(int, k * size + size - int.length);
    at += 2 + len;
  }
  if (at !== sig.length) throw bad('trailing bytes');
  return out;
}

/** The first PEM certificate in `pem` (a string or bytes) as DER bytes. */
export function pemToDer(pem) {
  const text = typeof pem === 'string' ? pem : new TextDecoder().decode(toBytes(pem, 'PEM'));
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/.exec(text);
  if (!m) throw new PartyKeyError('no PEM certificate (-----BEGIN CERTIFICATE-----)');
  return b64decode(m[1].replace(/\s+/g, ''), 'PEM certificate');
}

function parseCertificate(pkijs, pem, who) {
  try {
    const der = pemToDer(pem);
    return { cert: pkijs.Certificate.fromBER(der), der };
  } catch (err) {
    throw new PartyKeyError(`${who}: unreadable certificate: ${err.message}`, { cause: err });
  }
}

function commonNames(name) {
  return name.typesAndValues.filter((tv) => tv.type === OID_COMMON_NAME).map((tv) => String(tv.value.valueBlock.value));
}

function inRoleDomain(name) {
  const n = name.toLowerCase().replace(/\.$/, '');
  return n === ROLE_DOMAIN || n.endsWith('.' + ROLE_DOMAIN);
}

/** The role a certificate names: its one role DNS name, agreeing with its CN; null otherwise (mpcvit.pki.cert_role). */
export function certRole(cert) {
  const sans = (cert.extensions || []).filter((e) => e.extnID === OID_SUBJECT_ALT_NAME);
  if (sans.length !== 1 || !sans[0].parsedValue || !Array.isArray(sans[0].parsedValue.altNames)) return null;
  const dns = sans[0].parsedValue.altNames.filter((g) => g.type === GENERAL_NAME_DNS).map((g) => String(g.value));
  const roles = dns.filter(inRoleDomain).map((n) => n.slice(0, n.length - ROLE_DOMAIN.length - 1));
  const cns = commonNames(cert.subject);
  if (roles.length !== 1 || !ROLES.includes(roles[0]) || cns.length !== 1 || cns[0] !== roles[0]) return null;
  return roles[0];
}

function describeName(name) {
  return name.typesAndValues.map((tv) => `${tv.type}=${tv.value.valueBlock.value}`).join(',');
}

let pkijsModule = null;

async function loadPkijs(given) {
  if (given) return given;
  if (!pkijsModule) {
    try {
      pkijsModule = await import('pkijs');
    } catch (err) {
      throw new PartyKeyError(
        "checking party keys against a CA needs PKI.js: `npm ci` in clients/js (Node), an import map for 'pkijs' " +
          '(browsers), or pass the module as the pkijs option; or pin the keys\' fingerprints instead',
        { cause: err },
      );
    }
  }
  return pkijsModule;
}

/**
 * Check that `proof.publicKey` is party `proof.rank`'s sealing key under the CA certificate `caPem`;
 * PartyKeyError says why not. proof: {rank, publicKey: Uint8Array, certificate: PEM string, signature: Uint8Array (DER)}.
 * options.now (a Date) replaces the current time; options.pkijs a loaded PKI.js module.
 */
export async function verifyPartyKey(proof, caPem, options = {}) {
  const who = `party ${proof.rank}`;
  const role = partyRole(proof.rank);
  const publicKey = toBytes(proof.publicKey, 'public key');
  if (publicKey.length !== 32) throw new PartyKeyError(`${who}: the sealing key has ${publicKey.length} bytes, expected 32`);
  const signature = proof.signature ? toBytes(proof.signature, 'signature') : new Uint8Array(0);
  if (!proof.certificate || signature.length === 0) {
    throw new PartyKeyError(`${who}: the coordinator gave no certificate or signature for the sealing key (a party without TLS?)`);
  }
  const pkijs = await loadPkijs(options.pkijs);
  const { cert: ca } = parseCertificate(pkijs, caPem, `${who}: the CA`);
  const { cert } = parseCertificate(pkijs, proof.certificate, who);

  // Issued directly by the CA: the issuer names the CA's subject, and the CA's key signed the certificate's TBS bytes.
  let issued = false;
  try {
    issued = cert.issuer.isEqual(ca.subject) && (await cert.verify(ca));
  } catch {
    issued = false;
  }
  if (!issued) throw new PartyKeyError(`${who}: the certificate was not issued by the given CA (${describeName(ca.subject)})`);

  const now = options.now instanceof Date ? options.now : new Date();
  const notBefore = cert.notBefore.value;
  const notAfter = cert.notAfter.value;
  if (!(notBefore.getTime() <= now.getTime() && now.getTime() <= notAfter.getTime())) {
    throw new PartyKeyError(`${who}: the certificate is not valid now (valid ${notBefore.toISOString()} to ${notAfter.toISOString()})`);
  }
  const named = certRole(cert);
  if (named !== role) throw new PartyKeyError(`${who}: the certificate names role ${JSON.stringify(named)}, not ${JSON.stringify(role)}`);

  let key;
  try {
    const spki = cert.subjectPublicKeyInfo.toSchema().toBER(false);
    key = await subtle().importKey('spki', spki, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  } catch (err) {
    throw new PartyKeyError(`${who}: the certificate's key is not an ECDSA P-256 key`, { cause: err });
  }
  let ok = false;
  try {
    ok = await subtle().verify({ name: 'ECDSA', hash: 'SHA-256' }, key, ecdsaDerToRaw(signature), keyStatement(proof.rank, publicKey));
  } catch {
    ok = false;
  }
  if (!ok) throw new PartyKeyError(`${who}: the sealing key is not signed by the party's certificate key (substituted key?)`);
}

/** Whether a host (a URL's hostname, brackets allowed) is a loopback address: 127.0.0.0/8, ::1 or localhost. */
export function isLoopback(host) {
  let h = String(host).trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h === 'localhost' || h === 'localhost.' || h === 'ip6-localhost') return true;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  if (v4) return v4.slice(1).every((p) => Number(p) <= 255 && (p === '0' || !p.startsWith('0'))) && Number(v4[1]) === 127;
  return h === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(h) || /^(0{1,4}:){1,6}:0{0,3}1$/.test(h);
}
