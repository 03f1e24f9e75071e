// The client SDK: classify an image privately through the REST coordinator (the twin of mpcvit/client.py).
//
// 1. GET /v1/models: the model's input shape (C, H, W), class names and fixed-point precision f;
//    GET /v1/parties/keys: each party's X25519 key with its certificate and signature, checked before
//    anything is sealed (a CA certificate, pinned fingerprints, or keys given outright; else refused).
// 2. The image is converted and resized to (C, H, W) in [0, 1] (preprocess.js), encoded e = round(x * 2^f)
//    and split into e = s0 + s1 (mod 2^64), s0 uniform from crypto.getRandomValues.
// 3. A one-time X25519 key pair; share i is sealed to party i, bound to (request id, model, i, "input");
//    both boxes and the one-time public key are POSTed to /v1/classify.
// 4. The reply holds each party's sealed share of the fixed-point logits: opened with the one-time key,
//    added, decoded, and refused if any |logit| > 2^20 or is not finite (the integrity net).
// The coordinator relays sealed boxes only: it sees neither the image nor the logits.

import { PartyKeyError, checkPinned, isLoopback, verifyPartyKey } from './pki.js';
import { ImageError, preprocess } from './preprocess.js';
import {
  BoxContext, SealError, b64decode, b64encode, generateKeyPair, openTensor, reconstructFixedPoint, sealTensor, shareFixedPoint, toBytes,
} from './sealing.js';

export const DEFAULT_PRECISION_BITS = 16;
export const PLAUSIBLE_LOGIT = 2 ** 20; // beyond it an opened logit is garbage (mpcvit/client.py, "Integrity net")
export const DEFAULT_RETRIES = 2;
export const DEFAULT_TIMEOUT_MS = 60000;

/** The opened logits are outside any plausible range: the parties computed on material that did not match. */
export class ImplausibleOutput extends Error {
  constructor(message) {
    super(message);
    this.name = 'ImplausibleOutput';
  }
}

/** The coordinator answered with an error status. */
export class ServerError extends Error {
  constructor(statusCode, detail) {
    super(`coordinator answered ${statusCode}: ${detail}`);
    this.name = 'ServerError';
    this.statusCode = statusCode;
    this.detail = detail;
  }
}

export function newRequestId() {
  return globalThis.crypto.randomUUID().replace(/-/g, '');
}

// -- sealing a request and opening its answer --------------------------------------------------------

/**
 * Encode `x` ({shape, data: Float32Array}) in fixed point, split it into two additive shares and seal share i
 * to party i. Returns {requestId, keyPair, shares: [Sealed, Sealed], model}; keep it to open the answer.
 * Test vectors only: options._keyPair, options._mask, options._nonces replace the fresh randomness.
 */
export async function sealInput(x, partyKeys, precisionBits = DEFAULT_PRECISION_BITS, options = {}) {
  if (!partyKeys || partyKeys.length !== 2) throw new Error(`need the public keys of exactly 2 parties, got ${partyKeys ? partyKeys.length : 0}`);
  if (typeof options.model !== 'string') throw new Error('sealInput: options.model (the model name) is required');
  const requestId = options.requestId || newRequestId();
  const keyPair = options._keyPair || (await generateKeyPair());
  const parts = shareFixedPoint(x, precisionBits, options._mask !== undefined ? { _mask: options._mask } : {});
  const shares = [];
  for (const rank of [0, 1]) {
    const nonce = options._nonces ? { _nonce: options._nonces[rank] } : {};
    shares.push(await sealTensor(parts[rank], keyPair, partyKeys[rank], new BoxContext(requestId, options.model, rank, 'input'), nonce));
  }
  return { requestId, keyPair, shares, model: options.model };
}

/** ``logits`` if every one is finite and within +-bound; else ImplausibleOutput (never returned). */
export function checkPlausible(logits, bound = PLAUSIBLE_LOGIT) {
  let largest = 0;
  for (const v of logits) {
    const a = Math.abs(Number(v));
    if (Number.isNaN(a)) {
      largest = NaN;
      break;
    }
    if (a > largest) largest = a;
  }
  if (!Number.isFinite(largest) || largest > bound) {
    throw new ImplausibleOutput(
      `the opened logits reach ${largest.toPrecision(3)}, beyond any plausible ${bound.toPrecision(3)}: the parties' answer is ` +
        'garbage (their material did not match); it was not used',
    );
  }
  return logits;
}

