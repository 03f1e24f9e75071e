// PrivateClient against a fake coordinator (a fetch stand-in) that plays both parties with the vectors' party keys:
// it opens the input shares, computes logits on the reconstructed image and seals their shares back.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  BoxContext, ImplausibleOutput, PartyKeyError, PrivateClient, ServerError, b64decode, b64encode, keyPairFromPrivate, openTensor,
  reconstructFixedPoint, sealTensor, sealedFromJson, sealedToJson, shareFixedPoint,
} from '../src/index.js';

const V = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8'));
const MODEL = { ...V.classify.model, name: 'fake-vit', input_shape: [1, 4, 4], classes: ['zero', 'one', 'two'] };
const hasPkijs = await import('pkijs').then(() => true, () => false);

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

/** A fake coordinator; `plan` lists how to answer successive POSTs: 'ok', 'garbage', 503, 409. */
async function fakeCoordinator({ plan = [], keysEntry } = {}) {
  const parties = [await keyPairFromPrivate(b64decode(V.keys.party_private[0])), await keyPairFromPrivate(b64decode(V.keys.party_private[1]))];
  const seen = { posts: [], gets: [], headers: [] };
  const fetch = async (url, init = {}) => {
    const path = new URL(url).pathname;
    seen.headers.push(init.headers || {});
    if (init.method === 'GET') {
      seen.gets.push(path);
      if (path === '/v1/models') return json(200, { models: [MODEL, { ...MODEL, name: 'other' }], default: 'fake-vit', compare_default: [] });
      if (path === '/v1/parties/keys') return json(200, { parties: keysEntry || V.pki.good.map((p) => ({ ...p })) });
      return json(404, { detail: 'no such path' });
    }
    const body = JSON.parse(init.body);
    seen.posts.push(body);
    const step = plan.length ? plan.shift() : 'ok';
    if (typeof step === 'number') return json(step, { detail: `status ${step}` }, step === 503 ? { 'retry-after': '0' } : {});
    const client = b64decode(body.client_public_key);
    const shares = [];
    for (const r of [0, 1]) {
      const ctx = new BoxContext(body.request_id, body.model, r, 'input');
      shares.push(await openTensor(sealedFromJson(body.shares[r]), parties[r], client, ctx));
    }
    const x = reconstructFixedPoint(shares[0], shares[1], 16); // what the secure forward would compute on
    const mean = x.reduce((a, b) => a + b, 0) / x.length;
    const logits = step === 'garbage' ? [3e6, 1, 2] : [1 - mean, mean * 4, 0.5];
    // a label / topk:2 answer: shares of the class indices (best first), as the parties' argmax makes them
    const ranked = [0, 1, 2].sort((a, b) => logits[b] - logits[a]);
    const indices = step === 'label' ? [ranked[0]] : step === 'topk:2' ? ranked.slice(0, 2) : step === 'bad-label' ? [7] : null;
    const out = indices
      ? (() => {
        const mask = BigInt64Array.from(indices, (_, i) => BigInt(1234567 + i) << 20n);
        return [{ shape: [indices.length], data: BigInt64Array.from(indices, (v, i) => BigInt.asIntN(64, BigInt(v) - mask[i])) },
          { shape: [indices.length], data: mask }];
      })()
      : shareFixedPoint({ shape: [3], data: Float64Array.from(logits) }, 16);
    const outputShares = [];
    for (const r of [0, 1]) {
      const ctx = new BoxContext(body.request_id, body.model, r, 'output');
      outputShares.push(sealedToJson(await sealTensor(out[r], parties[r], client, ctx)));
    }
    return json(200, {
      model: body.model, request_id: body.request_id, session_id: 's', coordinator_saw_image: false, output_shares: outputShares,
      precision_bits: 16, costs: { total: { rounds: 3, bytes: 100, seconds: 0.1 }, parties: [] }, queue_seconds: 0.5, batch_size: 1,
      ...(indices ? { output_policy: step === 'bad-label' ? 'label' : step } : {}),
    });
  };
  return { fetch, seen };
}

const pins = V.keys.party_fingerprints;
const bright = Array.from({ length: 8 }, () => Array(8).fill(1)); // mean 1: class "one"

test('classify with pinned keys: the answer, the costs and the request on the wire', async () => {
  const { fetch, seen } = await fakeCoordinator();
  const client = new PrivateClient('https://coordinator.example/', { pins, fetch, token: 't0k' });
  const result = await client.classify(bright, { model: 'fake-vit' });
  assert.equal(result.className, 'one');
  assert.equal(result.classIndex, 1);
  assert.deepEqual(result.logits, [0, 4, 0.5]);
  assert.ok(Math.abs(result.confidence - Math.exp(4) / (1 + Math.exp(4) + Math.exp(0.5))) < 1e-12);
  assert.equal(result.costs.total.rounds, 3);
  assert.equal(result.queueSeconds, 0.5);
  assert.deepEqual(seen.gets, ['/v1/models', '/v1/parties/keys']);
  assert.ok(seen.headers.every((h) => h.Authorization === 'Bearer t0k'));
  const body = seen.posts[0];
  assert.deepEqual(Object.keys(body), ['model', 'request_id', 'client_public_key', 'shares']);
  assert.match(body.request_id, /^[0-9a-f]{32}$/);
  assert.deepEqual(body.shares.map((s) => s.shape), [[1, 4, 4], [1, 4, 4]]);
  assert.equal(b64decode(body.shares[0].ciphertext).length, 8 * 16 + 16);
  assert.notEqual(body.shares[0].nonce, body.shares[1].nonce);
});

