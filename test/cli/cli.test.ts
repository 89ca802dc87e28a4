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
