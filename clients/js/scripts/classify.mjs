// Classify one RGBA image through a coordinator with the JavaScript SDK (used by tests/server/test_js_client.py).
//   node classify.mjs < {url, model, image: {width, height, rgba: base64}, ca?: PEM, pins?: [fp0, fp1], token?}
//   -> the Result as JSON, or {error: name, message} with exit status 1
import { PrivateClient, b64decode } from '../src/index.js';

let text = '';
for await (const chunk of process.stdin) text += chunk;
const arg = JSON.parse(text);
try {
  const client = new PrivateClient(arg.url, { ca: arg.ca, pins: arg.pins, token: arg.token });
  const image = { width: arg.image.width, height: arg.image.height, data: new Uint8ClampedArray(b64decode(arg.image.rgba)) };
  const result = await client.classify(image, { model: arg.model });
  process.stdout.write(JSON.stringify(result));
} catch (err) {
  process.stdout.write(JSON.stringify({ error: err.name, message: err.message }));
  process.exitCode = 1;
}
