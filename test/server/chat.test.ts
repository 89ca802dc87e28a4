// The server end to end: a real engine (worker thread) on a tiny random model, a real HTTP
// server on an ephemeral port, and the official openai client.
import t from 'tap';
import OpenAI from 'openai';
import { startTinyServer } from './tiny-server.ts';
import { templateOf, tokenizerOf } from '../text/engine-tokenizer.ts';

const { client, model, baseURL, engine } = await startTinyServer('server');
const messages = [{ role: 'user' as const, content: 'Hello there' }];

t.test('non-streaming: content and usage', async (t) => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
  t.match(r.id, /^chatcmpl-/);
  t.equal(r.object, 'chat.completion');
  t.equal(r.choices.length, 1);
  t.equal(r.choices[0]!.message.role, 'assistant');
  t.type(r.choices[0]!.message.content, 'string');
  t.ok(['stop', 'length'].includes(r.choices[0]!.finish_reason));
  const rendered = templateOf(engine).renderChat(messages, { addGenerationPrompt: true });
  t.equal(r.usage!.prompt_tokens, tokenizerOf(engine).encode(rendered).length);
  t.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
  t.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 8);
});

t.test('max_tokens 3 ends with length after 3 tokens', async (t) => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 3, temperature: 0 });
  t.equal(r.choices[0]!.finish_reason, 'length');
  t.equal(r.usage!.completion_tokens, 3);
});

t.test('streaming: role chunk, content chunks, a finish chunk, then the end', async (t) => {
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0, stream: true });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  t.ok(chunks.length >= 2);
  t.equal(chunks[0]!.object, 'chat.completion.chunk');
  t.same(chunks[0]!.choices[0]!.delta, { role: 'assistant', content: '' });
  t.ok(chunks.at(-1)!.choices[0]!.finish_reason !== null);
  const streamed = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
  const whole = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0 });
  t.equal(streamed, whole.choices[0]!.message.content, 'stream and non-stream agree at temperature 0');
});

t.test('same seed, same output at temperature 1', async (t) => {
  const req = { model, messages, max_tokens: 12, temperature: 1, seed: 1234 };
  const a = await client.chat.completions.create(req);
  const b = await client.chat.completions.create(req);
  t.equal(a.choices[0]!.message.content, b.choices[0]!.message.content);
  t.equal(a.usage!.completion_tokens, b.usage!.completion_tokens);
});

t.test('a bad parameter is a 400 naming it', async (t) => {
  const err = await client.chat.completions.create({ model, messages, temperature: 'hot' as unknown as number }).catch((e: unknown) => e);
  t.ok(err instanceof OpenAI.BadRequestError);
  const e = err as InstanceType<typeof OpenAI.BadRequestError>;
  t.equal(e.status, 400);
  t.equal(e.param, 'temperature');
  t.equal(e.type, 'invalid_request_error');
  const unknown = await client.chat.completions.create({ model, messages, bogus_field: 1 } as never).catch((x: unknown) => x);
  t.ok(unknown instanceof OpenAI.BadRequestError);
  t.match((unknown as Error).message, /bogus_field/);
});

t.test('a prompt beyond the context is context_length_exceeded', async (t) => {
  const long = [{ role: 'user' as const, content: 'word '.repeat(400) }];
  const err = await client.chat.completions.create({ model, messages: long, max_tokens: 4 }).catch((e: unknown) => e);
  t.ok(err instanceof OpenAI.BadRequestError);
  t.equal((err as InstanceType<typeof OpenAI.BadRequestError>).code, 'context_length_exceeded');
});

t.test('/health and /v1/models answer while a long generation runs', async (t) => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 200, temperature: 0, stream: true }, { signal: controller.signal });
  const it = stream[Symbol.asyncIterator]();
  await it.next(); // generation has started
  const t0 = performance.now();
  const health = await fetch(`${baseURL}/health`);
  t.equal(health.status, 200);
  t.same(await health.json(), { status: 'ok' });
  t.comment(`/health took ${(performance.now() - t0).toFixed(1)} ms mid-generation`);
  const models = await client.models.list();
  t.equal(models.data[0]!.id, model);
  controller.abort();
  await it.return?.();
  // The aborted sequence freed its cache: a new request still runs.
  const r = await client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 0 });
  t.equal(r.usage!.completion_tokens, 2);
});

t.test('unknown routes and malformed JSON get OpenAI-shaped errors', async (t) => {
  const nf = await fetch(`${baseURL}/v1/nope`);
  t.equal(nf.status, 404);
  t.type(((await nf.json()) as { error: { message: string } }).error.message, 'string');
  const bad = await fetch(`${baseURL}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
  t.equal(bad.status, 400);
  t.equal(((await bad.json()) as { error: { type: string } }).error.type, 'invalid_request_error');
});
