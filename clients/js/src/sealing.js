// Sealing shares between a client and a party: X25519 + HKDF-SHA256 + AES-256-GCM, bound to their context.
// The byte-for-byte twin of the Python module mpcvit/sealing.py (clients/js/test/vectors.json proves it):
//
//   key  = HKDF-SHA256(ikm = X25519(sk, pk), salt = none, info = "mpcvit-seal-v2" | "|" | direction | "|"
//                      | client public key | party public key), 32 bytes
//   aad  = for each of (request id, model, rank as one byte, direction): u32 LE length | UTF-8 bytes,
//          then u32 LE number of dimensions | each dimension as i64 LE | dtype ("int64")
//   box  = AES-256-GCM(key, nonce = 12 random bytes, plaintext = the int64 values little-endian, aad),
//          ciphertext with the 16-byte tag appended
//
// WebCrypto only (globalThis.crypto.subtle): browsers in a secure context, Node 20+.

export const SEAL_INFO = 'mpcvit-seal-v2';
export const NONCE_BYTES = 12;
export const KEY_BYTES = 32;
export const MAX_SEALED_ELEMENTS = 1 << 24;
export const DIRECTIONS = Object.freeze(['input', 'output']);
export const DTYPES = Object.freeze(['int64']);

// PKCS#8 wrapping of a raw X25519 private key (RFC 8410): WebCrypto imports private keys only this way (or JWK).
const X25519_PKCS8_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const encoder = new TextEncoder();
const B64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A sealed box does not open (wrong key, wrong context, tampered, or malformed), or cannot be made. */
export class SealError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'SealError';
  }
}

/** globalThis.crypto.subtle, or a clear error where there is none (an http:// page that is not localhost). */
export function subtle() {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) {
    throw new Error('WebCrypto (globalThis.crypto.subtle) is missing: use Node 20+ or a browser page served over https (or localhost)');
  }
  return s;
}

// -- bytes -----------------------------------------------------------------------------------------

export function utf8(text) {
  if (typeof text !== 'string') throw new TypeError(`expected a string, got ${typeof text}`);
  if (typeof text.isWellFormed === 'function' ? !text.isWellFormed() : /[\uD800-\uDFFF]/u.test(text)) {
    throw new SealError('a string with a lone surrogate has no UTF-8 encoding');
  }
  return encoder.encode(text);
}

export function concatBytes(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function toBytes(data, what = 'bytes') {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(`${what}: expected a Uint8Array, got ${Object.prototype.toString.call(data)}`);
}

/** Standard base64 with padding (Python's base64.b64encode). */
export function b64encode(data) {
  const bytes = toBytes(data);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Standard base64 with padding, strictly (what the coordinator's schema accepts). */
export function b64decode(text, what = 'base64') {
  if (typeof text !== 'string' || !B64_PATTERN.test(text)) throw new SealError(`${what}: not standard base64`);
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function b64urlDecode(text) {
  const std = text.replace(/-/g, '+').replace(/_/g, '/');
  return b64decode(std + '='.repeat((4 - (std.length % 4)) % 4));
}

export function toHex(data) {
  return Array.from(toBytes(data), (b) => b.toString(16).padStart(2, '0')).join('');
}

export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// -- context ---------------------------------------------------------------------------------------

/** What a box is for: bound into its key (direction) and its associated data (all of it). */
export class BoxContext {
  constructor(requestId, model, rank, direction) {
    if (typeof requestId !== 'string' || typeof model !== 'string') throw new SealError('request id and model are strings');
    if (!DIRECTIONS.includes(direction)) throw new SealError(`direction must be one of input, output; got ${direction}`);
    if (rank !== 0 && rank !== 1) throw new SealError(`rank must be 0 or 1, got ${rank}`);
    this.requestId = requestId;
    this.model = model;
    this.rank = rank;
    this.direction = direction;
    Object.freeze(this);
  }

  encode() {
    const fields = [utf8(this.requestId), utf8(this.model), Uint8Array.of(this.rank), utf8(this.direction)];
    return concatBytes(...fields.flatMap((f) => [u32(f.length), f]));
  }

  describe() {
    return `request ${this.requestId}, model ${this.model}, party ${this.rank}, ${this.direction}`;
  }
}

function u32(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, true);
  return out;
}

function checkShape(shape) {
  if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s))) throw new SealError('shape must be a list of integers');
  if (shape.some((s) => s < 0)) throw new SealError('negative dimension in shape');
  return shape.reduce((n, s) => n * s, 1);
}

/** The associated data of a box: its context, then its public shape and dtype. */
export function boxAad(context, shape, dtype = 'int64') {
  checkShape(shape);
  const dims = new Uint8Array(8 * shape.length);
  const view = new DataView(dims.buffer);
  shape.forEach((s, i) => view.setBigInt64(8 * i, BigInt(s), true));
  return concatBytes(context.encode(), u32(shape.length), dims, utf8(dtype));
}

