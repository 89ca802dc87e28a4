/**
 * The published package, as a user gets it: `npm pack` of this tree, installed from the
 * tarball into an empty folder (its dependencies from npm's cache or the registry), then
 * `node node_modules/gemma-serve/bin/gemma-serve.js serve` with plain node — no tsx installed
 * there — answers a chat completion on a tiny random checkpoint.
 *
 * It packs dist/ as it is (`--ignore-scripts`: rebuilding here would empty dist/ under the
 * other test files that run the bin at the same time); `npm test` builds dist/ first.
 * The install takes about a minute (most of it unpacking onnxruntime-node, ~350 MB in all).
 */
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'gemma-serve-pack-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

interface PackResult { filename: string; files: { path: string }[] }

t.test('npm pack holds what runs, and the installed tarball serves with plain node', async (t) => {
  t.ok(existsSync(join(ROOT, 'dist', 'cli.js')), 'dist/ is built (npm run build)');
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT });
  const [pack] = JSON.parse(stdout) as PackResult[];
  const files = pack!.files.map((f) => f.path);
  t.same(files.filter((f) => !/^(?:bin|dist|native)\//.test(f) && !['package.json', 'README.md', 'LICENSE'].includes(f)), [],
    'only bin/, dist/, native/ (built at install), package.json and README');
  t.same(files.filter((f) => /\.ts$/.test(f) || f.startsWith('src/') || f.startsWith('test/') || f.startsWith('bench/')), [], 'no sources, tests or benchmarks');
  for (const f of ['bin/gemma-serve.js', 'dist/cli.js', 'dist/engine/worker.js', 'native/build.mjs']) t.ok(files.includes(f), `${f} is packed`);

  // An empty project installing the tarball offline: no CUDA download (the allowScripts of
  // this repository's package.json do not apply to a consumer; every npm reads the variable).
  const app = join(dir, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), '{ "private": true }\n');
  const t0 = performance.now();
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, pack!.filename)],
    { cwd: app, maxBuffer: 1 << 24, env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' } });
  t.comment(`npm install of the tarball: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  t.notOk(existsSync(join(app, 'node_modules', 'tsx')), 'tsx is not installed with the package');

  const ckpt = join(dir, 'tiny');
  makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: ckpt, set: {} });
  const child = spawn(process.execPath, [join(app, 'node_modules', 'gemma-serve', 'bin', 'gemma-serve.js'), 'serve', '--model', ckpt, '--port', '0'],
    { cwd: app, env: { ...process.env, GEMMA_SERVE_DATA_DIR: join(dir, 'data') }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let log = '';
  child.stdout.on('data', (d: Buffer) => { log += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { log += d.toString(); });
  let url: string | undefined;
  for (let i = 0; i < 1200 && url === undefined && child.exitCode === null; i++) {
    url = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(log)?.[1];
    if (url === undefined) await new Promise((r) => setTimeout(r, 50));
  }
  if (!t.ok(url, 'listening')) return void t.comment(log);
  let ready = 0;
  for (let i = 0; i < 1200 && (ready = (await fetch(`${url}/ready`)).status) !== 200; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal(ready, 200, 'ready (model exported and loaded)');
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, temperature: 0 }),
  });
  t.equal(r.status, 200, 'chat completion 200');
  const body = await r.json() as { choices: { message: { role: string }; finish_reason: string }[]; usage: { completion_tokens: number } };
  t.equal(body.choices.length, 1, 'one choice');
  t.equal(body.choices[0]!.message.role, 'assistant');
  t.ok(body.usage.completion_tokens >= 1, `${body.usage.completion_tokens} completion tokens`);
  child.kill('SIGTERM');
  t.equal(await new Promise((res) => child.on('exit', res)), 0, 'exits 0 on SIGTERM');
});
