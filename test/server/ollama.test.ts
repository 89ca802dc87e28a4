// Ollama's API through the real server on a tiny random model, driven by Ollama's own clients
// with only the base URL changed: the `ollama` npm client (list, show, generate and chat,
// streamed and not, ps, version), @langchain/ollama's ChatOllama (invoke, stream, structured
// output) and its Ollama LLM; the NDJSON framing read raw; errors in Ollama's shape
// ({"error": "..."}) with the status Ollama uses; the served model's aliases on every route.
import t, { type Test } from 'tap';
import type { AddressInfo } from 'node:net';
import { Ollama } from 'ollama';
import { ChatOllama, Ollama as OllamaLlm } from '@langchain/ollama';
import { z } from 'zod';
import { buildApp } from '../../src/server/app.ts';
import { startTinyServer } from './tiny-server.ts';

const { engine, baseURL, client: openai, model: primary } = await startTinyServer('ollama', { maxPositions: 1024, modelAliases: ['gemma2:9b', 'gemma2'] });
const ollama = new Ollama({ host: baseURL });
const options = { num_predict: 12, seed: 7 };

type Json = Record<string, unknown>;

async function post(path: string, body: unknown, headers: Record<string, string> = {}, base = baseURL): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

/** The body as Ollama's error: exactly {"error": "<a message>"}. */
function ollamaError(t: Test, text: string, pattern: RegExp): void {
  const body = JSON.parse(text) as Json;
  t.same(Object.keys(body), ['error'], `Ollama's error shape: ${text}`);
  t.match(body['error'], pattern);
}

t.test('the ollama client lists, shows, reports the running model and the version', async (t) => {
  const list = await ollama.list();
  t.same(list.models.map((m) => m.name), [primary, 'gemma2:9b', 'gemma2'], 'every served name, the primary first');
  t.equal(list.models[0]!.details.family, 'gemma2');
  t.ok(list.models[0]!.size > 0);
  const show = await ollama.show({ model: 'gemma2' });
  t.equal(show.details.family, 'gemma2');
  t.match(show.template, /start_of_turn/, "the checkpoint's chat template");
  t.equal((show.model_info as unknown as Json)['gemma2.context_length'], engine.contextLength);
  const ps = await ollama.ps();
  t.equal(ps.models.length, 1);
  t.equal(ps.models[0]!.name, primary);
  t.match((await ollama.version()).version, /^\d+\.\d+\.\d+$/);
  const root = await fetch(`${baseURL}/`);
  t.equal(await root.text(), 'Ollama is running');
});

t.test('generate: streamed chunks add up to the whole response of the same seed, with true counts and durations', async (t) => {
  const whole = await ollama.generate({ model: 'gemma2', prompt: 'Tell me a story.', options, stream: false });
  t.equal(whole.done, true);
  t.equal(whole.model, 'gemma2', 'the model as requested');
  t.equal(whole.eval_count, options.num_predict, 'num_predict tokens (a random model rarely stops)');
  t.equal(whole.done_reason, 'length');
  t.ok(whole.prompt_eval_count > 5, 'the templated prompt');
  t.ok(whole.prompt_eval_duration > 0 && whole.eval_duration > 0, 'durations measured');
  t.ok(whole.total_duration >= whole.prompt_eval_duration + whole.eval_duration, 'total covers both phases');
  t.ok(whole.total_duration < 60e9, 'in nanoseconds, not something larger');
  let text = '';
  let last: Json = {};
  for await (const part of await ollama.generate({ model: 'gemma2', prompt: 'Tell me a story.', options, stream: true })) {
    text += part.response;
    last = part as unknown as Json;
  }
  t.equal(text, whole.response);
  t.equal(last['done'], true);
  t.equal(last['eval_count'], whole.eval_count);
  t.equal(last['prompt_eval_count'], whole.prompt_eval_count);
});

t.test('chat: streamed and not agree per seed; system and raw change the prompt', async (t) => {
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }];
  const whole = await ollama.chat({ model: 'gemma2:9b', messages, options, stream: false });
  t.equal(whole.message.role, 'assistant');
  t.equal(whole.eval_count, options.num_predict);
  let text = '';
  for await (const part of await ollama.chat({ model: 'gemma2:9b', messages, options, stream: true })) text += part.message.content;
  t.equal(text, whole.message.content);
  // /api/generate with system is the same conversation through the same template.
  const generated = await ollama.generate({ model: 'gemma2', system: 'Be brief.', prompt: 'Hi', options, stream: false });
  t.equal(generated.response, whole.message.content);
  t.equal(generated.prompt_eval_count, whole.prompt_eval_count);
  const raw = await ollama.generate({ model: 'gemma2', prompt: 'Hi', raw: true, options, stream: false });
  t.equal(raw.prompt_eval_count, 1 + (await engine.encodeText('Hi')).length, 'raw: <bos> and the text, no template');
});