test('classify with the CA: keys checked through the certificates; the first model by name when none is named', { skip: !hasPkijs && 'PKI.js is not installed (npm ci in clients/js)' }, async () => {
  const { fetch, seen } = await fakeCoordinator();
  const client = new PrivateClient('https://coordinator.example', { ca: V.pki.ca_pem, fetch, now: () => new Date(V.pki.now) });
  const result = await client.classify({ shape: [4, 4], data: new Float32Array(16) });
  assert.equal(result.model, 'fake-vit');
  assert.equal(result.className, 'zero');
  assert.equal(seen.posts.length, 1);
});

test('no verified key, no sealing: refusals before anything is sent', async () => {
  const { fetch, seen } = await fakeCoordinator();
  await assert.rejects(new PrivateClient('https://c.example', { fetch }).classify(bright), PartyKeyError);
  await assert.rejects(new PrivateClient('https://c.example', { fetch, pins: [pins[1], pins[0]] }).classify(bright), /not the pinned/);
  if (hasPkijs) {
    const other = new PrivateClient('https://c.example', { fetch, ca: V.pki.other_ca_pem, now: () => new Date(V.pki.now) });
    await assert.rejects(other.classify(bright), /not issued/);
    const late = new PrivateClient('https://c.example', { fetch, ca: V.pki.ca_pem, now: () => new Date('2100-01-01') });
    await assert.rejects(late.classify(bright), /not valid now/);
  }
  const swapped = V.pki.good.map((p, i) => ({ ...p, rank: 1 - i }));
  const { fetch: fetch2, seen: seen2 } = await fakeCoordinator({ keysEntry: swapped });
  await assert.rejects(new PrivateClient('https://c.example', { fetch: fetch2, pins }).classify(bright), /not the pinned/);
  assert.equal(seen.posts.length + seen2.posts.length, 0);
  assert.throws(() => new PrivateClient('https://c.example', { trustCoordinator: true }), /loopback/);
  assert.throws(() => new PrivateClient('https://c.example', { pins: [pins[0]] }), /2/);
  const local = await fakeCoordinator();
  const result = await new PrivateClient('http://127.0.0.1:8000', { trustCoordinator: true, fetch: local.fetch }).classify(bright, { model: 'fake-vit' });
  assert.equal(result.className, 'one');
});

test('503 is retried with the same sealed request; 409 and other errors are not', async () => {
  const { fetch, seen } = await fakeCoordinator({ plan: [503, 503, 'ok'] });
  const client = new PrivateClient('https://c.example', { pins, fetch });
  const result = await client.classify(bright, { model: 'fake-vit' });
  assert.equal(result.className, 'one');
  assert.equal(client.retried, 2);
  assert.equal(seen.posts.length, 3);
  assert.deepEqual(seen.posts[1], seen.posts[0]);
  assert.deepEqual(seen.posts[2], seen.posts[0]);

  const again = await fakeCoordinator({ plan: [503, 503, 503] });
  await assert.rejects(new PrivateClient('https://c.example', { pins, fetch: again.fetch }).classify(bright, { model: 'fake-vit' }),
    (err) => err instanceof ServerError && err.statusCode === 503);
  const conflict = await fakeCoordinator({ plan: [409] });
  await assert.rejects(new PrivateClient('https://c.example', { pins, fetch: conflict.fetch }).classify(bright, { model: 'fake-vit' }),
    (err) => err instanceof ServerError && err.statusCode === 409 && err.detail === 'status 409');
  assert.equal(conflict.seen.posts.length, 1);
  await assert.rejects(new PrivateClient('https://c.example', { pins, fetch: conflict.fetch }).classify(bright, { model: 'nope' }), /unknown model/);
});

test('implausible logits: asked once more freshly sealed, never returned', async () => {
  const { fetch, seen } = await fakeCoordinator({ plan: ['garbage', 'ok'] });
  const client = new PrivateClient('https://c.example', { pins, fetch });
  const result = await client.classify(bright, { model: 'fake-vit' });
  assert.equal(result.className, 'one');
  assert.equal(client.implausible, 1);
  assert.notEqual(seen.posts[1].request_id, seen.posts[0].request_id);
  assert.notEqual(seen.posts[1].client_public_key, seen.posts[0].client_public_key);

  const bad = await fakeCoordinator({ plan: ['garbage', 'garbage'] });
  const client2 = new PrivateClient('https://c.example', { pins, fetch: bad.fetch });
  await assert.rejects(client2.classify(bright, { model: 'fake-vit' }), ImplausibleOutput);
  assert.equal(client2.implausible, 2);
});

test('given party keys are used as they are (the coordinator is not asked for them)', async () => {
  const { fetch, seen } = await fakeCoordinator();
  const client = new PrivateClient('https://c.example', { partyKeys: V.keys.party_public, fetch });
  assert.deepEqual((await client.partyKeys()).map(b64encode), V.keys.party_public);
  await client.classify(bright, { model: 'fake-vit' });
  assert.ok(!seen.gets.includes('/v1/parties/keys'));
});

test('label and topk answers: only the indices are opened, checked against the classes, no logits', async () => {
  const { fetch } = await fakeCoordinator({ plan: ['label', 'topk:2', 'bad-label', 'bad-label'] });
  const client = new PrivateClient('https://c.example', { pins, fetch });
  const label = await client.classify(bright, { model: 'fake-vit' });
  assert.equal(label.className, 'one');
  assert.equal(label.outputPolicy, 'label');
  assert.deepEqual(label.logits, []);
  const top = await client.classify(bright, { model: 'fake-vit' });
  assert.deepEqual(top.topK.map((t) => t.name), ['one', 'two']);
  await assert.rejects(client.classify(bright, { model: 'fake-vit' }), ImplausibleOutput); // index 7 of 3 classes, twice
});
