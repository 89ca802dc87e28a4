// API keys, CORS and the body limit, end to end: real engine on a tiny random model, real
// HTTP servers on ephemeral ports, the official openai client and fetch.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { buildApp, type AppOptions } from '../../src/server/app.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-auth-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: join(dir, 'ckpt'), set: { max_position_embeddings: '256' } });
const engine = await Engine.start({ modelDir: join(dir, 'ckpt'), dataDir: join(dir, 'data'), kvCacheBytes: 8 * 2 ** 20 });
t.teardown(async () => { await engine.close(); });

async function serve(opts: Omit<AppOptions, 'engine'>): Promise<string> {
  const app = buildApp({ engine, ...opts });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => { await app.close(); });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

const KEY = 'sk-test-right-key';
const secured = await serve({ apiKeys: ['other-key', KEY], corsOrigins: ['https://app.example'], bodyLimitBytes: 64 * 1024 });
const open = await serve({});
const model = engine.modelId;
const messages = [{ role: 'user' as const, content: 'Hello there' }];
const client = (baseURL: string, apiKey: string): OpenAI => new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0 });

t.test('the right key works', async (t) => {
  const r = await client(secured, KEY).chat.completions.create({ model, messages, max_tokens: 2, temperature: 0 });
  t.equal(r.usage!.completion_tokens, 2);
  t.equal((await client(secured, 'other-key').models.list()).data[0]!.id, model);
});

t.test('a wrong key is a 401 invalid_api_key', async (t) => {
  for (const bad of ['sk-test-wrong-key', 'x', KEY + 'x', KEY.slice(0, -1)]) {
    const err = await client(secured, bad).chat.completions.create({ model, messages, max_tokens: 2 }).catch((e: unknown) => e);
    t.ok(err instanceof OpenAI.AuthenticationError, bad);
    const e = err as InstanceType<typeof OpenAI.AuthenticationError>;
    t.equal(e.status, 401);
    t.equal(e.code, 'invalid_api_key');
    t.equal(e.type, 'invalid_request_error');
  }
});

t.test('a missing key is a 401 in OpenAI error shape', async (t) => {
  for (const headers of [{}, { authorization: 'Bearer ' }, { authorization: KEY }, { authorization: `Basic ${KEY}` }] as Record<string, string>[]) {
    const r = await fetch(`${secured}/v1/models`, { headers });
    t.equal(r.status, 401);
    const body = (await r.json()) as { error: Record<string, unknown> };
    t.same(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
    t.equal(body.error['code'], 'invalid_api_key');
    t.equal(body.error['param'], null);
  }
  const post = await fetch(`${secured}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, messages }) });
  t.equal(post.status, 401);
});

t.test('/health needs no key', async (t) => {
  const r = await fetch(`${secured}/health`);
  t.equal(r.status, 200);
  t.same(await r.json(), { status: 'ok' });
});

t.test('no keys configured: open', async (t) => {
  const r = await client(open, 'anything').chat.completions.create({ model, messages, max_tokens: 2, temperature: 0 });
  t.equal(r.usage!.completion_tokens, 2);
  t.equal((await fetch(`${open}/v1/models`)).status, 200);
});

t.test('an oversized body is a 413 in OpenAI error shape', async (t) => {
  const body = JSON.stringify({ model, messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] });
  const r = await fetch(`${secured}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` }, body });
  t.equal(r.status, 413);
  const j = (await r.json()) as { error: Record<string, unknown> };
  t.equal(j.error['type'], 'invalid_request_error');
  t.equal(j.error['code'], 'request_too_large');
  t.equal(j.error['param'], null);
  t.type(j.error['message'], 'string');
  const viaClient = await client(secured, KEY).chat.completions.create({ model, messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] }).catch((e: unknown) => e);
  t.ok(viaClient instanceof OpenAI.APIError);
  t.equal((viaClient as InstanceType<typeof OpenAI.APIError>).status, 413);
});

t.test('CORS off: no Access-Control-Allow-Origin', async (t) => {
  const r = await fetch(`${open}/v1/models`, { headers: { origin: 'https://app.example' } });
  t.equal(r.status, 200);
  t.equal(r.headers.get('access-control-allow-origin'), null);
  const pre = await fetch(`${open}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } });
  t.equal(pre.headers.get('access-control-allow-origin'), null);
});

t.test('CORS on for an origin: header present, preflight 204', async (t) => {
  const r = await fetch(`${secured}/v1/models`, { headers: { origin: 'https://app.example', authorization: `Bearer ${KEY}` } });
  t.equal(r.status, 200);
  t.equal(r.headers.get('access-control-allow-origin'), 'https://app.example');
  const denied = await fetch(`${secured}/v1/models`, { headers: { origin: 'https://evil.example', authorization: `Bearer ${KEY}` } });
  t.equal(denied.headers.get('access-control-allow-origin'), null);
  const unauth = await fetch(`${secured}/v1/models`, { headers: { origin: 'https://app.example' } });
  t.equal(unauth.status, 401);
  t.equal(unauth.headers.get('access-control-allow-origin'), 'https://app.example', 'a browser can read the 401');
  const pre = await fetch(`${secured}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
  t.equal(pre.status, 204);
  t.equal(pre.headers.get('access-control-allow-origin'), 'https://app.example');
  t.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
  t.match((pre.headers.get('access-control-allow-headers') ?? '').toLowerCase(), /authorization/);
  t.match((pre.headers.get('access-control-allow-headers') ?? '').toLowerCase(), /content-type/);
});