t.test('streaming NDJSON framing: one JSON object per line, the last and only the last with done: true', async (t) => {
  for (const path of ['/api/generate', '/api/chat']) {
    const body = path === '/api/chat' ? { model: 'gemma2', messages: [{ role: 'user', content: 'Hi' }], options } : { model: 'gemma2', prompt: 'Hi', options };
    const r = await post(path, body);
    t.equal(r.status, 200);
    t.equal(r.type, 'application/x-ndjson', 'streamed when stream is absent');
    t.ok(r.text.endsWith('\n'), 'every line ends with a newline');
    const lines = r.text.slice(0, -1).split('\n').map((l) => JSON.parse(l) as Json);
    t.ok(lines.length >= 2);
    t.same(lines.map((l) => l['done']), [...lines.slice(1).map(() => false), true], `${path}: done only on the last`);
    const last = lines[lines.length - 1]!;
    for (const k of ['total_duration', 'load_duration', 'prompt_eval_count', 'prompt_eval_duration', 'eval_count', 'eval_duration']) {
      t.ok(Number.isInteger(last[k]), `${path}: ${k} is an integer`);
    }
    t.equal(last['done_reason'], 'length');
    t.ok(lines.length - 1 <= (last['eval_count'] as number), 'no more text lines than tokens');
  }
});

t.test('options: num_ctx bounds the request, stop and format apply, runner settings are ignored, bad types are 400s', async (t) => {
  const prompt = 'Count.';
  const base = await ollama.generate({ model: 'gemma2', prompt, options: { num_predict: 1 }, stream: false });
  const ctx = base.prompt_eval_count + 5;
  const capped = await ollama.generate({ model: 'gemma2', prompt, options: { num_ctx: ctx, num_predict: 100, seed: 1 }, stream: false });
  t.equal(capped.eval_count, 5, 'num_predict cut to what num_ctx leaves');
  t.equal(capped.done_reason, 'length');
  const over = await post('/api/generate', { model: 'gemma2', prompt, stream: false, options: { num_ctx: base.prompt_eval_count } });
  t.equal(over.status, 400);
  ollamaError(t, over.text, /options\.num_ctx/);
  const ignored = await ollama.generate({ model: 'gemma2', prompt, stream: false, options: { ...options, num_gpu: 1, num_thread: 2, mirostat: 0, numa: false, use_mmap: true } });
  const plain = await ollama.generate({ model: 'gemma2', prompt, stream: false, options });
  t.equal(ignored.response, plain.response, 'runner settings change nothing');
  const greedy = await ollama.generate({ model: 'gemma2', prompt, stream: false, options: { num_predict: 8, temperature: 0 } });
  const text = greedy.response ?? '';
  t.ok(text.length >= 4, `greedy text to cut: ${JSON.stringify(greedy.response)}`);
  const cut = text.slice(2, 4);
  const stopped = await ollama.generate({ model: 'gemma2', prompt, stream: false, options: { num_predict: 8, temperature: 0, stop: [cut] } });
  t.equal(stopped.response, text.slice(0, text.indexOf(cut)), 'the stop string ends it, not returned');
  t.equal(stopped.done_reason, 'stop');
  let objects = 0;
  for (const seed of [1, 2, 3, 4]) {
    const json = await ollama.generate({ model: 'gemma2', prompt: 'JSON please', format: 'json', stream: false, options: { num_predict: 300, seed } });
    if (json.done_reason !== 'stop') continue;
    t.type(JSON.parse(json.response ?? ''), 'object', `format json: ${json.response}`);
    objects++;
  }
  t.ok(objects >= 2, `${objects}/4 JSON objects ended within 300 tokens`);
  for (const [bad, pattern] of [[{ temperature: 'hot' }, /options\.temperature/], [{ num_predict: 1.5 }, /options\.num_predict/], [{ stop: 3 }, /options\.stop/], [{ num_gpu: 'all' }, /options\.num_gpu/], [{ nonsense: 1 }, /nonsense/]] as const) {
    const r = await post('/api/generate', { model: 'gemma2', prompt, options: bad });
    t.equal(r.status, 400, JSON.stringify(bad));
    ollamaError(t, r.text, pattern);
  }
});

