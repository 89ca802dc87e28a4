/**
 * `gemma-serve serve` and SIGTERM, as Kubernetes sends it: while two streams run, /ready turns
 * 503 at once, the short stream completes, the one past --shutdown-timeout ends with an error
 * event `server_shutdown` then [DONE], and the process exits 0. Also: the JSON log lines.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/gemma-serve.js');
const root = mkdtempSync(join(tmpdir(), 'gemma-serve-drain-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const ckpt = join(root, 'ckpt');

t.test('SIGTERM drains: ready 503, short stream completes, long one gets server_shutdown, exit 0', async (t) => {
  const made = spawnSync(process.execPath, [BIN, 'make-random', '--shape', 'tiny', '--seed', '1', '--dtype', 'f32', '--out', ckpt, '--set', 'max_position_embeddings=4096'], { encoding: 'utf8' });
  t.equal(made.status, 0, made.stderr);
  const child = spawn(process.execPath, [BIN, 'serve', '--model', ckpt, '--port', '0', '--shutdown-timeout', '1.5', '--stats-interval', '0.2'],
    // Steps of at least 2 ms: the 3,500-token stream outlasts the 1.5 s timeout on any machine (7 s or more), the 60-token one does not (0.12 s).
    { env: { ...process.env, GEMMA_SERVE_DATA_DIR: join(root, 'data'), GEMMA_SERVE_TEST_MIN_STEP_MS: '2' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d: Buffer) => { log += d.toString(); });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let url: string | undefined;
  for (let i = 0; i < 1200 && url === undefined; i++) {
    url = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(log)?.[1];
    await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(url, 'listening');
  for (let i = 0; i < 1200 && (await fetch(`${url}/ready`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 50));

  const open = async (maxTokens: number, id: string) => {
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': id },
      body: JSON.stringify({ model: 'ckpt', messages: [{ role: 'user', content: 'a secret prompt' }], max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true }),
    });
    t.equal(r.headers.get('x-request-id'), id);
    const reader = r.body!.getReader();
    let text = '';
    while (!text.includes('\n\n')) text += new TextDecoder().decode((await reader.read()).value);
    const rest = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return text;
        text += new TextDecoder().decode(value);
      }
    })();
    return { rest }; // not the promise itself: awaiting open() must not wait for the end
  };
  const short = await open(60, 'short-1');
  const long = await open(3500, 'long-1');
  child.kill('SIGTERM');
  let ready = 200;
  for (let i = 0; i < 50 && ready === 200; i++) {
    ready = (await fetch(`${url}/ready`)).status;
    if (ready === 200) await new Promise((r) => setTimeout(r, 10));
  }
  t.equal(ready, 503, '/ready turns 503 after SIGTERM');
  const late = await fetch(`${url}/v1/models`);
  t.equal(late.status, 503, 'new requests get 503');

  const events = (text: string): string[] => text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  const s = events(await short.rest);
  t.equal(s.at(-1), '[DONE]');
  t.equal((JSON.parse(s.at(-2)!) as { choices: { finish_reason: string }[] }).choices[0]!.finish_reason, 'length', 'the short stream completed');
  const l = events(await long.rest);
  t.equal(l.at(-1), '[DONE]');
  t.match(JSON.parse(l.at(-2)!), { error: { code: 'server_shutdown' } }, 'the long stream got a proper end');
  t.equal(await exited, 0, 'exit 0');
  t.equal(stderr, '');

  const lines = log.split('\n').filter((x) => x.startsWith('{')).map((x) => JSON.parse(x) as Record<string, unknown>);
  t.match(lines.find((x) => x.reqId === 'short-1' && x.msg === 'request'), { status: 200, completionTokens: 60, finishReason: 'length' });
  t.match(lines.find((x) => x.reqId === 'long-1' && x.msg === 'request'), { status: 200, finishReason: 'abort' });
  t.ok(lines.some((x) => x.msg === 'engine stats' && typeof x.generationThroughput === 'number'), 'engine stats lines');
  t.match(lines.find((x) => typeof x.msg === 'string' && x.msg.startsWith('drained')), { cut: 1 });
  t.notMatch(log, 'a secret prompt', 'no prompt text in the log');
  t.ok(lines.some((x) => x.msg === 'GEMMA_SERVE_TEST_MIN_STEP_MS: every step is padded to this many milliseconds (a testing aid: it slows the server)' && x.minStepMs === 2), 'the testing aid is announced');
});

t.test('serve: bad observability flags exit 1 naming them', async (t) => {
  const run = (...args: string[]) => spawnSync(process.execPath, [BIN, 'serve', '--model', root, ...args], { encoding: 'utf8', env: { ...process.env, GEMMA_SERVE_DATA_DIR: join(root, 'data') } });
  const names = run('--metrics-names', 'prometheus');
  t.equal(names.status, 1);
  t.match(names.stderr, /--metrics-names must be one of gemma_serve, vllm/);
  const timeout = run('--shutdown-timeout', 'soon');
  t.equal(timeout.status, 1);
  t.match(timeout.stderr, /--shutdown-timeout must be a number of seconds/);
  const env = spawnSync(process.execPath, [BIN, 'serve', '--model', root], { encoding: 'utf8', env: { ...process.env, GEMMA_SERVE_LOG_PROMPTS: 'maybe' } });
  t.equal(env.status, 1);
  t.match(env.stderr, /GEMMA_SERVE_LOG_PROMPTS must be true or false/);
  const pad = spawnSync(process.execPath, [BIN, 'serve', '--model', root], { encoding: 'utf8', env: { ...process.env, GEMMA_SERVE_TEST_MIN_STEP_MS: '-1' } });
  t.equal(pad.status, 1);
  t.match(pad.stderr, /GEMMA_SERVE_TEST_MIN_STEP_MS must be a number of milliseconds >= 0/);
});
