// The chat WebSocket (GET /v1/chat/completions/ws) end to end: a real engine on a tiny random
// model, a real server on a loopback port, and the `ws` package as the client. Streamed
// output is compared with the HTTP endpoint's, never with hard-coded text.
import t, { type Test } from 'tap';
import type { AddressInfo, Socket } from 'node:net';
import WebSocket from 'ws';
import { buildApp } from '../../src/server/app.ts';
import { startTinyServer } from './tiny-server.ts';

// Each step lasts at least 5 ms: a 200-token generation takes a second or more on any machine, so
// one cancelled, cut or failed after its first chunk is still running when that happens.
const { engine, baseURL, model } = await startTinyServer('ws', { minStepMs: 5 });
const messages = [{ role: 'user', content: 'Hello there' }];
const wsURL = (base: string): string => `${base.replace(/^http/, 'ws')}/v1/chat/completions/ws`;

interface ErrorBody { message: string; type: string; param: string | null; code: string | null }
interface Chunk {
  id: string;
  object: string;
  model: string;
  choices: { index: number; delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: unknown;
}
type Msg =
  | { type: 'chunk'; id: string; chunk: Chunk }
  | { type: 'done' | 'cancelled'; id: string }
  | { type: 'error'; id: string | null; status: number; error: ErrorBody };

/** One client socket: every message it received, in order, and a way to wait for one. */
class Client {
  readonly received: Msg[] = [];
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.received.push(JSON.parse(data.toString()) as Msg);
      for (const w of this.waiters) w();
    });
  }

  static open(url: string, headers: Record<string, string> = {}): Promise<Client> {
    const ws = new WebSocket(url, { headers });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new Client(ws)));
      ws.once('error', reject);
      ws.once('unexpected-response', (req, res) => {
        req.destroy(); // ws leaves a refused upgrade's connection to the listener
        reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { statusCode: res.statusCode }));
      });
    });
  }

  send(m: unknown): void {
    this.ws.send(typeof m === 'string' ? m : JSON.stringify(m));
  }

  request(id: string, body: object): void {
    this.send({ type: 'request', id, body: { model, messages, temperature: 0, ...body } });
  }

  of(id: string | null): Msg[] {
    return this.received.filter((m) => m.id === id);
  }

  /** Resolves with the first received message (past or future) matching `pred`. */
  async until(pred: (m: Msg) => boolean, timeoutMs = 20_000): Promise<Msg> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.received.find(pred);
      if (hit !== undefined) return hit;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching message within ${timeoutMs} ms; got ${JSON.stringify(this.received.map((m) => [m.type, m.id]))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done(): void { clearTimeout(timer); resolve(); }
        this.waiters.push(done);
      });
      this.waiters = [];
    }
  }

  /** The end message (done, cancelled or error) of `id`. */
  end(id: string): Promise<Msg> {
    return this.until((m) => m.id === id && m.type !== 'chunk');
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise((resolve) => this.ws.once('close', resolve));
    this.ws.close();
    await closed;
  }
}

const chunksOf = (c: Client, id: string): Chunk[] => c.of(id).flatMap((m) => (m.type === 'chunk' ? [m.chunk] : []));
const contentOf = (chunks: readonly Chunk[]): string => chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');