t.test('format with a JSON schema: ChatOllama.withStructuredOutput parses with zod', async (t) => {
  const Answer = z.object({ ok: z.boolean(), mood: z.enum(['calm', 'glad']) });
  const chat = new ChatOllama({ baseUrl: baseURL, model: 'gemma2', numPredict: 200, temperature: 1 });
  let parsed = 0;
  for (const seed of [1, 2, 3]) {
    const out = await new ChatOllama({ baseUrl: baseURL, model: 'gemma2', numPredict: 200, seed }).withStructuredOutput(Answer).invoke('How are you?');
    t.same(Answer.parse(out), out);
    parsed++;
  }
  t.equal(parsed, 3);
  const raw = await chat.invoke('JSON', { format: { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['n'] } });
  t.match(JSON.parse(raw.content as string), { n: Number });
});

t.test('ChatOllama (invoke, stream) and the Ollama LLM (invoke, stream) with only the base URL changed', async (t) => {
  const chat = new ChatOllama({ baseUrl: baseURL, model: 'gemma2', numPredict: 10, seed: 5 });
  const reply = await chat.invoke([['system', 'Be brief.'], ['human', 'Hello']]);
  t.type(reply.content, 'string');
  t.equal(reply.usage_metadata?.output_tokens, 10);
  let streamed = '';
  for await (const chunk of await chat.stream([['system', 'Be brief.'], ['human', 'Hello']])) streamed += chunk.content as string;
  t.equal(streamed, reply.content, 'same seed, same text');
  // The LLM sends no seed: greedy, so both calls write the same text.
  const llm = new OllamaLlm({ baseUrl: baseURL, model: 'gemma2:latest', numPredict: 10, temperature: 0 });
  const text = await llm.invoke('Once upon a time');
  t.type(text, 'string');
  let pieces = '';
  for await (const piece of await llm.stream('Once upon a time')) pieces += piece;
  t.equal(pieces, text);
});

t.test("errors are Ollama's {\"error\": message}: unknown model 404, images and template 400, no retries", async (t) => {
  const unknown = await post('/api/chat', { model: 'llama3', messages: [{ role: 'user', content: 'Hi' }] });
  t.equal(unknown.status, 404, 'as Ollama answers an unknown model');
  ollamaError(t, unknown.text, /^model 'llama3' not found/);
  const e = await ollama.generate({ model: 'llama3', prompt: 'x', stream: false }).then(() => null, (err: unknown) => err as { status_code?: number; message?: string });
  t.equal(e?.status_code, 404);
  t.match(e?.message, /model 'llama3' not found/, 'the client shows the message, not [object Object]');
  const started = Date.now();
  await t.rejects(new OllamaLlm({ baseUrl: baseURL, model: 'llama3', maxRetries: 0 }).invoke('x'), /not found/);
  await t.rejects(new ChatOllama({ baseUrl: baseURL, model: 'llama3' }).invoke('x'), /not found/);
  t.ok(Date.now() - started < 10_000, 'refused at once');
  const refused: [string, Json, RegExp][] = [
    ['/api/generate', { model: 'gemma2', prompt: 'x', images: ['aGk='] }, /^images: /],
    ['/api/generate', { model: 'gemma2', prompt: 'x', template: '{{ .Prompt }}' }, /^template: /],
    ['/api/generate', { model: 'gemma2', prompt: 'x', suffix: 'end' }, /^suffix: /],
    ['/api/generate', { model: 'gemma2', prompt: 'x', raw: true, system: 'y' }, /^system: /],
    ['/api/chat', { model: 'gemma2', messages: [{ role: 'user', content: 'x', images: ['aGk='] }] }, /^messages\[0\]\.images: /],
    ['/api/chat', { model: 'gemma2', messages: [{ role: 'user', content: 'x' }], think: true }, /^think: /],
    ['/api/chat', { model: 'gemma2', messages: [{ role: 'robot', content: 'x' }] }, /messages\[0\]\.role/],
    ['/api/generate', { prompt: 'x' }, /model/],
  ];
  for (const [path, body, pattern] of refused) {
    const r = await post(path, body);
    t.equal(r.status, 400, JSON.stringify(body));
    ollamaError(t, r.text, pattern);
  }
  // Fields that change nothing are accepted: what Python clients send for "not set".
  const nulls = await post('/api/generate', { model: 'gemma2', prompt: 'x', stream: false, images: null, template: null, system: null, format: '', keep_alive: '5m', context: [], options: { num_predict: 2, stop: null } });
  t.equal(nulls.status, 200, nulls.text);
  const notFound = await fetch(`${baseURL}/api/nothing`);
  t.equal(notFound.status, 404);
  ollamaError(t, await notFound.text(), /Unknown request URL/);
  const load = JSON.parse((await post('/api/chat', { model: 'gemma2', messages: [] })).text) as Json;
  t.match(load, { done: true, done_reason: 'load', message: { role: 'assistant', content: '' } }, 'an empty conversation only loads the model');
});

