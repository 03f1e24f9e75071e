// The JavaScript SDK against the Python SDK's known-answer vectors (test/vectors.json, made by make_vectors.py).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  BoxContext, ImplausibleOutput, SealError, b64decode, b64encode, boxAad, checkPlausible, deriveBoxKey, encodeFixedPoint,
  keyFingerprint, keyPairFromPrivate, makeResult, openOutput, openTensor, preprocess, reconstructFixedPoint, requestToJson,
  sealInput, sealTensor, sealedFromJson, sealedToJson, shareFixedPoint,
} from '../src/index.js';

const V = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8'));
const hex = (b) => Buffer.from(b).toString('hex');
const big = (list) => BigInt64Array.from(list, (s) => BigInt(s));
const ctxOf = (c) => new BoxContext(c.request_id, c.model, c.rank, c.direction);

async function keys() {
  return {
    client: await keyPairFromPrivate(b64decode(V.keys.client_private)),
    parties: [await keyPairFromPrivate(b64decode(V.keys.party_private[0])), await keyPairFromPrivate(b64decode(V.keys.party_private[1]))],
  };
}

test('keys: the public keys and fingerprints derived here are the Python ones', async () => {
  const k = await keys();
  assert.equal(b64encode(k.client.publicKey), V.keys.client_public);
  for (const r of [0, 1]) {
    assert.equal(b64encode(k.parties[r].publicKey), V.keys.party_public[r]);
    assert.equal(await keyFingerprint(k.parties[r].publicKey), V.keys.party_fingerprints[r]);
  }
});

test('fixed point: round half to even, the additive split and the decoding agree bit for bit', () => {
  for (const c of V.fixed_point) {
    const x = { shape: [c.x.length], data: Float32Array.from(c.x) };
    assert.deepEqual(Array.from(encodeFixedPoint(x.data, c.precision_bits), String), c.encoded, `bits ${c.precision_bits}`);
    const [s0, s1] = shareFixedPoint(x, c.precision_bits, { _mask: big(c.share0) });
    assert.deepEqual(Array.from(s0.data, String), c.share0);
    assert.deepEqual(Array.from(s1.data, String), c.share1);
    assert.deepEqual(Array.from(reconstructFixedPoint(s0, s1, c.precision_bits)), c.decoded);
  }
});

test('fixed point: fresh shares are uniform-looking and still add up', () => {
  const x = { shape: [3, 20000], data: Float32Array.from({ length: 60000 }, (_, i) => (i % 97) / 96) };
  const [s0, s1] = shareFixedPoint(x, 16);
  const [t0] = shareFixedPoint(x, 16);
  assert.notDeepEqual(Array.from(s0.data.subarray(0, 8)), Array.from(t0.data.subarray(0, 8)));
  assert.ok(s0.data.subarray(50000).some((v) => v !== 0n), 'the mask fills the tail too (getRandomValues in chunks)');
  assert.deepEqual(Array.from(reconstructFixedPoint(s0, s1, 16)), Array.from(x.data, (v) => Math.round(v * 65536) / 65536));
});

test('boxes: same keys, nonce and values give the Python box byte for byte; Python boxes open here', async () => {
  const k = await keys();
  for (const c of V.boxes) {
    const ctx = ctxOf(c.context);
    const party = k.parties[c.context.rank];
    assert.equal(b64encode(boxAad(ctx, c.sealed.shape)), c.aad, c.name);
    const [own, peer, ownIsClient] = c.context.direction === 'input' ? [k.client, party.publicKey, true] : [party, k.client.publicKey, false];
    assert.equal(hex(await deriveBoxKey(own, peer, c.context.direction, ownIsClient)), c.key, c.name);
    const values = { shape: c.sealed.shape, data: big(c.values) };
    const box = await sealTensor(values, own, peer, ctx, { _nonce: b64decode(c.sealed.nonce) });
    assert.deepEqual(sealedToJson(box), c.sealed, c.name);
    const [opener, sender] = c.context.direction === 'input' ? [party, k.client.publicKey] : [k.client, party.publicKey];
    const opened = await openTensor(sealedFromJson(c.sealed), opener, sender, ctx);
    assert.deepEqual(opened.shape, c.sealed.shape);
    assert.deepEqual(Array.from(opened.data, String), c.values);
  }
});

test('boxes: another context, key or a flipped bit is refused', async () => {
  const k = await keys();
  const c = V.boxes.find((b) => b.name === 'input-0');
  const sealed = sealedFromJson(c.sealed);
  const ok = ctxOf(c.context);
  const open = (ctx, s = sealed, opener = k.parties[0]) => openTensor(s, opener, k.client.publicKey, ctx);
  await assert.rejects(open(new BoxContext('req-0002', ok.model, 0, 'input')), SealError);
  await assert.rejects(open(new BoxContext(ok.requestId, 'other', 0, 'input')), SealError);
  await assert.rejects(open(new BoxContext(ok.requestId, ok.model, 1, 'input')), SealError);
  await assert.rejects(open(new BoxContext(ok.requestId, ok.model, 0, 'output')), SealError);
  await assert.rejects(open(ok, sealed, k.parties[1]), SealError);
  const flipped = { ...sealed, ciphertext: Uint8Array.from(sealed.ciphertext) };
  flipped.ciphertext[5] ^= 1;
  await assert.rejects(open(ok, flipped), SealError);
  await assert.rejects(open(ok, { ...sealed, shape: [1, 4, 3] }), SealError);
  await assert.rejects(open(ok, { ...sealed, nonce: sealed.nonce.subarray(0, 11) }), /12 bytes/);
  await assert.rejects(open(ok, { ...sealed, dtype: 'float32' }), /unsupported dtype/);
  await assert.rejects(openTensor(sealed, k.parties[0], new Uint8Array(32), ok), SealError); // a low-order key
  assert.throws(() => new BoxContext('r', 'm', 2, 'input'), SealError);
  assert.throws(() => new BoxContext('r', 'm', 0, 'sideways'), SealError);
});

