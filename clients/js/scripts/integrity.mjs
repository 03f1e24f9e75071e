// Subresource-integrity hashes (sha384) of the SDK's module files, for an app that serves the SDK itself and
// must not trust another server's copy (README.md, "Serving the SDK yourself").
//
//   node clients/js/scripts/integrity.mjs                   the hashes as JSON: {"src/index.js": "sha384-...", ...}
//   node clients/js/scripts/integrity.mjs --importmap URL   an import map whose "integrity" pins every module of
//                                                           the SDK served under URL (e.g. /js/mpcvit/); with --pkijs,
//                                                           PKI.js's modules too (from node_modules, after npm ci)
//   node clients/js/scripts/integrity.mjs --check           exit 1 if README.md's list differs from the files
//   node clients/js/scripts/integrity.mjs --write           rewrite README.md's list
// `make js-integrity` prints the hashes.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';

const root = new URL('../', import.meta.url);
const BEGIN = '<!-- integrity:begin (node clients/js/scripts/integrity.mjs --write) -->';
const END = '<!-- integrity:end -->';

export function sri(bytes) {
  return 'sha384-' + createHash('sha384').update(bytes).digest('base64');
}

/** {"src/<file>.js": "sha384-..."} for every module of the SDK, sorted by name. */
export function sdkHashes() {
  const files = readdirSync(new URL('src/', root)).filter((f) => f.endsWith('.js')).sort();
  return Object.fromEntries(files.map((f) => [`src/${f}`, sri(readFileSync(new URL(`src/${f}`, root)))]));
}

/** {"node_modules/...": "sha384-..."} for PKI.js and its dependencies as importmap.json names them. */
export function pkijsHashes() {
  const map = JSON.parse(readFileSync(new URL('importmap.json', root), 'utf8')).imports;
  const files = [...new Set(Object.values(map))].map((v) => v.replace(/^\.\//, '')).sort();
  return Object.fromEntries(files.map((f) => [f, sri(readFileSync(new URL(f, root)))]));
}

/** The README.md block listing the hashes. */
export function readmeBlock(hashes = sdkHashes()) {
  const rows = Object.entries(hashes).map(([f, h]) => `| \`${f}\` | \`${h}\` |`);
  return [BEGIN, '', '| file | integrity |', '|---|---|', ...rows, '', END].join('\n');
}

/** README.md with its block replaced by the current hashes. */
export function readmeWithHashes(text) {
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README.md has no ${BEGIN} ... ${END} block`);
  return text.slice(0, a) + readmeBlock() + text.slice(b + END.length);
}

/** An import map for the SDK served under `base`, with integrity for each module (and PKI.js's, if asked). */
export function importMap(base, withPkijs = false) {
  const prefix = base.endsWith('/') ? base : base + '/';
  const integrity = {};
  for (const [f, h] of Object.entries(sdkHashes())) integrity[prefix + f] = h;
  const imports = {};
  if (withPkijs) {
    const map = JSON.parse(readFileSync(new URL('importmap.json', root), 'utf8')).imports;
    for (const [k, v] of Object.entries(map)) imports[k.replace(/^\.\//, prefix)] = v.replace(/^\.\//, prefix);
    for (const [f, h] of Object.entries(pkijsHashes())) integrity[prefix + f] = h;
  }
  return { imports, integrity };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const readme = new URL('README.md', root);
  if (args[0] === '--check') {
    const text = readFileSync(readme, 'utf8');
    if (readmeWithHashes(text) !== text) {
      console.error('clients/js/README.md lists stale integrity hashes: run node clients/js/scripts/integrity.mjs --write');
      process.exit(1);
    }
  } else if (args[0] === '--write') {
    writeFileSync(readme, readmeWithHashes(readFileSync(readme, 'utf8')));
  } else if (args[0] === '--importmap') {
    const withPkijs = args.includes('--pkijs');
    if (withPkijs && !existsSync(new URL('node_modules/pkijs', root))) {
      console.error('--pkijs needs PKI.js: npm ci in clients/js');
      process.exit(1);
    }
    process.stdout.write(JSON.stringify(importMap(args[1] || './', withPkijs), null, 2) + '\n');
  } else {
    process.stdout.write(JSON.stringify(sdkHashes(), null, 2) + '\n');
  }
}