/** Both parties' sealed output shares of `request`, opened with its one-time key, each in its own context. */
async function openBoth(request, outputShares, partyKeys) {
  if (!outputShares || outputShares.length !== 2) throw new Error(`need 2 output shares, got ${outputShares ? outputShares.length : 0}`);
  const opened = [];
  for (const rank of [0, 1]) {
    const ctx = new BoxContext(request.requestId, request.model, rank, 'output');
    opened.push(await openTensor(outputShares[rank], request.keyPair, partyKeys[rank], ctx));
  }
  return opened;
}

/** Open each party's sealed logit share with the one-time key and add them: float64 logits (checked plausible). */
export async function openOutput(request, outputShares, partyKeys, precisionBits = DEFAULT_PRECISION_BITS) {
  const [y0, y1] = await openBoth(request, outputShares, partyKeys);
  if (y0.shape.length !== y1.shape.length || y0.shape.some((s, i) => s !== y1.shape[i])) {
    throw new Error(`output shares disagree in shape: (${y0.shape}) vs (${y1.shape})`);
  }
  return checkPlausible(reconstructFixedPoint(y0, y1, precisionBits));
}

/**
 * A `label` / `topk:K` answer: open both parties' sealed shares of the class indices and add them on Z_2^64.
 * The integrity net for indices (as mpcvit.client.open_indices): each must lie in [0, numClasses) and none may
 * repeat, else ImplausibleOutput.
 */
export async function openIndices(request, outputShares, partyKeys, numClasses, count) {
  const [y0, y1] = await openBoth(request, outputShares, partyKeys);
  if (y0.shape.length !== 1 || y1.shape.length !== 1 || y0.shape[0] !== y1.shape[0] || (count !== undefined && y0.shape[0] !== count)) {
    throw new Error(`index shares of shape (${y0.shape}) / (${y1.shape}), expected (${count},)`);
  }
  const indices = Array.from(y0.data, (v, i) => Number(BigInt.asIntN(64, v + y1.data[i])));
  if (indices.some((i) => !(i >= 0 && i < numClasses)) || new Set(indices).size !== indices.length) {
    throw new ImplausibleOutput(`the opened class indices ${JSON.stringify(indices.slice(0, 8))} are not ${indices.length} distinct ` +
      `classes of ${numClasses}: the parties' answer is garbage (their material did not match); it was not used`);
  }
  return indices;
}

/** The number of indices an output policy reveals: null for "logits", 1 for "label", K for "topk:K". */
export function policyIndices(policy) {
  if (policy === undefined || policy === null || policy === '' || policy === 'logits') return null;
  if (policy === 'label') return 1;
  const m = /^topk:([1-9][0-9]*)$/.exec(String(policy));
  if (!m) throw new Error(`the coordinator's answer names an unknown output policy ${JSON.stringify(policy)}`);
  return Number(m[1]);
}

// -- JSON wire format (standard base64 for bytes) -----------------------------------------------------

export function sealedToJson(s) {
  return { shape: Array.from(s.shape), dtype: s.dtype, nonce: b64encode(s.nonce), ciphertext: b64encode(s.ciphertext) };
}

export function sealedFromJson(d) {
  if (!d || typeof d !== 'object' || !Array.isArray(d.shape)) throw new SealError('a sealed tensor is {shape, dtype, nonce, ciphertext}');
  const shape = d.shape.map((v) => {
    if (!Number.isSafeInteger(v)) throw new SealError('shape must be a list of integers');
    return v;
  });
  return { shape, dtype: String(d.dtype), nonce: b64decode(d.nonce, 'nonce'), ciphertext: b64decode(d.ciphertext, 'ciphertext') };
}

/** The /v1/classify body (PrivateClassifyRequest). */
export function requestToJson(model, req, deadlineUnixMs) {
  const body = {
    model,
    request_id: req.requestId,
    client_public_key: b64encode(req.keyPair.publicKey),
    shares: req.shares.map(sealedToJson),
  };
  if (deadlineUnixMs !== undefined && deadlineUnixMs !== null) body.deadline_unix_ms = deadlineUnixMs;
  return body;
}