// -- keys ------------------------------------------------------------------------------------------

/** A fresh one-time X25519 key pair; the private key is a non-extractable CryptoKey. */
export async function generateKeyPair() {
  const pair = await subtle().generateKey({ name: 'X25519' }, false, ['deriveBits']);
  const publicKey = new Uint8Array(await subtle().exportKey('raw', pair.publicKey));
  return { privateKey: pair.privateKey, publicKey };
}

/** A key pair from 32 raw private bytes (a party's key file, or fixed test keys). */
export async function keyPairFromPrivate(privateBytes) {
  const raw = toBytes(privateBytes, 'private key');
  if (raw.length !== KEY_BYTES) throw new SealError('X25519 keys are 32 raw bytes');
  const key = await subtle().importKey('pkcs8', concatBytes(X25519_PKCS8_PREFIX, raw), { name: 'X25519' }, true, ['deriveBits']);
  const jwk = await subtle().exportKey('jwk', key);
  const privateKey = await subtle().importKey('pkcs8', concatBytes(X25519_PKCS8_PREFIX, raw), { name: 'X25519' }, false, ['deriveBits']);
  return { privateKey, publicKey: b64urlDecode(jwk.x) };
}

/**
 * The AES-256-GCM key of one direction between a client key and a party key, as raw bytes.
 * `own` is {privateKey: CryptoKey, publicKey: Uint8Array}; `ownIsClient` says which of the two public keys
 * comes first in the HKDF info.
 */
export async function deriveBoxKey(own, peerPublic, direction, ownIsClient) {
  const peer = toBytes(peerPublic, 'public key');
  const ownPublic = toBytes(own.publicKey, 'public key');
  if (peer.length !== KEY_BYTES || ownPublic.length !== KEY_BYTES) throw new SealError('X25519 keys are 32 raw bytes');
  if (!DIRECTIONS.includes(direction)) throw new SealError(`direction must be one of input, output; got ${direction}`);
  let shared;
  try {
    const peerKey = await subtle().importKey('raw', peer, { name: 'X25519' }, false, []);
    shared = new Uint8Array(await subtle().deriveBits({ name: 'X25519', public: peerKey }, own.privateKey, 256));
  } catch (err) {
    throw new SealError('X25519 failed: the peer key is invalid or of low order', { cause: err });
  }
  if (shared.every((b) => b === 0)) throw new SealError('X25519 gave the all-zero secret: the peer key is of low order');
  const [clientPublic, partyPublic] = ownIsClient ? [ownPublic, peer] : [peer, ownPublic];
  const info = concatBytes(utf8(SEAL_INFO), utf8('|'), utf8(direction), utf8('|'), clientPublic, partyPublic);
  const ikm = await subtle().importKey('raw', shared, 'HKDF', false, ['deriveBits']);
  const bits = await subtle().deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info }, ikm, 256);
  return new Uint8Array(bits);
}

// -- int64 tensors ---------------------------------------------------------------------------------

