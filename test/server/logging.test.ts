// The JSON log stream, captured: one line per request with its id (the client's x-request-id,
// also returned, SSE included), status, token counts, TTFT and finish reason; the
// authorization header redacted; no prompt or completion text unless logPrompts; the
// periodic engine stats line.
import t, { type Test } from 'tap';
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { buildApp } from '../../src/server/app.ts';
import { EngineState } from '../../src/server/engine-state.ts';
import { createLogger } from '../../src/server/logging.ts';
import { startStatsLog } from '../../src/server/stats-log.ts';
import { startTinyServer } from './tiny-server.ts';

const { engine, model } = await startTinyServer('logging');

type Line = Record<string, unknown>;

/** A logger writing into an array of parsed lines (and the raw text, for absence checks). */
function capture(): { logger: ReturnType<typeof createLogger>; lines: Line[]; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({ write(chunk: Buffer, _enc, cb) { chunks.push(chunk.toString()); cb(); } });
  return {
    logger: createLogger({ destination: stream, level: 'debug' }),
    get lines() { return chunks.join('').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line); },
    text: () => chunks.join(''),
  };
}

async function serve(t: Test, opts: { logPrompts?: boolean; apiKeys?: string[] } = {}) {
  const log = capture();
  const app = buildApp({ engine: new EngineState(engine), logger: log.logger, ...opts });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  return { log, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

/** The request lines, once `count` of them are written (the line follows the last byte). */
async function requestLines(log: { lines: Line[] }, count: number): Promise<Line[]> {
  for (let i = 0; i < 100 && log.lines.filter((l) => l.msg === 'request').length < count; i++) await new Promise((r) => setTimeout(r, 20));
  return log.lines.filter((l) => l.msg === 'request');
}

const SECRET_PROMPT = 'xyzzy-plugh-secret-prompt';
const KEY = 'sk-very-secret-key-1234';
const chat = (url: string, body: object, headers: Record<string, string> = {}) => fetch(`${url}/v1/chat/completions`, {
  method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, ...headers },
  body: JSON.stringify({ model, messages: [{ role: 'user', content: SECRET_PROMPT }], temperature: 0, ignore_eos: true, ...body }),
});

t.test('one line per request: id, route, status, tokens, TTFT, finish reason; no prompt text; key redacted', async (t) => {
  const { log, url } = await serve(t, { apiKeys: [KEY] });
  const r = await chat(url, { max_tokens: 4 }, { 'x-request-id': 'my-req-42' });
  t.equal(r.status, 200);
  t.equal(r.headers.get('x-request-id'), 'my-req-42', 'the id is returned');
  const body = await r.json() as { usage: { prompt_tokens: number; completion_tokens: number }; choices: { message: { content: string } }[] };
  const s = await chat(url, { max_tokens: 3, stream: true });
  const sid = s.headers.get('x-request-id');
  t.match(s.headers.get('content-type'), /text\/event-stream/);
  t.match(sid, /^[0-9a-f-]{36}$/, 'generated when none is sent, also on SSE responses');
  t.match(await s.text(), /data: \[DONE\]/);
  const bad = await chat(url, { max_tokens: 2 }, { 'x-request-id': 'bad id with spaces' });
  t.match(bad.headers.get('x-request-id'), /^[0-9a-f-]{36}$/, 'an id that is not sane is replaced');
  await bad.text();

  const lines = await requestLines(log, 3);
  t.equal(lines.length, 3, 'one line per request');
  const [first, second] = lines;
  t.match(first, {
    reqId: 'my-req-42', route: '/v1/chat/completions', method: 'POST', status: 200,
    promptTokens: body.usage.prompt_tokens, completionTokens: 4, finishReason: 'length', level: 30,
  });
  t.type(first!.ttftMs, 'number');
  t.ok((first!.durationMs as number) >= (first!.ttftMs as number), 'duration >= TTFT');
  t.match(second, { reqId: sid, status: 200, completionTokens: 3, finishReason: 'length' });
  t.notOk(log.lines.some((l) => l.msg === 'incoming request' || l.msg === 'request completed'), "Fastify's own request lines are off");
  const text = log.text();
  t.notMatch(text, SECRET_PROMPT, 'no prompt text by default');
  t.notOk(lines.some((l) => 'completion' in l || 'messages' in l), 'no completion text by default');
  t.notMatch(text, KEY, 'the API key appears nowhere');
  log.logger.info({ req: { headers: { authorization: `Bearer ${KEY}` } }, headers: { authorization: KEY } }, 'probe');
  const probe = log.lines.find((l) => l.msg === 'probe') as { req: { headers: { authorization: string } }; headers: { authorization: string } };
  t.equal(probe.req.headers.authorization, '[Redacted]', 'authorization is redacted wherever it is logged');
  t.equal(probe.headers.authorization, '[Redacted]');
  t.notMatch(log.text(), KEY);
});

t.test('401, 404 and probes: lines too (probes at debug)', async (t) => {
  const { log, url } = await serve(t, { apiKeys: [KEY] });
  t.equal((await fetch(`${url}/v1/models`, { headers: { 'x-request-id': 'unauth-1' } })).status, 401);
  t.equal((await fetch(`${url}/nowhere`, { headers: { authorization: `Bearer ${KEY}` } })).status, 404);
  t.equal((await fetch(`${url}/health`)).status, 200);
  const lines = await requestLines(log, 3);
  t.match(lines[0], { reqId: 'unauth-1', status: 401, route: '/v1/models', level: 30 });
  t.match(lines[1], { status: 404, route: 'unmatched' });
  t.match(lines[2], { route: '/health', status: 200, level: 20 });
  t.notOk('promptTokens' in lines[0]!, 'no token fields without a generation');
});

t.test('logPrompts: the prompt and the completion are in the line', async (t) => {
  const { log, url } = await serve(t, { logPrompts: true });
  const r = await chat(url, { max_tokens: 3 });
  const content = (await r.json() as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
  const [line] = await requestLines(log, 1);
  t.same(line!.messages, [{ role: 'user', content: SECRET_PROMPT }]);
  t.equal(line!.completion, content);
});

t.test('the engine stats line: throughput, running, waiting, cache use; quiet when idle', async (t) => {
  const log = capture();
  const state = new EngineState(engine);
  const totals = { promptTokens: 0, generationTokens: 0 };
  const stop = startStatsLog(log.logger, state, totals, { intervalMs: 40, quietMs: 60_000 });
  t.teardown(stop);
  const stats = () => log.lines.filter((l) => l.msg === 'engine stats');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(stats().length, 0, 'idle: nothing within the quiet period');
  // Activity: tokens counted (as the metrics do) and a request running.
  const gen = engine.generate({ promptIds: [2, 10, 11, 12], maxTokens: 60, ignoreEos: true });
  for await (const ev of gen) {
    if (ev.type === 'token') totals.generationTokens++;
    await new Promise((r) => setTimeout(r, 3));
  }
  await new Promise((r) => setTimeout(r, 100));
  const lines = stats();
  t.ok(lines.length >= 1, `lines while active (${lines.length})`);
  const busy = lines.find((l) => (l.generationThroughput as number) > 0);
  t.ok(busy, 'a line reports generation throughput');
  t.match(busy, { running: Number, waiting: Number, preemptions: Number, kvCacheUsage: { global: Number, sliding: Number }, kvCacheCached: { global: Number, sliding: Number }, promptThroughput: Number });
  t.ok(lines.some((l) => typeof l.prefixCacheHitRate === 'number'), 'the interval with the admission has a prefix cache hit rate');
  const last = lines.at(-1)!;
  t.ok((last.kvCacheCached as { global: number }).global > 0, 'the finished request\'s blocks are kept: a share of the global pool is cached');
  const n = stats().length;
  await new Promise((r) => setTimeout(r, 250));
  t.ok(stats().length <= n + 1, 'idle again: at most the line for the last active interval');
  const quick = capture();
  const stopQuick = startStatsLog(quick.logger, state, totals, { intervalMs: 30, quietMs: 100 });
  t.teardown(stopQuick);
  await new Promise((r) => setTimeout(r, 400));
  const idleLines = quick.lines.filter((l) => l.msg === 'engine stats').length;
  t.ok(idleLines >= 1 && idleLines <= 4, `idle: one line per quiet period (${idleLines})`);
});
