#!/usr/bin/env node
// Builds native/gs_ort.cc into build/gs_ort.node against the libonnxruntime.so.1 that
// onnxruntime-node ships. Runs as the package's postinstall, so plain `npm ci` builds it; it
// never fails the install: without a compiler or Node's headers it prints why and the server
// runs on the stock binding (the addon is needed only for --device cuda's resident cache).
// `node native/build.mjs --strict` exits 1 instead (for tests and CI checks of the build).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.argv.includes('--strict');
const out = join(root, 'build', 'gs_ort.node');

function fail(why) {
  const msg = `gemma-serve: native runner not built (${why}); the CPU path uses the stock onnxruntime-node binding.`;
  if (strict) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
  process.exit(0);
}

/** Node's own headers: beside this node binary, or where npm's nodedir says. */
function nodeHeaders() {
  const candidates = [
    join(dirname(process.execPath), '..', 'include', 'node'),
    process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].filter(Boolean);
  return candidates.find((d) => existsSync(join(d, 'node_api.h')));
}

/** The folder of onnxruntime-node's libonnxruntime.so.1 for this platform. */
function ortLibDir() {
  const require = createRequire(join(root, 'package.json'));
  let pkg;
  try {
    pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  } catch {
    return undefined;
  }
  const dir = join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
  return existsSync(join(dir, 'libonnxruntime.so.1')) ? dir : undefined;
}

if (process.platform !== 'linux') fail(`platform ${process.platform} is not supported yet`);
const include = nodeHeaders();
if (!include) fail("Node's headers (node_api.h) were not found");
const libDir = ortLibDir();
if (!libDir) fail('onnxruntime-node with libonnxruntime.so.1 is not installed');
const cxx = process.env.CXX || 'g++';
mkdirSync(dirname(out), { recursive: true });
const args = [
  '-std=c++17', '-O2', '-fPIC', '-shared', '-Wall', '-Wextra',
  '-DNODE_GYP_MODULE_NAME=gs_ort', '-DNAPI_VERSION=8',
  '-I', include, '-I', join(root, 'native', 'include'),
  ...['gs_ort.cc', 'q4op.cc', 'q4gemm.cc', 'attnop.cc'].map((f) => join(root, 'native', f)),
  '-o', out,
  '-L', libDir, '-l:libonnxruntime.so.1', `-Wl,-rpath,${libDir}`,
];
try {
  execFileSync(cxx, args, { stdio: ['ignore', 'inherit', 'pipe'] });
} catch (e) {
  const stderr = e.stderr ? e.stderr.toString().trim().split('\n').slice(-5).join('\n') : e.message;
  fail(`${cxx} failed:\n${stderr}`);
}
console.log(`gemma-serve: built ${out}`);
