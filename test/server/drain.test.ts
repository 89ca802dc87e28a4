// drain() in-process on the tiny model, over real HTTP: in-flight streams finish within the
// grace period; past it a stream ends with an error event `server_shutdown` then [DONE] and a
// JSON request gets a 503; /ready and new requests are 503 from the start of the drain.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { buildApp } from '../../src/server/app.ts';
import { drain } from '../../src/server/drain.ts';
import { EngineState } from '../../src/server/engine-state.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-drain-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: join(dir, 'ckpt'), set: { max_position_embeddings: '2048' } });
// Each step lasts at least 1 ms: an 1,800-token generation outlasts a 200 ms grace on any machine.
const engine = await Engine.start({ modelDir: join(dir, 'ckpt'), dataDir: join(dir, 'data'), kvCacheBytes: 32 * 2 ** 20, minStepMs: 1 });
t.teardown(() => engine.close());
const model = engine.modelId;

async function serve(t: Test) {
  const state = new EngineState(engine);
  const app = buildApp({ engine: state });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  return { app, state, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

const body = (extra: object): string => JSON.stringify({
  model, messages: [{ role: 'user', content: 'Tell me a long story' }], temperature: 0, ignore_eos: true, ...extra,
});
const post = (url: string, extra: object) => fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body(extra) });

/** A started SSE stream: resolves once its first event arrived; `rest` is the whole text at the end. */
async function openStream(url: string, maxTokens: number): Promise<{ rest: Promise<string> }> {
  const r = await post(url, { max_tokens: maxTokens, stream: true, stream_options: { include_usage: true } });
  if (r.status !== 200) throw new Error(`stream refused: ${r.status}`);
  const reader = r.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  while (!text.includes('\n\n')) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += decoder.decode(value, { stream: true });
    }
  })();
  return { rest };
}

const events = (text: string): string[] => text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 250 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
}

t.test('within the grace period: in-flight streams finish; /ready and new requests are 503 at once', async (t) => {
  const { app, state, url } = await serve(t);
  // Long enough that the checks below run while both are still streaming (the tiny model is fast).
  const lengths = [1200, 1500];
  const streams = await Promise.all(lengths.map((n) => openStream(url, n)));
  const drained = drain(app, state, 30_000);
  const ready = await fetch(`${url}/ready`);
  t.equal(ready.status, 503, '/ready turns 503 at once');
  t.same(await ready.json(), { status: 'draining' });
  t.equal((await fetch(`${url}/health`)).status, 200, '/health stays 200');
  const late = await post(url, { max_tokens: 2 });
  t.equal(late.status, 503, 'a new request is refused');
  t.equal((await late.json() as { error: { code: string } }).error.code, 'server_draining');
  for (const [i, s] of streams.entries()) {
    const ev = events(await s.rest);
    t.equal(ev.at(-1), '[DONE]');
    const parsed = ev.slice(0, -1).map((e) => JSON.parse(e) as { choices: { finish_reason: string | null }[]; usage?: { completion_tokens: number } | null; error?: unknown });
    t.notOk(parsed.some((p) => p.error !== undefined), `stream ${i}: no error`);
    t.ok(parsed.some((p) => p.choices[0]?.finish_reason === 'length'), `stream ${i}: finished normally`);
    t.equal(parsed.at(-1)!.usage!.completion_tokens, lengths[i], `stream ${i}: every token`);
  }
  t.same(await drained, { cut: 0 });
  t.equal(engine.inFlight, 0);
});

t.test('past the grace period: a stream gets error server_shutdown then [DONE]; a JSON request a 503', async (t) => {
  const { app, state, url } = await serve(t);
  const stream = await openStream(url, 1800);
  const json = post(url, { max_tokens: 1800 });
  await until(() => engine.inFlight === 2);
  t.equal(engine.inFlight, 2, 'both admitted');
  const t0 = performance.now();
  t.same(await drain(app, state, 200), { cut: 2 });
  t.ok(performance.now() - t0 < 5000, 'the drain ends soon after its timeout');
  const ev = events(await stream.rest);
  t.equal(ev.at(-1), '[DONE]', 'the stream ends with [DONE]');
  t.match(JSON.parse(ev.at(-2)!), { error: { code: 'server_shutdown', type: 'server_error' } }, 'after an error event');
  t.notOk(ev.slice(0, -2).some((e) => (JSON.parse(e) as { choices: { finish_reason: string | null }[] }).choices[0]?.finish_reason), 'no finish_reason: it did not finish');
  const r = await json;
  t.equal(r.status, 503);
  t.ok(Number(r.headers.get('retry-after')) >= 1);
  t.match(await r.json(), { error: { code: 'server_shutdown' } });
  await until(() => engine.inFlight === 0);
  t.equal(engine.inFlight, 0, 'the generations stopped in the worker');
});

t.test('drain with nothing in flight closes at once', async (t) => {
  const { app, state } = await serve(t);
  const t0 = performance.now();
  t.same(await drain(app, state, 30_000), { cut: 0 });
  t.ok(performance.now() - t0 < 1000);
  t.equal(state.phase, 'draining');
});
