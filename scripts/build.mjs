#!/usr/bin/env node
// Compiles src/ into dist/ with tsconfig.build.json (.ts import specifiers rewritten to .js):
// dist/ is what bin/gemma-serve.js and the packed package run, with plain node. dist/ is
// emptied first, so a module moved or deleted in src/ leaves no stale copy behind.
// `--if-typescript` (the `prepare` hook, which npm ci / npm install run in a clone): an
// install without devDependencies (`npm ci --omit=dev`, the Dockerfile's deps stage) has no
// TypeScript and gets dist/ from elsewhere, so the build is skipped there, with a note.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  if (process.argv.includes('--if-typescript')) {
    console.warn('gemma-serve: typescript is not installed (production install): dist/ not built here');
    process.exit(0);
  }
  console.error('gemma-serve: typescript is not installed: run npm ci first');
  process.exit(1);
}
rmSync(join(root, 'dist'), { recursive: true, force: true });
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