async function httpChat(body: object): Promise<{ content: string; completionTokens: number }> {
  const r = await fetch(`${baseURL}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages, temperature: 0, ...body, stream: false, stream_options: undefined }),
  });
  const j = (await r.json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
  return { content: j.choices[0]!.message.content, completionTokens: j.usage.completion_tokens };
}

/** Polls until the engine has no generation in flight; returns how long that took. */
async function drained(limitMs = 2_000): Promise<number> {
  const start = Date.now();
  while (engine.inFlight > 0 && Date.now() - start < limitMs) await new Promise((r) => setTimeout(r, 10));
  return engine.inFlight === 0 ? Date.now() - start : Infinity;
}

async function openClient(t: Test): Promise<Client> {
  const c = await Client.open(wsURL(baseURL));
  t.teardown(() => c.close());
  return c;
}

async function expectError(t: Test, c: Client, send: () => void, id: string | null, status: number, param: string | RegExp | null): Promise<ErrorBody> {
  const before = c.received.length;
  send();
  const m = await c.until((x) => c.received.indexOf(x) >= before && x.type === 'error');
  t.equal(m.id, id, 'error id');
  if (m.type !== 'error') throw new Error('unreachable');
  t.equal(m.status, status, 'status');
  t.same(Object.keys(m.error).sort(), ['code', 'message', 'param', 'type'], 'OpenAI error shape');
  t.type(m.error.message, 'string');
  if (param instanceof RegExp) t.match(m.error.param, param, 'param');
  else t.equal(m.error.param, param, 'param');
  return m.error;
}

/** The upgrade's status: 101 when it opened, else the refusal's. */
async function upgradeStatus(base: string, headers: Record<string, string>): Promise<number> {
  return Client.open(wsURL(base), headers).then(async (c) => { await c.close(); return 101; }, (e: { statusCode?: number }) => e.statusCode ?? 0);
}

async function serve(opts: { apiKeys?: string[]; corsOrigins?: string[] }): Promise<string> {
  const app = buildApp({ engine, ...opts });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

t.test('two requests on one socket: one cancelled after its first chunk, the other completes', async (t) => {
  const c = await openClient(t);
  const bodyA = { max_tokens: 200, ignore_eos: true };
  const bodyB = { max_tokens: 8, ignore_eos: true };
  c.request('a', bodyA);
  c.request('b', bodyB);
  await c.until((m) => m.id === 'a' && m.type === 'chunk');
  c.send({ type: 'cancel', id: 'a' });
  const endA = await c.end('a');
  t.equal(endA.type, 'cancelled', 'a is cancelled');
  const endB = await c.end('b');
  t.equal(endB.type, 'done', 'b is done');

  const msgsA = c.of('a');
  t.equal(msgsA.at(-1)!.type, 'cancelled', 'nothing after cancelled');
  t.equal(msgsA.filter((m) => m.type !== 'chunk').length, 1, 'one end message for a');
  t.ok(chunksOf(c, 'a').every((ch) => ch.choices[0]!.finish_reason === null), 'a never finished');
  t.ok(chunksOf(c, 'a').length < 200, 'a stopped early');
  const msgsB = c.of('b');
  t.equal(msgsB.at(-1)!.type, 'done', 'done is the last message of b');
  t.equal(msgsB.filter((m) => m.type !== 'chunk').length, 1, 'one end message for b');

  const a = chunksOf(c, 'a');
  const b = chunksOf(c, 'b');
  t.ok([...a, ...b].every((ch) => ch.object === 'chat.completion.chunk' && ch.model === model && /^chatcmpl-/.test(ch.id)
    && ch.choices.length === 1 && ch.choices[0]!.index === 0), 'chat.completion.chunk objects of one choice');
  t.equal(new Set(a.map((ch) => ch.id)).size, 1, 'one completion id for a');
  t.equal(new Set(b.map((ch) => ch.id)).size, 1, 'one completion id for b');
  t.not(a[0]!.id, b[0]!.id, 'different completions');
  t.same(b[0]!.choices[0]!.delta, { role: 'assistant', content: '' }, 'role chunk first');
  t.same(b.filter((ch) => ch.choices[0]!.finish_reason !== null).map((ch) => ch.choices[0]!.finish_reason), ['length'], 'one finish chunk');
  t.equal(b.at(-1)!.choices[0]!.finish_reason, 'length', 'finish chunk last');

  const http = await httpChat(bodyB);
  t.equal(contentOf(b), http.content, 'b streams what the HTTP endpoint returns');
  t.equal(http.completionTokens, 8);
  t.ok(await drained() < Infinity, 'engine.inFlight back to 0');
});

t.test('a cancel right after the request: cancelled, no chunk, nothing left running', async (t) => {
  const c = await openClient(t);
  c.request('x', { max_tokens: 200, ignore_eos: true });
  c.send({ type: 'cancel', id: 'x' });
  t.equal((await c.end('x')).type, 'cancelled');
  t.same(c.of('x').map((m) => m.type), ['cancelled']);
  t.ok(await drained() < Infinity, 'engine.inFlight back to 0');
  // The id is free again once it ended.
  c.request('x', { max_tokens: 3 });
  t.equal((await c.until((m) => m.id === 'x' && m.type === 'done')).type, 'done');
});

t.test('ids can be reused once ended, and usage is streamed when asked', async (t) => {
  const c = await openClient(t);
  const body = { max_tokens: 5, ignore_eos: true, stream_options: { include_usage: true } }; // stream implied
  for (let round = 0; round < 2; round++) {
    const before = c.received.length;
    c.request('same', body);
    await c.until((m) => c.received.indexOf(m) >= before && m.id === 'same' && m.type === 'done');
    const chunks = c.received.slice(before).flatMap((m) => (m.type === 'chunk' ? [m.chunk] : []));
    const last = chunks.at(-1)!;
    t.same(last.choices, [], 'usage chunk has no choices');
    t.match(last.usage, { completion_tokens: 5 });
    t.ok(chunks.slice(0, -1).every((ch) => ch.usage === null), 'other chunks carry usage: null');
    t.equal(contentOf(chunks), (await httpChat(body)).content);
  }
});

t.test('closing the socket cancels all of its requests', async (t) => {
  const c = await Client.open(wsURL(baseURL));
  const body = { max_tokens: 200, ignore_eos: true };
  // How long the same three generations take when nobody stops them (the tiny model is fast).
  const start = Date.now();
  await Promise.all([1, 2, 3].map(() => httpChat(body)));
  const natural = Date.now() - start;
  for (const id of ['p', 'q', 'r']) c.request(id, body);
  for (const id of ['p', 'q', 'r']) await c.until((m) => m.id === id && m.type === 'chunk' && m.chunk.choices[0]?.delta.content !== '');
  t.ok(engine.inFlight > 0, 'generations are running');
  await c.close();
  const ms = await drained(1_500);
  t.ok(ms < natural / 2, `engine.inFlight back to 0 in ${ms} ms, not after the ${natural} ms the generations need`);
  t.ok(c.received.every((m) => m.type === 'chunk'), 'none finished before the close');
  const after = await httpChat({ max_tokens: 4, ignore_eos: true });
  t.equal(after.completionTokens, 4, 'the server still serves');
});

t.test('a socket runs at most 64 requests at once', async (t) => {
  const c = await Client.open(wsURL(baseURL));
  for (let i = 0; i < 64; i++) c.request(`r${i}`, { max_tokens: 200, ignore_eos: true });
  const err = await expectError(t, c, () => c.request('r64', { max_tokens: 2 }), 'r64', 400, 'id');
  t.equal(err.code, 'too_many_requests');
  t.ok(c.of('r0').every((m) => m.type === 'chunk'), 'the others are unaffected');
  await c.close();
  t.ok(await drained(3_000) < Infinity, 'closing cancels all 64');
});

t.test('malformed and refused messages', async (t) => {
  const c = await openClient(t);
  await expectError(t, c, () => c.send('{not json'), null, 400, null);
  await expectError(t, c, () => c.ws.send(Buffer.from(JSON.stringify({ type: 'request', id: 'bin', body: {} })), { binary: true }), null, 400, null);
  await expectError(t, c, () => c.send([1, 2]), null, 400, null);
  await expectError(t, c, () => c.send({ type: 'request', body: { model, messages } }), null, 400, 'id');
  await expectError(t, c, () => c.send({ type: 'request', id: 7, body: { model, messages } }), null, 400, 'id');
  await expectError(t, c, () => c.send({ type: 'bogus', id: 'u' }), 'u', 400, 'type');
  await expectError(t, c, () => c.send({ type: 'request', id: 'f', body: { model, messages }, extra: 1 }), 'f', 400, /extra/);
  await expectError(t, c, () => c.send({ type: 'cancel', id: 'nobody' }), 'nobody', 400, 'id');
  await expectError(t, c, () => c.send({ type: 'request', id: 'nb', body: 'hello' }), 'nb', 400, /body/);
  await expectError(t, c, () => c.request('hot', { temperature: 'hot' }), 'hot', 400, 'temperature');
  await expectError(t, c, () => c.request('unk', { bogus_field: 1 }), 'unk', 400, /bogus_field/);
  await expectError(t, c, () => c.request('nos', { stream: false }), 'nos', 400, /stream/);
  await expectError(t, c, () => c.request('mdl', { model: 'no-such-model' }), 'mdl', 404, 'model');
  await expectError(t, c, () => c.request('ctx', { max_tokens: 100_000 }), 'ctx', 400, /max_tokens|messages/);

  // A duplicate of a running id is refused and leaves the running one alone.
  c.request('dup', { max_tokens: 200, ignore_eos: true });
  await c.until((m) => m.id === 'dup' && m.type === 'chunk');
  const err = await expectError(t, c, () => c.request('dup', { max_tokens: 2 }), 'dup', 400, 'id');
  t.match(err.message, /already running/);
  c.send({ type: 'cancel', id: 'dup' });
  t.equal((await c.until((m) => m.id === 'dup' && (m.type === 'cancelled' || m.type === 'done'))).type, 'cancelled', 'the original is still running and cancellable');

  // The socket is still usable after all of that, and nothing leaked into the engine.
  c.request('ok', { max_tokens: 3, ignore_eos: true });
  t.equal((await c.end('ok')).type, 'done');
  t.equal(contentOf(chunksOf(c, 'ok')), (await httpChat({ max_tokens: 3, ignore_eos: true })).content);
  t.ok(await drained() < Infinity, 'engine.inFlight back to 0');
  t.equal(c.ws.readyState, WebSocket.OPEN, 'errors do not close the socket');
});

t.test('with API keys: the upgrade needs the Bearer key', async (t) => {
  const key = 'sk-ws-test-key';
  const app = buildApp({ engine, apiKeys: [key] });
  const sockets = new Set<Socket>();
  app.server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)); });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => {
    await app.close();
  });
  const secured = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const c = await Client.open(wsURL(secured), { authorization: `Bearer ${key}` });
  c.request('k', { max_tokens: 3, ignore_eos: true });
  t.equal((await c.end('k')).type, 'done');
  t.equal(chunksOf(c, 'k').at(-1)!.choices[0]!.finish_reason, 'length');
  await c.close();

  // A browser offers the key as a subprotocol (it cannot set headers); the server picks the first offered.
  const withProtocols = (protocols: string[]): Promise<{ status: number; protocol: string }> => new Promise((res) => {
    const ws = new WebSocket(wsURL(secured), protocols);
    ws.once('open', () => { res({ status: 101, protocol: ws.protocol }); ws.close(); });
    ws.once('unexpected-response', (_req, response) => { res({ status: response.statusCode ?? 0, protocol: '' }); ws.terminate(); });
    ws.once('error', () => res({ status: 0, protocol: '' }));
  });
  t.same(await withProtocols(['gemma-serve', `openai-insecure-api-key.${key}`]), { status: 101, protocol: 'gemma-serve' }, 'the key as a subprotocol is accepted');
  t.same(await withProtocols(['gemma-serve', 'openai-insecure-api-key.wrong']), { status: 401, protocol: '' }, 'a wrong key as a subprotocol is refused');
  t.same(await withProtocols(['gemma-serve']), { status: 401, protocol: '' }, 'no key at all is refused');
  for (const headers of [{}, { authorization: 'Bearer wrong-key' }, { authorization: key }] as Record<string, string>[]) {
    t.equal(await upgradeStatus(secured, headers), 401, `refused: ${JSON.stringify(headers)}`);
  }
  t.test('a refused upgrade does not leave its connection open on the server', async (t) => {
    const start = Date.now();
    while (sockets.size > 0 && Date.now() - start < 1_000) await new Promise((r) => setTimeout(r, 20));
    t.equal(sockets.size, 0, 'server-side connections closed');
  });
});

t.test('browsers get no more than CORS allows: an Origin must be an allowed one', async (t) => {
  // Browsers apply no CORS to WebSockets; without this any web page could use a local server.
  t.equal(await upgradeStatus(baseURL, {}), 101, 'no Origin (not a browser): accepted');
  t.equal(await upgradeStatus(baseURL, { origin: 'https://evil.example' }), 403, 'CORS off: a browser origin is refused');
  const cors = await serve({ corsOrigins: ['https://app.example'] });
  t.equal(await upgradeStatus(cors, { origin: 'https://app.example' }), 101, 'an allowed origin is accepted');
  t.equal(await upgradeStatus(cors, { origin: 'https://evil.example' }), 403, 'another origin is refused');
  t.equal(await upgradeStatus(cors, {}), 101);
  const any = await serve({ corsOrigins: ['*'] });
  t.equal(await upgradeStatus(any, { origin: 'https://evil.example' }), 101, "'*' allows any origin");
  const c = await Client.open(wsURL(cors), { origin: 'https://app.example' });
  t.teardown(() => c.close());
  c.request('o', { max_tokens: 2, ignore_eos: true });
  t.equal((await c.end('o')).type, 'done', 'an allowed browser origin is served');
});

// Last: it closes the engine.
t.test('a failure mid-stream is an error message for that id', async (t) => {
  const c = await openClient(t);
  c.request('m', { max_tokens: 200, ignore_eos: true });
  await c.until((m) => m.id === 'm' && m.type === 'chunk' && m.chunk.choices[0]?.delta.content !== '');
  await engine.close();
  const end = await c.end('m');
  t.equal(end.type, 'error');
  if (end.type !== 'error') return;
  t.equal(end.status, 503);
  t.equal(end.error.code, 'engine_closed');
  t.equal(c.of('m').at(-1), end, 'nothing after the error');
  await expectError(t, c, () => c.request('n', { max_tokens: 2 }), 'n', 503, null);
});
