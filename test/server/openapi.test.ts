// GET /openapi.json against the app's own routes (collected with an onRoute hook, not a list
// written here), validated as OpenAPI by @seriousme/openapi-schema-validator; and request
// validation from the schemas: unknown fields, wrong types and deeply nested values are
// OpenAI-shaped 400s naming the parameter, over HTTP and on the WebSocket.
import t, { type Test } from 'tap';
import type { AddressInfo } from 'node:net';
import { Validator } from '@seriousme/openapi-schema-validator';
import { WebSocket } from 'ws';
import { buildApp } from '../../src/server/app.ts';
import { startTinyServer } from './tiny-server.ts';

const { engine, model, baseURL } = await startTinyServer('openapi');
const messages = [{ role: 'user', content: 'Hello there' }];

/** Another app over the same engine, on loopback, with every route it registers recorded; closed with `t`. */
async function serveRecorded(t: Test, apiKeys: string[] = []): Promise<{ url: string; routes: { method: string; url: string }[] }> {
  const app = buildApp({ engine, apiKeys });
  const routes: { method: string; url: string }[] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) routes.push({ method, url: r.url });
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, routes };
}

interface OpenApiDoc { openapi: string; paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, unknown> }> }>> }

async function post(path: string, body: string | object): Promise<{ status: number; error: { message: string; type: string; param: string | null; code: string | null } }> {
  const r = await fetch(`${baseURL}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const json = (await r.json()) as { error: { message: string; type: string; param: string | null; code: string | null } };
  return { status: r.status, error: json.error };
}

t.test('GET /openapi.json is valid OpenAPI 3 and documents every route the app registers', async (t) => {
  const { url, routes } = await serveRecorded(t);
  const r = await fetch(`${url}/openapi.json`);
  t.equal(r.status, 200);
  const doc = (await r.json()) as OpenApiDoc;
  t.match(doc.openapi, /^3\./);
  const validator = new Validator();
  const result = await validator.validate(doc as unknown as Record<string, unknown>);
  t.ok(result.valid, `valid OpenAPI ${validator.version}: ${JSON.stringify(result.errors ?? []).slice(0, 2000)}`);
  // HEAD routes are Fastify's automatic twins of the GETs.
  const served = routes.filter((route) => route.method !== 'HEAD');
  t.ok(served.length >= 11, `the app registered ${served.length} routes`);
  for (const route of served) {
    const path = route.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    t.ok(doc.paths[path]?.[route.method.toLowerCase()], `${route.method} ${route.url} is documented`);
  }
  const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
  t.equal(documented.length, served.length, 'and nothing else is');
  const chat = doc.paths['/v1/chat/completions']?.['post']?.responses?.['200']?.content;
  t.ok(chat?.['application/json'], 'the chat.completion schema');
  t.ok(chat?.['text/event-stream'], 'the chat.completion.chunk schema of a stream');
});

t.test('/openapi.json needs no API key, like /health', async (t) => {
  const { url } = await serveRecorded(t, ['sk-test']);
  const doc = await fetch(`${url}/openapi.json`);
  t.equal(doc.status, 200);
  t.match(await doc.json(), { openapi: /^3\./ });
  const models = await fetch(`${url}/v1/models`);
  t.equal(models.status, 401, 'the API itself does');
  await models.body?.cancel();
});

t.test('an unknown field is a 400 unknown_parameter naming it, on every endpoint', async (t) => {
  const cases: [string, object, string][] = [
    ['/v1/chat/completions', { model, messages, frobnicate: 1 }, 'frobnicate'],
    ['/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hi', mood: 'x' }] }, 'messages[0].mood'],
    ['/v1/chat/completions', { model, messages, stream: true, stream_options: { include_usage: true, extra: 1 } }, 'stream_options.extra'],
    ['/v1/completions', { model, prompt: 'hi', frobnicate: 1 }, 'frobnicate'],
    ['/tokenize', { prompt: 'hi', frobnicate: 1 }, 'frobnicate'],
    ['/detokenize', { tokens: [1], frobnicate: 1 }, 'frobnicate'],
  ];
  for (const [path, body, param] of cases) {
    const { status, error } = await post(path, body);
    t.equal(status, 400, `${path} ${param}`);
    t.match(error, { type: 'invalid_request_error', param, code: 'unknown_parameter' });
    t.match(error.message, param);
  }
});

t.test('a wrong type is a 400 naming the parameter and what it must be', async (t) => {
  const cases: [string, object, string, RegExp][] = [
    ['/v1/chat/completions', { model, messages, max_tokens: '5' }, 'max_tokens', /max_tokens: must be an integer >= 1.*got "5"/],
    ['/v1/chat/completions', { model, messages, temperature: 3 }, 'temperature', /temperature: must be a number from 0 to 2, got 3/],
    ['/v1/chat/completions', { model, messages, logprobs: 1 }, 'logprobs', /logprobs: must be a boolean, got 1/],
    ['/v1/chat/completions', { model, messages: [{ role: 'user', content: 7 }] }, 'messages[0].content', /messages\[0\]\.content: must be a string or an array/],
    ['/v1/chat/completions', { model: 7, messages }, 'model', /model: must be a non-empty string, got 7/],
    ['/v1/completions', { model, prompt: 'hi', echo: 'yes' }, 'echo', /echo: must be a boolean/],
    ['/v1/completions', { model, prompt: { text: 'hi' } }, 'prompt', /prompt: must be a string/],
    ['/detokenize', { tokens: [1, 'two'] }, 'tokens', /tokens\[1\]: must be an integer >= 0, got "two"/],
  ];
  for (const [path, body, param, message] of cases) {
    const { status, error } = await post(path, body);
    t.equal(status, 400, `${path} ${param}`);
    t.match(error, { type: 'invalid_request_error', param, code: 'invalid_value' });
    t.match(error.message, message);
  }
  const absent = await post('/v1/chat/completions', { messages });
  t.match(absent, { status: 400, error: { param: 'model', message: /model: required/ } }, 'a missing field');
  const nulls = await post('/v1/chat/completions', { model, messages, max_tokens: 1, temperature: null, stop: null, seed: null, n: null });
  t.equal(nulls.status, 200, 'null is "not set" on optional fields, as OpenAI SDKs send it');
});

t.test('a deeply nested value in a typed field is a 400, not a stack overflow', async (t) => {
  const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
  const cases: [string, string][] = [
    ['/v1/chat/completions', `{"model":${JSON.stringify(model)},"messages":${JSON.stringify(messages)},"stream":${deep}}`],
    ['/v1/completions', `{"model":${JSON.stringify(model)},"prompt":"hi","stream":${deep}}`],
    ['/v1/chat/completions', `{"model":${JSON.stringify(model)},"messages":[{"role":"user","content":${deep}}]}`],
    ['/v1/completions', `{"model":${JSON.stringify(model)},"prompt":${deep}}`],
    ['/tokenize', `{"prompt":"hi","return_token_strs":${deep}}`],
  ];
  for (const [path, body] of cases) {
    const { status, error } = await post(path, body);
    t.equal(status, 400, path);
    t.same(Object.keys(error).sort(), ['code', 'message', 'param', 'type'], 'OpenAI error shape');
    t.equal(error.type, 'invalid_request_error');
    t.ok(error.message.length < 400, `a short message: ${error.message}`);
  }
  t.equal(engine.inFlight, 0, 'nothing was started');
});

t.test('WebSocket frames are validated by the same schemas, deep values included', async (t) => {
  const ws = new WebSocket(`${baseURL.replace('http', 'ws')}/v1/chat/completions/ws`);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  t.teardown(() => ws.close());
  const next = (): Promise<{ type: string; id: string | null; status: number; error: { param: string | null; code: string | null; message: string } }> =>
    new Promise((resolve) => ws.once('message', (d) => resolve(JSON.parse(String(d)))));
  const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
  let reply = next();
  ws.send(`{"type":"request","id":"d","body":{"model":${JSON.stringify(model)},"messages":${JSON.stringify(messages)},"temperature":${deep}}}`);
  t.match(await reply, { type: 'error', id: 'd', status: 400, error: { param: 'temperature', code: 'invalid_value' } });
  reply = next();
  ws.send(JSON.stringify({ type: 'request', id: 'u', body: { model, messages, frobnicate: 1 } }));
  t.match(await reply, { type: 'error', id: 'u', status: 400, error: { param: 'frobnicate', code: 'unknown_parameter' } });
  reply = next();
  ws.send(JSON.stringify({ type: 'request', id: 'x', body: { model, messages }, extra: 1 }));
  t.match(await reply, { type: 'error', id: 'x', status: 400, error: { param: 'extra', code: 'unknown_parameter' } });
});