export function softmax(logits) {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const e = Array.from(logits, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/** The outcome of one private classification, from the model entry and the opened logits. */
export function makeResult(info, requestId, logits, costs = {}, queueSeconds = 0, batchSize = 1, seconds = 0) {
  const values = Array.from(logits, Number);
  const probabilities = softmax(values);
  let index = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[index]) index = i; // the first maximum, as torch.argmax
  const classes = Array.isArray(info.classes) ? info.classes : [];
  if (!probabilities.every(Number.isFinite)) throw new Error('the opened logits are not finite');
  return {
    model: info.name,
    requestId,
    classIndex: index,
    className: index < classes.length ? String(classes[index]) : String(index),
    confidence: probabilities[index],
    logits: values,
    probabilities,
    costs,
    queueSeconds: Number(queueSeconds),
    batchSize: Number(batchSize),
    seconds,
  };
}

// -- the SDK ------------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * new PrivateClient(serverUrl, options).classify(image, {model}) -> Result.
 * How the parties' sealing keys are trusted (one is required): options.ca (the deployment's CA certificate,
 * PEM), options.pins (sha256:<hex> of party 0's and party 1's key), options.partyKeys (the keys themselves),
 * or options.trustCoordinator (a loopback coordinator only).
 */
export class PrivateClient {
  constructor(serverUrl = 'http://127.0.0.1:8000', options = {}) {
    const {
      token, timeoutMs = DEFAULT_TIMEOUT_MS, partyKeys, ca, pins, trustCoordinator = false, fetch, pkijs, retries = DEFAULT_RETRIES, now,
    } = options;
    if (pins !== undefined && pins !== null && (!Array.isArray(pins) || pins.length !== 2)) {
      throw new Error(`pins: give one fingerprint per party (2), got ${Array.isArray(pins) ? pins.length : typeof pins}`);
    }
    if (partyKeys !== undefined && partyKeys !== null) {
      if (partyKeys.length !== 2) throw new Error(`partyKeys: give party 0's and party 1's key, got ${partyKeys.length}`);
      this._givenKeys = partyKeys.map((k) => (typeof k === 'string' ? b64decode(k, 'party key') : toBytes(k, 'party key')));
    } else {
      this._givenKeys = null;
    }
    this.serverUrl = String(serverUrl).replace(/\/+$/, '');
    const host = new URL(this.serverUrl).hostname;
    if (trustCoordinator && !isLoopback(host)) {
      throw new Error(`trustCoordinator is accepted only for a loopback coordinator, not ${this.serverUrl}; give ca or pins`);
    }
    this._ca = ca === undefined || ca === null ? null : typeof ca === 'string' ? ca : new TextDecoder().decode(toBytes(ca, 'ca'));
    this._pins = pins || null;
    this._trustCoordinator = Boolean(trustCoordinator);
    this._headers = token ? { Authorization: `Bearer ${token}` } : {};
    this._fetch = fetch || globalThis.fetch.bind(globalThis);
    this._pkijs = pkijs;
    this._now = now; // a function giving the Date at which certificates must be valid (tests); default: the clock
    this.timeoutMs = timeoutMs;
    this.retries = retries;
    this.implausible = 0; // answers refused by the integrity net
    this.retried = 0; // requests sent again after a 503
    this._models = null;
  }