test('preprocess: arrays and RGBA buffers give the Python inputs (to float32 rounding)', () => {
  for (const c of V.preprocess) {
    const image = c.kind === 'rgba'
      ? { width: c.width, height: c.height, data: new Uint8ClampedArray(b64decode(c.rgba)) }
      : { shape: c.array_shape, data: Float32Array.from(c.array) };
    const out = preprocess(image, c.input_shape);
    assert.deepEqual(out.shape, c.input_shape, c.name);
    let worst = 0;
    out.data.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - c.expected[i])); });
    assert.ok(worst <= 2e-7, `${c.name}: differs from Python by ${worst}`);
  }
});

test('preprocess: nested arrays, flat arrays and bad input', () => {
  const c = V.preprocess.find((p) => p.name === 'hw-area');
  const [h, w] = c.array_shape;
  const nested = Array.from({ length: h }, (_, i) => c.array.slice(i * w, (i + 1) * w));
  const out = preprocess(nested, c.input_shape);
  out.data.forEach((v, i) => assert.ok(Math.abs(v - c.expected[i]) <= 2e-7));
  assert.equal(preprocess(new Float32Array(16).fill(0.5), [1, 4, 4]).data[3], 0.5);
  assert.throws(() => preprocess([[0.1, 2]], [1, 4, 4]), /\[0, 1\]/);
  assert.throws(() => preprocess([[0.1, NaN]], [1, 4, 4]), /finite/);
  assert.throws(() => preprocess([[0.1], [0.2, 0.3]], [1, 4, 4]), /rectangular/);
  assert.throws(() => preprocess({ shape: [2, 4, 4], data: new Float32Array(32) }, [1, 4, 4]), /C in \(1, 3\)/);
  assert.throws(() => preprocess(new Float32Array(15), [1, 4, 4]), /C\*H\*W/);
  assert.throws(() => preprocess({ width: 2, height: 2, data: new Uint8ClampedArray(15) }, [1, 4, 4]), /RGBA/);
  assert.throws(() => preprocess(new Float32Array(16), [2, 4, 4]), /channels/);
});

test('classify vectors: the request body is the Python one, and the Python reply opens to the Python result', async () => {
  const k = await keys();
  const c = V.classify;
  const x = preprocess({ shape: c.image_shape, data: Float32Array.from(c.image) }, c.model.input_shape);
  x.data.forEach((v, i) => assert.ok(Math.abs(v - c.preprocessed[i]) <= 2e-7));
  const exact = { shape: c.model.input_shape, data: Float32Array.from(c.preprocessed) };
  const partyKeys = k.parties.map((p) => p.publicKey);
  const req = await sealInput(exact, partyKeys, c.model.precision_bits, {
    model: c.model.name, requestId: c.request_body.request_id, _keyPair: k.client, _mask: big(c.input_mask),
    _nonces: c.input_nonces.map((n) => b64decode(n)),
  });
  assert.deepEqual(JSON.parse(JSON.stringify(requestToJson(c.model.name, req))), c.request_body);

  const logits = await openOutput(req, c.reply.output_shares.map(sealedFromJson), partyKeys, c.reply.precision_bits);
  const result = makeResult(c.model, req.requestId, logits, c.reply.costs, c.reply.queue_seconds, c.reply.batch_size, 0);
  assert.deepEqual(result.logits, c.result.logits);
  assert.equal(result.classIndex, c.result.class_index);
  assert.equal(result.className, c.result.class_name);
  assert.equal(result.confidence, result.probabilities[result.classIndex]);
  result.probabilities.forEach((p, i) => assert.ok(Math.abs(p - c.result.probabilities[i]) < 1e-15));
  assert.deepEqual(result.costs, c.result.costs);
  assert.equal(result.queueSeconds, c.result.queue_seconds);

  await assert.rejects(openOutput(req, c.implausible_reply.output_shares.map(sealedFromJson), partyKeys, 16), ImplausibleOutput);
  const swapped = [...c.reply.output_shares].reverse().map(sealedFromJson);
  await assert.rejects(openOutput(req, swapped, partyKeys, 16), SealError);
});

test('the integrity net refuses what Python refuses', () => {
  assert.equal(V.plausible_logit, 2 ** 20);
  for (const c of V.plausible) {
    const logits = Float64Array.from(c.logits, Number);
    if (c.plausible) assert.equal(checkPlausible(logits), logits);
    else assert.throws(() => checkPlausible(logits), ImplausibleOutput, JSON.stringify(c.logits));
  }
});
