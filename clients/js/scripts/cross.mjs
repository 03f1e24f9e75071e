// A helper for the Python test tests/mpcvit/test_js_vectors.py: the JavaScript SDK's side of fresh, random
// exchanges (no fixed keys or nonces), so that each side opens boxes the other sealed.
//   node cross.mjs seal < {party_public, party_private, model, request_id, image, input_shape}
//     -> {client_private, request_body, party_boxes}: a classify request body sealed by the SDK, and one
//        output box per party sealed by the SDK playing that party (values: 0..n-1 minus 2^62)
//   node cross.mjs open < {client_private, party_public, model, request_id, output_shares, precision_bits, input_boxes}
//     -> {logits, inputs}: the reply opened by the SDK, and Python-sealed input boxes opened as each party
import {
  BoxContext, b64decode, b64encode, keyPairFromPrivate, openOutput, openTensor, preprocess, requestToJson, sealInput, sealTensor,
  sealedFromJson, sealedToJson,
} from '../src/index.js';

const read = async () => {
  let text = '';
  for await (const chunk of process.stdin) text += chunk;
  return JSON.parse(text);
};
const arg = await read();
const partyPublic = arg.party_public.map((k) => b64decode(k));

if (process.argv[2] === 'seal') {
  const clientPrivate = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const keyPair = await keyPairFromPrivate(clientPrivate);
  const x = preprocess(arg.image, arg.input_shape);
  const req = await sealInput(x, partyPublic, 16, { model: arg.model, requestId: arg.request_id, _keyPair: keyPair });
  const parties = await Promise.all(arg.party_private.map((k) => keyPairFromPrivate(b64decode(k))));
  const partyBoxes = [];
  for (const rank of [0, 1]) {
    const values = { shape: [2, 3], data: BigInt64Array.from({ length: 6 }, (_, i) => BigInt(i) - 2n ** 62n) };
    const ctx = new BoxContext(arg.request_id, arg.model, rank, 'output');
    partyBoxes.push(sealedToJson(await sealTensor(values, parties[rank], keyPair.publicKey, ctx)));
  }
  process.stdout.write(JSON.stringify({ client_private: b64encode(clientPrivate), request_body: requestToJson(arg.model, req), party_boxes: partyBoxes }));
} else if (process.argv[2] === 'open') {
  const keyPair = await keyPairFromPrivate(b64decode(arg.client_private));
  const req = { requestId: arg.request_id, model: arg.model, keyPair };
  const logits = await openOutput(req, arg.output_shares.map(sealedFromJson), partyPublic, arg.precision_bits);
  const parties = await Promise.all(arg.party_private.map((k) => keyPairFromPrivate(b64decode(k))));
  const inputs = [];
  for (const rank of [0, 1]) {
    const ctx = new BoxContext(arg.request_id, arg.model, rank, 'input');
    const t = await openTensor(sealedFromJson(arg.input_boxes[rank]), parties[rank], b64decode(arg.input_client_public), ctx);
    inputs.push({ shape: t.shape, values: Array.from(t.data, String) });
  }
  process.stdout.write(JSON.stringify({ logits: Array.from(logits), inputs }));
} else {
  process.stderr.write('usage: node cross.mjs seal|open < request.json\n');
  process.exit(2);
}
