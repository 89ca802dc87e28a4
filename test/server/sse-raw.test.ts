// Server-sent events byte for byte: undici's fetch against a real server (real engine, tiny random model), no SDK
// in between. The framing, the chunk order, flushing as tokens are produced,
// client disconnects, and a failure after the headers went out. Streamed output is compared
// with the same endpoint's non-streamed answer, never with hard-coded text.
import t, { type Test } from 'tap';
import { fetch, type Response } from 'undici';
import { startTinyServer } from './tiny-server.ts';

// Each step lasts at least 5 ms: a 200-token generation takes a second or more on any machine, so
// one disconnected or failed after its first events is still running when that happens, and a
// stream's events cannot all be produced before its first read.
const { engine, baseURL, model } = await startTinyServer('sse-raw', { minStepMs: 5 });
const messages = [{ role: 'user', content: 'Hello there' }];

interface Choice { index: number; delta?: { role?: string; content?: string }; text?: string; finish_reason: string | null }
interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }
interface Chunk { id: string; object: string; choices: Choice[]; usage?: Usage | null; error?: { code: string } }

interface RawStream {
  readonly status: number;
  readonly headers: Headers;
  /** The body as received, one entry per read from the socket. */
  readonly reads: readonly string[];
  readonly text: string;
}

const post = (path: string, body: object, signal?: AbortSignal): Promise<Response> => fetch(`${baseURL}${path}`, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, ...body }), signal,
});

async function stream(path: string, body: object, onRead?: (text: string) => void): Promise<RawStream> {
  const r = await post(path, { ...body, stream: true });
  const reads: string[] = [];
  const decoder = new TextDecoder();
  for await (const b of r.body!) {
    const s = decoder.decode(b, { stream: true });
    reads.push(s);
    onRead?.(s);
  }
  return { status: r.status, headers: r.headers, reads, text: reads.join('') };
}

async function whole(path: string, body: object): Promise<{ choices: { index: number; message?: { content: string }; text?: string; finish_reason: string }[]; usage: Usage }> {
  const r = await post(path, body);
  t.equal(r.status, 200);
  return (await r.json()) as never;
}

/** Checks the exact SSE framing and returns the JSON events before `[DONE]`. */
function events(t: Test, s: RawStream): Chunk[] {
  t.equal(s.status, 200);
  t.match(s.text, /^(data: [^\n]+\n\n)+$/, 'nothing but `data: <line>\\n\\n` events');
  t.ok(s.text.endsWith('data: [DONE]\n\n'), 'ends with data: [DONE] and nothing after');
  const datas = s.text.split('\n\n').slice(0, -1).map((e) => e.slice('data: '.length));
  t.equal(datas.indexOf('[DONE]'), datas.length - 1, '[DONE] once, last');
  return datas.slice(0, -1).map((d) => JSON.parse(d) as Chunk);
}

const byIndex = (chunks: readonly Chunk[], index: number): Choice[] => chunks.flatMap((c) => c.choices.filter((ch) => ch.index === index));
const contentOf = (choices: readonly Choice[]): string => choices.map((ch) => ch.delta?.content ?? ch.text ?? '').join('');
const finishes = (choices: readonly Choice[]): string[] => choices.flatMap((ch) => (ch.finish_reason === null ? [] : [ch.finish_reason]));

/** Polls until the engine has no generation in flight; returns how long that took. */
async function drained(limitMs = 2_000): Promise<number> {
  const start = Date.now();
  while (engine.inFlight > 0 && Date.now() - start < limitMs) await new Promise((r) => setTimeout(r, 10));
  return engine.inFlight === 0 ? Date.now() - start : Infinity;
}

t.test('chat: headers, framing, role chunk, one finish, same content as non-streamed', async (t) => {
  const body = { messages, max_tokens: 12, temperature: 0 };
  const s = await stream('/v1/chat/completions', body);
  t.match(s.headers.get('content-type'), /^text\/event-stream/);
  t.match(s.headers.get('cache-control'), /(^|[ ,])no-cache([ ,]|$)/);
  t.equal(s.headers.get('x-accel-buffering'), 'no');
  t.equal(s.headers.get('content-encoding'), null, 'not compressed');
  const chunks = events(t, s);
  t.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0]!.id), 'chat.completion.chunk objects of one completion');
  t.ok(chunks.every((c) => !('usage' in c)), 'no usage field unless asked');
  t.same(chunks[0]!.choices, [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], 'first event: the role');
  const choices = byIndex(chunks, 0);
  t.equal(finishes(choices).length, 1, 'exactly one finish_reason');
  t.not(chunks.at(-1)!.choices[0]!.finish_reason, null, 'the finish chunk is last');
  const w = await whole('/v1/chat/completions', body);
  t.equal(contentOf(choices), w.choices[0]!.message!.content, 'same text as non-streamed');
  t.same(finishes(choices), [w.choices[0]!.finish_reason]);
});

t.test('chat: include_usage adds usage: null everywhere and a usage chunk right before [DONE]', async (t) => {
  const body = { messages, max_tokens: 9, temperature: 0, ignore_eos: true };
  const chunks = events(t, await stream('/v1/chat/completions', { ...body, stream_options: { include_usage: true } }));
  const last = chunks.at(-1)!;
  t.same(last.choices, [], 'the usage chunk has no choices');
  t.ok(chunks.slice(0, -1).every((c) => c.usage === null && c.choices.length === 1), 'every other chunk: usage null and one choice');
  const w = await whole('/v1/chat/completions', body);
  t.same(last.usage, w.usage, 'usage as non-streamed');
  t.equal(last.usage!.completion_tokens, 9);
  t.equal(last.usage!.total_tokens, last.usage!.prompt_tokens + 9);
});