  async _request(method, path, body) {
    const init = { method, headers: { ...this._headers } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (this.timeoutMs && typeof AbortSignal !== 'undefined' && AbortSignal.timeout) init.signal = AbortSignal.timeout(this.timeoutMs);
    return this._fetch(this.serverUrl + path, init);
  }

  static async _check(response) {
    const text = await response.text();
    if (response.status >= 400) {
      let detail = text;
      try {
        const parsed = JSON.parse(text);
        if (parsed && typeof parsed === 'object' && 'detail' in parsed) detail = typeof parsed.detail === 'string' ? parsed.detail : JSON.stringify(parsed.detail);
      } catch {
        // not JSON: the text is the detail
      }
      throw new ServerError(response.status, detail);
    }
    return JSON.parse(text);
  }

  async _get(path) {
    return PrivateClient._check(await this._request('GET', path));
  }

  async _postRetrying(body, deadlineUnixMs) {
    for (let attempt = 0; attempt <= this.retries; attempt++) {
      const r = await this._request('POST', '/v1/classify', body);
      if (r.status !== 503 || attempt === this.retries) return PrivateClient._check(r);
      let wait = Number.parseFloat(r.headers.get('retry-after') ?? '1');
      wait = Number.isFinite(wait) ? Math.min(wait, 5) : 1;
      if (deadlineUnixMs !== undefined && deadlineUnixMs !== null && Date.now() + wait * 1000 >= deadlineUnixMs) return PrivateClient._check(r);
      await r.text().catch(() => '');
      this.retried += 1;
      await sleep(Math.max(0, wait) * 1000);
    }
    throw new Error('unreachable');
  }

  /** The coordinator's models by name (input shape, classes, precision, ...); cached unless `refresh`. */
  async models(refresh = false) {
    if (this._models === null || refresh) {
      const listed = await this._get('/v1/models');
      this._models = Object.fromEntries(listed.models.map((m) => [m.name, m]));
    }
    return this._models;
  }

  /** The parties' sealing keys, verified; PartyKeyError says why one is refused. */
  async partyKeys() {
    if (this._givenKeys) return this._givenKeys.slice();
    if (this._ca === null && this._pins === null && !this._trustCoordinator) {
      throw new PartyKeyError(
        "refusing to use the parties' keys as the coordinator relays them: give the deployment's CA certificate (ca) " +
          "or the keys' fingerprints (pins)",
      );
    }
    const listed = new Map();
    for (const k of (await this._get('/v1/parties/keys')).parties) listed.set(Number(k.rank), k);
    const ranks = [...listed.keys()].sort();
    if (ranks.length !== 2 || ranks[0] !== 0 || ranks[1] !== 1) throw new PartyKeyError(`the coordinator listed keys for ranks [${ranks}], expected 0 and 1`);
    const keys = [];
    for (const rank of [0, 1]) {
      const entry = listed.get(rank);
      const proof = {
        rank,
        publicKey: b64decode(entry.public_key, `party ${rank}'s key`),
        certificate: String(entry.certificate || ''),
        signature: entry.signature ? b64decode(entry.signature, `party ${rank}'s signature`) : new Uint8Array(0),
      };
      if (this._ca !== null) await verifyPartyKey(proof, this._ca, { pkijs: this._pkijs, now: this._now ? this._now() : undefined });
      if (this._pins !== null) await checkPinned(rank, proof.publicKey, this._pins[rank]);
      keys.push(proof.publicKey);
    }
    return keys;
  }

  async _pickModel(model) {
    const models = await this.models();
    const names = Object.keys(models).sort();
    if (model === undefined || model === null) {
      if (names.length === 0) throw new ServerError(503, 'the coordinator serves no model');
      model = names[0];
    }
    if (!Object.hasOwn(models, model)) throw new Error(`unknown model ${JSON.stringify(model)}; the coordinator serves: ${names.join(', ')}`);
    return models[model];
  }

  /** Preprocess, encode, share, seal, send, open: {classIndex, className, confidence, probabilities, logits, costs, ...}. */
  async classify(image, options = {}) {
    const { model, deadlineUnixMs } = options;
    const info = await this._pickModel(model);
    const keys = await this.partyKeys();
    const bits = Number(info.precision_bits) || DEFAULT_PRECISION_BITS;
    const x = preprocess(image, info.input_shape);
    const t0 = typeof performance !== 'undefined' ? performance.now() : Date.now();
    let req;
    let body;
    let logits;
    let indices = null;
    for (let attempt = 0; attempt < 2; attempt++) { // a second, freshly sealed request only after an implausible answer
      req = await sealInput(x, keys, bits, { model: info.name });
      body = await this._postRetrying(requestToJson(info.name, req, deadlineUnixMs), deadlineUnixMs);
      try {
        const boxes = body.output_shares.map(sealedFromJson);
        const count = policyIndices(body.output_policy);
        if (count !== null) {
          const classes = Array.isArray(info.classes) ? info.classes : [];
          indices = await openIndices(req, boxes, keys, classes.length || Number(info.num_classes) || 0, count);
          break;
        }
        logits = await openOutput(req, boxes, keys, bits);
        break;
      } catch (err) {
        if (!(err instanceof ImplausibleOutput)) throw err;
        this.implausible += 1;
        if (attempt === 1) throw err;
      }
    }
    const seconds = ((typeof performance !== 'undefined' ? performance.now() : Date.now()) - t0) / 1000;
    if (indices !== null) {
      // only what the model owner's policy reveals: the class (label) or the K best classes (topk:K), no logits
      const classes = Array.isArray(info.classes) ? info.classes : [];
      const name = (i) => (i < classes.length ? String(classes[i]) : String(i));
      return {
        model: info.name, requestId: req.requestId, outputPolicy: String(body.output_policy), classIndex: indices[0],
        className: name(indices[0]), topK: indices.map((i) => ({ index: i, name: name(i) })), confidence: null, logits: [],
        probabilities: [], costs: body.costs || {}, queueSeconds: Number(body.queue_seconds || 0), batchSize: Number(body.batch_size || 1),
        seconds,
      };
    }
    return makeResult(info, req.requestId, logits, body.costs || {}, body.queue_seconds || 0, body.batch_size || 1, seconds);
  }
}

export { ImageError, PartyKeyError, SealError };
