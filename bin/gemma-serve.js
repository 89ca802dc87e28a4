#!/usr/bin/env node
// Entry point: runs the compiled CLI (dist/, built by `npm run build`, which `npm ci` / `npm
// install` in a clone run through `prepare`). Plain node, no TypeScript loader at run time.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write('gemma-serve: dist/cli.js is missing: run `npm run build` (npm ci runs it)\n');
  process.exit(1);
}
await import(cli.href);