t.test('chat: n=2 streams both choices, each with its role and one finish', async (t) => {
  const body = { messages, max_tokens: 10, temperature: 1, seed: 77, n: 2, ignore_eos: true };
  const chunks = events(t, await stream('/v1/chat/completions', { ...body, stream_options: { include_usage: true } }));
  t.ok(chunks.slice(0, -1).every((c) => c.choices.length === 1), 'one choice per chunk');
  t.same(chunks.slice(0, 2).map((c) => c.choices[0]!.delta), [{ role: 'assistant', content: '' }, { role: 'assistant', content: '' }]);
  t.same(chunks.slice(0, 2).map((c) => c.choices[0]!.index).sort(), [0, 1]);
  const w = await whole('/v1/chat/completions', body);
  for (const i of [0, 1]) {
    t.same(finishes(byIndex(chunks, i)), ['length'], `choice ${i}: one finish`);
    t.equal(contentOf(byIndex(chunks, i)), w.choices[i]!.message!.content, `choice ${i}: same text as non-streamed (seeded)`);
  }
  t.same(chunks.at(-1)!.usage, w.usage);
  t.equal(chunks.at(-1)!.usage!.completion_tokens, 20);
});

t.test('tokens are flushed as they are produced', async (t) => {
  const s = await stream('/v1/chat/completions', { messages, max_tokens: 30, temperature: 0, ignore_eos: true });
  const chunks = events(t, s);
  t.ok(chunks.length >= 30, 'a chunk per token');
  t.ok(s.reads.length > 1, `the body arrived in ${s.reads.length} reads`);
  const firstEvent = s.reads.findIndex((_, k) => s.reads.slice(0, k + 1).join('').includes('\n\n'));
  t.notOk(s.reads.slice(0, firstEvent + 1).join('').includes('[DONE]'), 'the first event arrived before the end');
  t.ok(s.reads.filter((r) => r.includes('"content"')).length > 1, 'content arrived over several reads');
});

t.test('a client that disconnects mid-stream ends its generation', async (t) => {
  const long = { messages, max_tokens: 220, temperature: 0, ignore_eos: true };
  // How long the generation takes when nobody stops it (the tiny model is fast).
  const start = Date.now();
  await whole('/v1/chat/completions', long);
  const natural = Date.now() - start;
  const controller = new AbortController();
  const r = await post('/v1/chat/completions', { ...long, stream: true }, controller.signal);
  const reader = r.body!.getReader();
  let text = '';
  while (text.split('\n\n').length <= 2) {
    const { value, done } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString('utf8');
  }
  t.notOk(text.includes('[DONE]'), 'still streaming after two events');
  t.ok(engine.inFlight > 0, 'the generation is running');
  controller.abort();
  const ms = await drained();
  t.ok(ms < natural / 2, `engine.inFlight back to 0 in ${ms} ms, not after the ${natural} ms the generation needs`);
  const body = { messages, max_tokens: 5, temperature: 0, ignore_eos: true };
  const chunks = events(t, await stream('/v1/chat/completions', body));
  t.equal(contentOf(byIndex(chunks, 0)), (await whole('/v1/chat/completions', body)).choices[0]!.message!.content, 'later requests are served normally');
});

t.test('/v1/completions: the same framing, ending in [DONE]', async (t) => {
  const body = { prompt: 'Once upon a time', max_tokens: 8, temperature: 0, ignore_eos: true };
  const s = await stream('/v1/completions', { ...body, stream_options: { include_usage: true } });
  t.match(s.headers.get('content-type'), /^text\/event-stream/);
  const chunks = events(t, s);
  t.ok(chunks.every((c) => c.object === 'text_completion' && c.id === chunks[0]!.id), 'text_completion objects of one completion');
  const choices = byIndex(chunks, 0);
  t.same(finishes(choices), ['length'], 'exactly one finish_reason');
  const w = await whole('/v1/completions', body);
  t.equal(contentOf(choices), w.choices[0]!.text);
  t.same(chunks.at(-1)!.choices, []);
  t.same(chunks.at(-1)!.usage, w.usage);
});

t.test('a refused streaming request is a JSON error, not a stream', async (t) => {
  const r = await post('/v1/chat/completions', { messages, stream: true, temperature: 'hot' });
  t.equal(r.status, 400);
  t.match(r.headers.get('content-type'), /^application\/json/);
  const j = (await r.json()) as { error: { param: string } };
  t.equal(j.error.param, 'temperature');
});

// Last: it closes the engine.
t.test('a failure after the headers: an error event, then [DONE]', async (t) => {
  let closing: Promise<void> | null = null;
  const s = await stream('/v1/chat/completions', { messages, max_tokens: 200, temperature: 0, ignore_eos: true }, (text) => {
    if (closing === null && text.includes('"content"')) closing = engine.close();
  });
  await closing;
  const chunks = events(t, s);
  const last = chunks.at(-1)!;
  t.ok(last.error !== undefined, 'the last event is an error');
  t.equal(last.error!.code, 'engine_closed');
  t.same(Object.keys(last.error!).sort(), ['code', 'message', 'param', 'type']);
  t.ok(chunks.slice(0, -1).every((c) => c.error === undefined && c.choices[0]!.finish_reason === null), 'no finish before the error');
});