t.test('API keys apply to /api/* (401 in Ollama\'s shape), GET / stays open, 413 in the same shape', async (t) => {
  const app = buildApp({ engine, apiKeys: ['sesame'], bodyLimitBytes: 4096 });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const missing = await post('/api/chat', { model: 'gemma2', messages: [] }, {}, base);
  t.equal(missing.status, 401);
  ollamaError(t, missing.text, /API key/);
  const tags = await fetch(`${base}/api/tags`);
  t.equal(tags.status, 401);
  ollamaError(t, await tags.text(), /API key/);
  t.equal((await fetch(`${base}/`)).status, 200, 'the probe needs no key');
  const keyed = new Ollama({ host: base, headers: { Authorization: 'Bearer sesame' } });
  t.equal((await keyed.generate({ model: 'gemma2', prompt: 'Hi', options: { num_predict: 2 }, stream: false })).eval_count, 2);
  const chat = new ChatOllama({ baseUrl: base, model: 'gemma2', numPredict: 2, headers: { Authorization: 'Bearer sesame' } });
  t.type((await chat.invoke('Hi')).content, 'string');
  const large = await post('/api/generate', { model: 'gemma2', prompt: 'x'.repeat(8000) }, { authorization: 'Bearer sesame' }, base);
  t.equal(large.status, 413);
  ollamaError(t, large.text, /too large/);
  const openaiShape = await post('/v1/chat/completions', { model: 'gemma2', messages: [] }, {}, base);
  t.match(JSON.parse(openaiShape.text), { error: { message: String, code: 'invalid_api_key' } }, 'the OpenAI routes keep OpenAI\'s shape');
});

t.test('aliases and name:latest are accepted on the OpenAI routes too, and listed by /v1/models', async (t) => {
  t.same((await openai.models.list()).data.map((m) => m.id), [primary, 'gemma2:9b', 'gemma2']);
  for (const model of ['gemma2', 'gemma2:latest', 'gemma2:9b', primary]) {
    const r = await openai.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    t.equal(r.model, model);
  }
  t.equal((await openai.models.retrieve('gemma2:latest')).id, 'gemma2');
  const missing = await openai.chat.completions.create({ model: 'gemma2:2b', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 }).then(() => null, (e: unknown) => e as { status?: number });
  t.equal(missing?.status, 404, 'another tag is another model');
});

t.test('tools in /api/chat: a conversation with calls and results renders them into the prompt; format with tools is a 400', async (t) => {
  // The calls themselves (a random model does not write them): ollama-tools.test.ts.
  const tools = [{ type: 'function', function: { name: 'get_time', description: 'The time in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const question = { role: 'user', content: 'What time is it in Oslo?' };
  const first = await ollama.chat({ model: 'gemma2', messages: [question], tools, stream: false, options: { num_predict: 2 } });
  const next = await ollama.chat({
    model: 'gemma2', tools, stream: false, options: { num_predict: 2 },
    messages: [question, { role: 'assistant', content: '', tool_calls: [{ function: { name: 'get_time', arguments: { city: 'Oslo' } } }] }, { role: 'tool', content: '12:00', tool_name: 'get_time' }],
  });
  t.equal(next.done, true);
  t.ok(next.prompt_eval_count > first.prompt_eval_count + 10, 'the call and its result are in the prompt');
  const without = await ollama.chat({ model: 'gemma2', messages: [question], stream: false, options: { num_predict: 2 } });
  t.ok(first.prompt_eval_count > without.prompt_eval_count + 20, 'the tools are described in the prompt');
  const both = await post('/api/chat', { model: 'gemma2', messages: [question], tools, format: 'json' });
  t.equal(both.status, 400);
  ollamaError(t, both.text, /^format: /);
});
