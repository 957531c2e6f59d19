// Builds the web client into dist/: esbuild bundles src/ with its npm dependencies (pinned in
// package-lock.json) into content-hashed files under dist/assets/, and dist/index.html names them.
// The output is committed and embedded in the `suroga` binary (build.rs), so `cargo build` needs
// no Node. `node build.mjs --check` rebuilds into a temporary folder and fails when the result
// differs from dist/: the committed files are exactly what this build produces.

import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes('--check');

function files(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

async function build(out) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(join(out, 'assets'), { recursive: true });
  const result = await esbuild.build({
    absWorkingDir: here,
    entryPoints: { main: 'src/main.js', app: 'src/app.css' },
    bundle: true,
    format: 'esm',
    splitting: true,
    minify: true,
    target: ['chrome100', 'firefox100', 'safari15', 'edge100'],
    outdir: join(out, 'assets'),
    entryNames: '[name]-[hash]',
    chunkNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    legalComments: 'eof',
    charset: 'utf8',
    metafile: true,
    logLevel: 'warning',
  });
  const outputs = Object.entries(result.metafile.outputs);
  const entry = (name) => {
    const found = outputs.find(([, o]) => o.entryPoint && o.entryPoint.endsWith(name));
    if (!found) throw new Error(`no output for ${name}`);
    return relative(join(out, 'assets'), join(here, found[0]));
  };
  const icon = readFileSync(join(here, 'src/icon.svg'));
  const iconName = `icon-${createHash('sha256').update(icon).digest('hex').slice(0, 10)}.svg`;
  writeFileSync(join(out, 'assets', iconName), icon);
  const html = readFileSync(join(here, 'src/index.html'), 'utf8')
    .replace('{{main}}', entry('src/main.js'))
    .replace('{{css}}', entry('src/app.css'))
    .replace('{{icon}}', iconName);
  writeFileSync(join(out, 'index.html'), html);
}

const dist = join(here, 'dist');
if (check) {
  const tmp = mkdtempSync(join(tmpdir(), 'suroga-web-'));
  await build(tmp);
  const list = (d) => files(d).map((f) => relative(d, f)).sort();
  const want = list(tmp);
  const have = list(dist);
  const differ = want.filter((f) => !have.includes(f) || !readFileSync(join(tmp, f)).equals(readFileSync(join(dist, f))));
  const extra = have.filter((f) => !want.includes(f));
  rmSync(tmp, { recursive: true, force: true });
  if (differ.length || extra.length) {
    console.error('web/dist is not what `npm run build` produces; run it and commit the result.');
    console.error({ differ, extra });
    process.exit(1);
  }
  console.log(`web/dist matches the build (${want.length} files)`);
} else {
  await build(dist);
  for (const f of files(dist).sort()) console.log(`${relative(here, f)}  ${statSync(f).size} bytes`);
}
