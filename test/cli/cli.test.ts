/**
 * The CLI end to end, as a user runs it: node bin/gemma-serve.js <command> in a child process.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/gemma-serve.js');

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const root = mkdtempSync(join(tmpdir(), 'gemma-serve-cli-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const ckpt = join(root, 'ckpt');
const exported = join(root, 'exported');

t.test('make-random then export', async (t) => {
  const made = cli('make-random', '--shape', 'tiny', '--seed', '1', '--dtype', 'f32', '--out', ckpt);
  t.equal(made.code, 0, made.stderr);
  const summary = JSON.parse(made.stdout) as { totalBytes: number; weightFiles: string[] };
  t.ok(summary.totalBytes > 0, 'summary reports the bytes written');
  t.ok(existsSync(join(ckpt, 'model.safetensors')));
  t.ok(existsSync(join(ckpt, 'config.json')));

  const ex = cli('export', '--checkpoint', ckpt, '--out', exported);
  t.equal(ex.code, 0, ex.stderr);
  const res = JSON.parse(ex.stdout) as { dataBytes: number; numParameters: number; seconds: number };
  t.ok(res.dataBytes > 0, 'data bytes reported');
  t.ok(res.numParameters > 0, 'parameter count reported');
  t.type(res.seconds, 'number');
  for (const f of ['model.onnx', 'model.onnx.data', 'manifest.json', 'tokenizer.json']) {
    t.ok(existsSync(join(exported, f)), `${f} written`);
  }
  const manifest = JSON.parse(readFileSync(join(exported, 'manifest.json'), 'utf8')) as { numParameters: number };
  t.equal(manifest.numParameters, res.numParameters);
});

t.test('export --shape --no-weights writes a shape-only model.onnx', async (t) => {
  const out = join(root, 'shape-2b');
  const r = cli('export', '--shape', '2b', '--no-weights', '--out', out);
  t.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout) as { dataBytes: number; numParameters: number };
  t.equal(res.numParameters, 2_614_341_888);
  t.equal(res.dataBytes, 0);
  t.ok(existsSync(join(out, 'model.onnx')));
  t.notOk(existsSync(join(out, 'model.onnx.data')));
});

t.test('bad command lines exit 2 with usage', async (t) => {
  const badFlag = cli('make-random', '--shape', 'tiny', '--bogus', '--out', join(root, 'x'));
  t.equal(badFlag.code, 2);
  t.match(badFlag.stderr, /--bogus/);
  t.match(badFlag.stderr, /usage: gemma-serve/);
  t.notOk(existsSync(join(root, 'x')), 'nothing written');

  const badCmd = cli('frobnicate');
  t.equal(badCmd.code, 2);
  t.match(badCmd.stderr, /unknown command "frobnicate"/);

  const badShape = cli('export', '--shape', '3b', '--no-weights', '--out', join(root, 'y'));
  t.equal(badShape.code, 2);

  const help = cli('--help');
  t.equal(help.code, 0);
  t.match(help.stdout, /usage: gemma-serve/);
});

t.test('a bad checkpoint exits 1 with a message naming the problem, no stack', async (t) => {
  const missing = cli('export', '--checkpoint', join(root, 'nope'), '--out', join(root, 'e1'));
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^error: .*nope: no config\.json/);
  t.notMatch(missing.stderr, /\n\s+at /, 'no stack trace');

  const bad = join(root, 'bad-ckpt');
  t.equal(cli('make-random', '--shape', 'tiny', '--seed', '2', '--dtype', 'bf16', '--out', bad).code, 0);
  const config = JSON.parse(readFileSync(join(bad, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...config, hidden_size: 96 }));
  const r = cli('export', '--checkpoint', bad, '--out', join(root, 'e2'));
  t.equal(r.code, 1);
  t.match(r.stderr, /^error: /);
  t.match(r.stderr, /shape/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  t.notOk(existsSync(join(root, 'e2')), 'failed export leaves no output');
});

t.test('serve: listens, becomes ready, serves, exits 0 on SIGTERM', async (t) => {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [BIN, 'serve', '--model', ckpt, '--port', '0', '--max-num-seqs', '2', '--max-waiting', '0', '--threads', '1', '--served-model-name', 'my-gemma', '--served-model-name', 'gemma2:9b'],
    { env: { ...process.env, GEMMA_SERVE_DATA_DIR: join(root, 'serve-data') }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d: Buffer) => { log += d.toString(); });
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  let url: string | undefined;
  for (let i = 0; i < 600 && url === undefined; i++) {
    url = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(log)?.[1];
    await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(url, 'logs where it listens');
  let ready = 0;
  for (let i = 0; i < 600 && ready !== 200; i++) {
    ready = (await fetch(`${url}/ready`)).status;
    if (ready !== 200) { t.equal(ready, 503, 'not ready yet: 503'); await new Promise((r) => setTimeout(r, 50)); }
  }
  t.equal(ready, 200);
  const models = await (await fetch(`${url}/v1/models`)).json() as { data: { id: string }[] };
  t.same(models.data.map((m) => m.id), ['my-gemma', 'gemma2:9b'], '--served-model-name names the model, repeated: its aliases');
  const tags = await (await fetch(`${url}/api/tags`)).json() as { models: { name: string }[] };
  t.same(tags.models.map((m) => m.name), ['my-gemma', 'gemma2:9b'], "Ollama's /api/tags lists them too");
  child.kill('SIGTERM');
  t.equal(await exited, 0);
  t.match(log, /model loaded: ready/);
  t.match(log, /"prefixCaching":true/, 'prefix caching on by default');
});

t.test('serve: bad limits and an unloadable model exit 1 with a message', async (t) => {
  const bad = cli('serve', '--model', ckpt, '--max-num-seqs', '0');
  t.equal(bad.code, 1);
  t.match(bad.stderr, /--max-num-seqs must be an integer >= 1/);
  const broken = join(root, 'broken-ckpt');
  t.equal(cli('make-random', '--shape', 'tiny', '--seed', '3', '--dtype', 'f32', '--out', broken).code, 0);
  writeFileSync(join(broken, 'model.safetensors'), 'not safetensors');
  const r = spawnSync(process.execPath, [BIN, 'serve', '--model', broken, '--port', '0'],
    { encoding: 'utf8', timeout: 120_000, env: { ...process.env, GEMMA_SERVE_DATA_DIR: join(root, 'broken-data') } });
  t.equal(r.status, 1);
  t.match(r.stderr, /^error: /m);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

t.test('serve: --threads beyond the cores is refused at start', async (t) => {
  const { availableParallelism } = await import('node:os');
  const r = cli('serve', '--model', ckpt, '--threads', String(availableParallelism() + 1));
  t.equal(r.code, 1);
  t.match(r.stderr, /--threads \d+ exceeds this machine's \d+ cores/);
});

t.test('serve: a --chat-template that cannot be read or compiled is refused at start', async (t) => {
  const missing = cli('serve', '--model', ckpt, '--chat-template', join(root, 'no-such-template.jinja'));
  t.equal(missing.code, 1);
  t.match(missing.stderr, /--chat-template: .*no-such-template\.jinja: cannot read the chat template/);
  const broken = join(root, 'broken.jinja');
  writeFileSync(broken, '{% for %}');
  const r = cli('serve', '--model', ckpt, '--chat-template', broken);
  t.equal(r.code, 1);
  t.match(r.stderr, /--chat-template: .*does not parse/);
});

t.test('serve: GEMMA_SERVE_NO_PREFIX_CACHING takes a boolean', async (t) => {
  const env = spawnSync(process.execPath, [BIN, 'serve', '--model', ckpt, '--port', '0'],
    { encoding: 'utf8', timeout: 60_000, env: { ...process.env, GEMMA_SERVE_NO_PREFIX_CACHING: 'sometimes' } });
  t.equal(env.status, 1);
  t.match(env.stderr, /GEMMA_SERVE_NO_PREFIX_CACHING must be true or false/);
});

t.test('serve: --int4-kernel and GEMMA_SERVE_INT4_KERNEL take auto, ort or gemma-serve', async (t) => {
  const flag = cli('serve', '--model', ckpt, '--int4-kernel', 'fastest');
  t.equal(flag.code, 1);
  t.match(flag.stderr, /--int4-kernel must be one of auto, ort, gemma-serve, got "fastest"/);
  const env = spawnSync(process.execPath, [BIN, 'serve', '--model', ckpt, '--port', '0'],
    { encoding: 'utf8', timeout: 60_000, env: { ...process.env, GEMMA_SERVE_INT4_KERNEL: 'mlas' } });
  t.equal(env.status, 1);
  t.match(env.stderr, /--int4-kernel must be one of auto, ort, gemma-serve, got "mlas"/);
});
