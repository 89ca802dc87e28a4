// Every error class of the API through the official client (status, type, code, param), the
// 429 and 503 states with Retry-After, and no internals in any error body.
import t, { type Test } from 'tap';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { Engine } from '../../src/engine/engine.ts';
import { buildApp } from '../../src/server/app.ts';
import { EngineState } from '../../src/server/engine-state.ts';
import { startTinyServer } from './tiny-server.ts';
import { templateOf, tokenizerOf } from '../text/engine-tokenizer.ts';

const { client, model, baseURL, engine } = await startTinyServer('api-errors');
const messages = [{ role: 'user' as const, content: 'Hello there' }];

/** The error a call rejects with (fails the test if it resolves). */
async function failure(t: Test, p: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  const e = await p.then(() => null, (x: unknown) => x);
  t.ok(e instanceof OpenAI.APIError, 'the call failed with an APIError');
  return e as InstanceType<typeof OpenAI.APIError>;
}

/** A second app on a loopback port over `state`, closed with the test. */
async function serveState(t: Test, state: EngineState): Promise<OpenAI> {
  const app = buildApp({ engine: state });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  return new OpenAI({ baseURL: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/v1`, apiKey: 'none', maxRetries: 0 });
}

t.test('an unknown model is a 404 model_not_found', async (t) => {
  const e = await failure(t, client.chat.completions.create({ model: 'gpt-4o', messages }));
  t.ok(e instanceof OpenAI.NotFoundError);
  t.equal(e.status, 404);
  t.equal(e.code, 'model_not_found');
  t.equal(e.param, 'model');
  const m = await failure(t, client.models.retrieve('gpt-4o'));
  t.equal(m.status, 404);
  t.equal((await client.models.retrieve(model)).id, model);
});

t.test('context_length_exceeded states the prompt tokens and the limit', async (t) => {
  const e = await failure(t, client.chat.completions.create({ model, messages, max_tokens: engine.contextLength }));
  t.equal(e.status, 400);
  t.equal(e.code, 'context_length_exceeded');
  t.match(e.message, new RegExp(`maximum context length is ${engine.contextLength} tokens`));
  const prompt = tokenizerOf(engine).encode(templateOf(engine).renderChat(messages, { addGenerationPrompt: true })).length;
  t.match(e.message, new RegExp(`\\(${prompt} in the prompt, ${engine.contextLength} for the completion\\)`));
});

t.test('fields that would change the output but are unsupported are 400s naming them', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ functions: [{ name: 'f', parameters: {} }] }, 'functions'],
    [{ function_call: 'auto' }, 'function_call'],
    [{ prediction: { type: 'content', content: 'x' } }, 'prediction'],
    [{ audio: { voice: 'alloy', format: 'mp3' } }, 'audio'],
    [{ messages: [{ role: 'user', content: 'hi', name: 'bob' }] }, 'messages[0].name'],
    [{ messages: [{ role: 'function', content: 'x', name: 'f' }] }, 'messages[0].role'],
  ];
  for (const [extra, param] of cases) {
    const e = await failure(t, client.chat.completions.create({ model, messages, max_tokens: 1, ...extra } as never));
    t.equal(e.status, 400, param);
    t.equal(e.param, param);
    t.equal(e.type, 'invalid_request_error');
  }
});

t.test('metadata-only fields and harmless defaults are accepted', async (t) => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 2, temperature: 0,
    metadata: { team: 'a' }, store: false, service_tier: 'auto', user: 'u1',
    response_format: { type: 'text' }, tools: [], parallel_tool_calls: false,
  } as never);
  t.equal(r.choices.length, 1);
});

t.test('priority: an integer extension; a bad one is a 400 naming it', async (t) => {
  const ok = await client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 0, priority: -5 } as never);
  t.equal(ok.choices.length, 1);
  const e = await failure(t, client.chat.completions.create({ model, messages, max_tokens: 2, priority: 'high' } as never));
  t.equal(e.param, 'priority');
});

t.test('n choices: n indexes, per-choice seeds reproducible, usage counts the prompt once', async (t) => {
  const req = { model, messages, max_tokens: 6, temperature: 1, seed: 7, n: 3 };
  const a = await client.chat.completions.create(req);
  const b = await client.chat.completions.create(req);
  t.same(a.choices.map((c) => c.index), [0, 1, 2]);
  t.same(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
  const single = await client.chat.completions.create({ ...req, n: 1 });
  t.equal(a.choices[0]!.message.content, single.choices[0]!.message.content, 'choice 0 uses the seed itself');
  t.equal(a.usage!.prompt_tokens, single.usage!.prompt_tokens);
  const stream = await client.chat.completions.create({ ...req, stream: true });
  const texts = ['', '', ''];
  for await (const c of stream) for (const ch of c.choices) texts[ch.index] += ch.delta.content ?? '';
  t.same(texts, a.choices.map((c) => c.message.content), 'streamed choices equal the non-streamed ones');
  const tooMany = await failure(t, client.chat.completions.create({ ...req, n: 1000 }));
  t.equal(tooMany.param, 'n');
});

t.test('ignore_eos and min_tokens', async (t) => {
  const eos = await client.chat.completions.create({ model, messages, max_tokens: 30, temperature: 0, ignore_eos: true } as never);
  t.equal(eos.usage!.completion_tokens, 30);
  t.equal(eos.choices[0]!.finish_reason, 'length');
  const greedy = await client.chat.completions.create({ model, messages, max_tokens: 30, temperature: 0, logprobs: true });
  // With min_tokens = max_tokens no EOS can end it early.
  const min = await client.chat.completions.create({ model, messages, max_tokens: 12, min_tokens: 12, temperature: 0 } as never);
  t.equal(min.usage!.completion_tokens, 12);
  t.ok(greedy.usage!.completion_tokens >= 1);
  const bad = await failure(t, client.chat.completions.create({ model, messages, max_tokens: 3, min_tokens: 5 } as never));
  t.equal(bad.param, 'min_tokens');
});

t.test('abort mid-stream: the generation ends in the worker and the next request is served', async (t) => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model, messages, max_tokens: 200, temperature: 0, stream: true, ignore_eos: true } as never,
    { signal: controller.signal },
  ) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
  let seen = 0;
  try {
    for await (const _ of stream) if (++seen === 3) controller.abort();
  } catch (e) {
    t.ok(e instanceof Error, 'the aborted iteration may end or throw an abort error');
  }
  t.ok(seen >= 3 && seen < 200, `the stream stopped after the abort (${seen} chunks)`);
  for (let i = 0; i < 100 && engine.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(engine.inFlight, 0, 'nothing left running');
  const next = await client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 0 });
  t.equal(next.choices.length, 1);
});

t.test('503 with Retry-After while the model loads, after a failed load, and while draining', async (t) => {
  const loading = await serveState(t, new EngineState(new Promise<Engine>(() => {})));
  const e = await failure(t, loading.chat.completions.create({ model, messages }));
  t.equal(e.status, 503);
  t.equal(e.code, 'model_loading');
  t.ok(Number(e.headers?.get('retry-after')) > 0);
  const failed = await serveState(t, new EngineState(Promise.reject(new Error('disk on fire'))));
  const f = await failure(t, failed.chat.completions.create({ model, messages }));
  t.equal(f.status, 503);
  t.notMatch(f.message, /disk on fire/, 'internals stay in the log');
  const draining = new EngineState(engine);
  draining.drain();
  const d = await failure(t, (await serveState(t, draining)).chat.completions.create({ model, messages }));
  t.equal(d.status, 503);
  t.equal(d.code, 'server_draining');
  const ready = await fetch(`${baseURL}/ready`);
  t.equal(ready.status, 200);
});

t.test('429 with Retry-After when running and waiting slots are full', async (t) => {
  // Steps of at least 5 ms: the 200-token stream holds the one slot for a second or more on any machine.
  const small = await Engine.start({ modelDir: engine.exportDir, maxNumSeqs: 1, maxWaiting: 0, kvCacheBytes: 8 * 2 ** 20, minStepMs: 5 });
  t.teardown(() => small.close());
  const c = await serveState(t, new EngineState(small));
  const stream = await c.chat.completions.create({ model: small.modelId, messages, max_tokens: 200, temperature: 0, stream: true, ignore_eos: true } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
  const it = stream[Symbol.asyncIterator]();
  await it.next(); // admitted and running
  const e = await failure(t, c.chat.completions.create({ model: small.modelId, messages, max_tokens: 1 }));
  t.equal(e.status, 429);
  t.ok(e instanceof OpenAI.RateLimitError);
  t.equal(e.code, 'queue_full');
  t.ok(Number(e.headers?.get('retry-after')) >= 1);
  await it.return?.();
});

t.test('a request longer than the KV cache can hold alone is a 400 before admission', async (t) => {
  const small = await Engine.start({ modelDir: engine.exportDir, kvCacheBytes: 96 * 1024 });
  t.teardown(() => small.close());
  const limit = small.maxSequenceTokens;
  t.ok(limit > 20 && limit < small.contextLength, `the cache holds ${limit} of ${small.contextLength} tokens`);
  const c = await serveState(t, new EngineState(small));
  const e = await failure(t, c.chat.completions.create({ model: small.modelId, messages, max_tokens: limit }));
  t.equal(e.status, 400);
  t.equal(e.code, 'kv_cache_too_small');
  t.equal(e.param, 'max_tokens');
  t.match(e.message, new RegExp(`at most ${limit} tokens`));
  // Without max_tokens, the completion may fill what the cache holds, and is not cut short silently.
  const r = await c.chat.completions.create({ model: small.modelId, messages, temperature: 0, ignore_eos: true } as never) as OpenAI.ChatCompletion;
  t.equal(r.usage!.total_tokens, limit);
  t.equal(r.choices[0]!.finish_reason, 'length');
});

t.test('no stack traces or file paths in error bodies', async (t) => {
  const bodies = [
    await fetch(`${baseURL}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":' }),
    await fetch(`${baseURL}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, messages: 'x' }) }),
    await fetch(`${baseURL}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: [[]] }) }),
  ];
  for (const r of bodies) {
    const text = await r.text();
    t.equal(r.status, 400);
    t.notMatch(text, /\bat .*\(|\.ts:\d+|node_modules/);
    const body = JSON.parse(text) as { error: Record<string, unknown> };
    t.same(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  }
});
