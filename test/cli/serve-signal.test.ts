// SIGTERM while a checkpoint is being exported on first use: the server exits 0 at once and
// leaves no temporary export behind; a temporary export left by a killed process is removed by
// the next start.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/gemma-serve.js');
const root = mkdtempSync(join(tmpdir(), 'gs-signal-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const ckpt = join(root, 'ckpt');
// Big enough that its export takes a while (hundreds of MB of weights).
const made = spawnSync(process.execPath, [BIN, 'make-random', '--shape', 'tiny', '--seed', '1', '--dtype', 'f32', '--out', ckpt,
  '--set', 'hidden_size=1024', '--set', 'intermediate_size=4096', '--set', 'num_hidden_layers=8', '--set', 'vocab_size=32000'], { encoding: 'utf8' });
if (made.status !== 0) throw new Error(made.stderr);
const dataDir = join(root, 'data');
const exportsDir = join(dataDir, 'exports');
const tmpExports = (): string[] => (existsSync(exportsDir) ? readdirSync(exportsDir).filter((n) => n.includes('.tmp-')) : []);

t.test('SIGTERM during the export: exit 0, no temporary export left', async (t) => {
  // A stale temporary export of a process that is gone: removed when this one exports.
  mkdirSync(join(exportsDir, 'deadbeef.tmp-999999'), { recursive: true });
  const child = spawn(process.execPath, [BIN, 'serve', '--model', ckpt, '--port', '0'], { env: { ...process.env, GEMMA_SERVE_DATA_DIR: dataDir }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d: Buffer) => { log += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { log += d.toString(); });
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const deadline = Date.now() + 120_000;
  while (!tmpExports().some((n) => n.endsWith(`.tmp-${child.pid}`)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(tmpExports().some((n) => n.endsWith(`.tmp-${child.pid}`)), 'the export had started');
  t.notOk(tmpExports().includes('deadbeef.tmp-999999'), "the dead process's temporary export was removed");
  const t0 = Date.now();
  child.kill('SIGTERM');
  const code = await exited;
  t.equal(code, 0, log.slice(-2000));
  t.ok(Date.now() - t0 < 10_000, `exited ${Date.now() - t0} ms after SIGTERM`);
  t.same(tmpExports(), [], 'no temporary export left');
});