function int64Bytes(data) {
  if (LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(8 * data.length);
  const view = new DataView(out.buffer);
  data.forEach((v, i) => view.setBigInt64(8 * i, v, true));
  return out;
}

function int64FromBytes(bytes) {
  const copy = bytes.slice(); // aligned, owned
  if (LITTLE_ENDIAN) return new BigInt64Array(copy.buffer, 0, copy.length / 8);
  const view = new DataView(copy.buffer);
  return BigInt64Array.from({ length: copy.length / 8 }, (_, i) => view.getBigInt64(8 * i, true));
}

/**
 * Seal an int64 tensor {shape, data: BigInt64Array} for the holder of `peerPublic` (the client seals inputs,
 * a party outputs). `options._nonce` is for known-answer test vectors only: left out, the nonce is 12 fresh
 * random bytes (a nonce must never repeat under one key).
 */
export async function sealTensor(tensor, own, peerPublic, context, options = {}) {
  if (!(context instanceof BoxContext)) throw new SealError('context must be a BoxContext');
  if (!(tensor.data instanceof BigInt64Array)) throw new SealError('only int64 ring shares (BigInt64Array) are sealed');
  const shape = Array.from(tensor.shape);
  if (checkShape(shape) !== tensor.data.length) throw new SealError(`shape ${JSON.stringify(shape)} does not hold ${tensor.data.length} values`);
  let nonce;
  if (options._nonce !== undefined) {
    nonce = toBytes(options._nonce, 'nonce');
    if (nonce.length !== NONCE_BYTES) throw new SealError('nonce must be 12 bytes');
  } else {
    nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  }
  const rawKey = await deriveBoxKey(own, peerPublic, context.direction, context.direction === 'input');
  const key = await subtle().importKey('raw', rawKey, 'AES-GCM', false, ['encrypt']);
  const ct = await subtle().encrypt(
    { name: 'AES-GCM', iv: nonce, additionalData: boxAad(context, shape, 'int64'), tagLength: 128 },
    key,
    int64Bytes(tensor.data),
  );
  return { shape, dtype: 'int64', nonce: Uint8Array.from(nonce), ciphertext: new Uint8Array(ct) };
}

/** Open a sealed box in `context`; SealError if it does not open there or does not match its shape. */
export async function openTensor(sealed, own, peerPublic, context) {
  if (!(context instanceof BoxContext)) throw new SealError('context must be a BoxContext');
  if (!DTYPES.includes(sealed.dtype)) throw new SealError(`unsupported dtype ${JSON.stringify(sealed.dtype)}`);
  const shape = Array.from(sealed.shape);
  const count = checkShape(shape);
  if (count > MAX_SEALED_ELEMENTS) throw new SealError(`sealed tensor too large: ${count} elements`);
  const nonce = toBytes(sealed.nonce, 'nonce');
  if (nonce.length !== NONCE_BYTES) throw new SealError('nonce must be 12 bytes');
  const rawKey = await deriveBoxKey(own, peerPublic, context.direction, context.direction === 'output');
  const key = await subtle().importKey('raw', rawKey, 'AES-GCM', false, ['decrypt']);
  let data;
  try {
    data = new Uint8Array(await subtle().decrypt(
      { name: 'AES-GCM', iv: nonce, additionalData: boxAad(context, shape, sealed.dtype), tagLength: 128 },
      key,
      toBytes(sealed.ciphertext, 'ciphertext'),
    ));
  } catch (err) {
    throw new SealError(
      `sealed share does not open as ${context.describe()}: sealed for another party, request, model or direction ` +
        '(swapped, reflected or re-targeted), with another key, or tampered',
      { cause: err },
    );
  }
  if (data.length !== 8 * count) throw new SealError(`sealed payload has ${data.length} bytes, shape ${JSON.stringify(shape)} needs ${8 * count}`);
  return { shape, data: int64FromBytes(data) };
}

// -- fixed point and additive shares on Z_2^64 ------------------------------------------------------

const TWO_63 = 2 ** 63;

/** Round half to even (torch.round, numpy.round): 0.5 -> 0, 1.5 -> 2, -2.5 -> -2. */
export function roundHalfEven(v) {
  const f = Math.floor(v);
  const d = v - f; // exact
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** round(x * 2^bits) as int64, x read as float64 (as Python's share_fixed_point reads its float32 input). */
export function encodeFixedPoint(values, precisionBits = 16) {
  if (!Number.isInteger(precisionBits) || precisionBits < 0 || precisionBits > 62) throw new RangeError('precision bits must be 0..62');
  const scale = 2 ** precisionBits;
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = roundHalfEven(Number(values[i]) * scale);
    if (!Number.isFinite(v) || v < -TWO_63 || v >= TWO_63) throw new RangeError(`value ${values[i]} does not fit 64-bit fixed point`);
    out[i] = BigInt(v);
  }
  return out;
}

/** n uniform elements of Z_2^64 from crypto.getRandomValues (at most 65536 bytes per call). */
export function randomRing(n) {
  const out = new BigInt64Array(n);
  for (let at = 0; at < n; at += 8192) globalThis.crypto.getRandomValues(out.subarray(at, Math.min(n, at + 8192)));
  return out;
}

/**
 * Encode `x` in fixed point and split it into two additive shares on Z_2^64: share0 = r uniform,
 * share1 = enc(x) - r (mod 2^64). `options._mask` (a BigInt64Array) replaces r for test vectors only.
 */
export function shareFixedPoint(x, precisionBits = 16, options = {}) {
  const enc = encodeFixedPoint(x.data, precisionBits);
  let r;
  if (options._mask !== undefined) {
    if (!(options._mask instanceof BigInt64Array) || options._mask.length !== enc.length) throw new SealError('_mask: a BigInt64Array as long as the input');
    r = BigInt64Array.from(options._mask);
  } else {
    r = randomRing(enc.length);
  }
  const s1 = new BigInt64Array(enc.length);
  for (let i = 0; i < enc.length; i++) s1[i] = BigInt.asIntN(64, enc[i] - r[i]);
  const shape = Array.from(x.shape);
  return [{ shape, data: r }, { shape: shape.slice(), data: s1 }];
}

/** Add two shares on Z_2^64 and decode the fixed-point values (float64, as Python's reconstruct_fixed_point). */
export function reconstructFixedPoint(share0, share1, precisionBits = 16) {
  if (share0.data.length !== share1.data.length) throw new SealError('shares of different lengths');
  const scale = 2 ** precisionBits;
  const out = new Float64Array(share0.data.length);
  for (let i = 0; i < out.length; i++) out[i] = Number(BigInt.asIntN(64, share0.data[i] + share1.data[i])) / scale;
  return out;
}
