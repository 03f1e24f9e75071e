// importmap.json (for browsers, which resolve no bare specifiers such as 'pkijs' by themselves) covers every bare
// import in the module graph of src/index.js and PKI.js: walk the graph as a browser would, through the map.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

const root = new URL('../', import.meta.url);
const map = JSON.parse(readFileSync(new URL('importmap.json', root), 'utf8')).imports;
const urlKeys = new Map(Object.entries(map).filter(([k]) => k.startsWith('./'))
  .map(([k, v]) => [new URL(k, root).href, { key: k, target: new URL(v, root) }]));
const used = new Set();
const SPEC = /(?:^|[\s;}])(?:import|export)\s*(?:[^'"]*?\sfrom\s*)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

test('importmap.json resolves every bare import of the SDK and of PKI.js', { skip: !existsSync(new URL('node_modules/pkijs', root)) && 'PKI.js is not installed (npm ci in clients/js)' }, () => {
  const seen = new Set();
  const todo = [new URL('src/index.js', root).href];
  const bare = new Set();
  while (todo.length) {
    const file = todo.pop();
    if (seen.has(file)) continue;
    seen.add(file);
    const text = readFileSync(new URL(file), 'utf8');
    for (const m of text.matchAll(SPEC)) {
      const spec = m[1] || m[2];
      let target;
      if (spec.startsWith('./') || spec.startsWith('../') || spec.startsWith('/')) {
        target = new URL(spec, file);
        const remapped = urlKeys.get(target.href); // URL-like keys: bytestreamjs imports './bit' without '.js'
        if (remapped) {
          used.add(remapped.key);
          target = remapped.target;
        }
      } else {
        if (spec.startsWith('node:')) continue;
        bare.add(spec);
        assert.ok(spec in map, `${spec} (imported by ${file.slice(root.href.length)}) is not in importmap.json`);
        target = new URL(map[spec], root);
      }
      assert.ok(existsSync(target), `${spec} -> ${target.href} does not exist`);
      todo.push(target.href);
    }
  }
  assert.ok(bare.has('pkijs') && seen.size > 5, `walked ${seen.size} modules`);
  assert.deepEqual(Object.keys(map).filter((k) => !bare.has(k) && !used.has(k)), [], 'importmap.json has entries nothing imports');
});
