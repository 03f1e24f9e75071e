// README.md lists the sha384 subresource-integrity hashes of the SDK's modules (for apps that serve the SDK
// themselves): the list must be the current files' (scripts/integrity.mjs --write rewrites it).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { importMap, readmeWithHashes, sdkHashes } from '../scripts/integrity.mjs';

test('README.md lists the integrity hash of every module in src/', () => {
  const text = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  assert.equal(readmeWithHashes(text), text, 'stale hashes: run node clients/js/scripts/integrity.mjs --write');
  for (const [file, hash] of Object.entries(sdkHashes())) assert.ok(text.includes(`| \`${file}\` | \`${hash}\` |`), file);
});

test('the import map pins every module of the SDK under the given base', () => {
  const map = importMap('/js/mpcvit');
  assert.deepEqual(map.imports, {});
  assert.deepEqual(Object.keys(map.integrity), Object.keys(sdkHashes()).map((f) => `/js/mpcvit/${f}`));
  assert.ok(Object.values(map.integrity).every((h) => /^sha384-[A-Za-z0-9+/]{64}$/.test(h)));
});
