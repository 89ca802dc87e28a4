// POST /v1/completions end to end: the real engine on a tiny random model, the real HTTP
// server, the official openai client. Expected outputs come from other requests (stream vs
// whole, one prompt vs many, n vs seeds), from the tokenizer, or from the float64 reference.
import t from 'tap';
import OpenAI from 'openai';
import type { Completion } from 'openai/resources/completions';
import { Gemma2Reference } from '../reference/gemma2-reference.ts';
import { startTinyServer } from './tiny-server.ts';
import { tokenizerOf } from '../text/engine-tokenizer.ts';

const { client, model, engine, checkpointDir } = await startTinyServer('completions');
const bos = engine.tokenizer.bosId;
const idsOf = (text: string): number[] => [bos, ...tokenizerOf(engine).encode(text)];
const PROMPT = 'Hello there, how are';
const PROMPTS = ['Hello there', 'The quick brown fox'];

/** Request fields, OpenAI's or not, valid or not. */
type Params = Record<string, unknown>;
/** A non-streaming completion; extra (non-OpenAI) fields pass through. */
const complete = (params: Params): Promise<Completion> =>
  client.completions.create({ model, prompt: PROMPT, ...params } as never) as Promise<Completion>;
/** Streams a completion; returns the chunks. */
async function streamChunks(params: Params): Promise<Completion[]> {
  const stream = await client.completions.create({ model, prompt: PROMPT, ...params, stream: true } as never);
  const chunks: Completion[] = [];
  for await (const c of stream as unknown as AsyncIterable<Completion>) chunks.push(c);
  return chunks;
}
const texts = (r: Completion): string[] => r.choices.map((c) => c.text);

/** The API error a request fails with (or a test failure when it succeeds). */
async function apiError(p: Promise<unknown>): Promise<{ status: number | undefined; param: unknown; code: unknown; type: unknown; bad: boolean; notFound: boolean }> {
  const e = await p.then(() => null, (x: unknown) => x);
  if (!(e instanceof OpenAI.APIError)) throw new Error(`expected an API error, got ${String(e)}`);
  return { status: e.status, param: e.param, code: e.code, type: e.type, bad: e instanceof OpenAI.BadRequestError, notFound: e instanceof OpenAI.NotFoundError };
}

t.test('a string prompt: one choice, <bos> counted in prompt_tokens', async (t) => {
  const r = await complete({ max_tokens: 5, temperature: 0 });
  t.match(r.id, /^cmpl-/);
  t.equal(r.object, 'text_completion');
  t.equal(r.model, model);
  t.equal(r.choices.length, 1);
  t.equal(r.choices[0]!.index, 0);
  t.equal(r.choices[0]!.logprobs, null);
  t.type(r.choices[0]!.text, 'string');
  t.equal(r.usage!.prompt_tokens, 1 + tokenizerOf(engine).encode(PROMPT).length);
  t.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 5);
  t.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
  if (r.choices[0]!.finish_reason === 'length') t.equal(r.usage!.completion_tokens, 5);
});

t.test('max_tokens defaults to 16', async (t) => {
  const r = await complete({ temperature: 0, ignore_eos: true });
  t.equal(r.choices[0]!.finish_reason, 'length');
  t.equal(r.usage!.completion_tokens, 16);
  const withEos = await complete({ temperature: 0 });
  t.ok(withEos.usage!.completion_tokens <= 16);
  if (withEos.choices[0]!.finish_reason === 'length') t.equal(withEos.usage!.completion_tokens, 16);
  else t.equal(withEos.choices[0]!.finish_reason, 'stop');
});

t.test('token-id prompts are used as given', async (t) => {
  const fromText = await complete({ max_tokens: 6, temperature: 0, ignore_eos: true });
  const fromIds = await complete({ prompt: idsOf(PROMPT), max_tokens: 6, temperature: 0, ignore_eos: true });
  t.same(texts(fromIds), texts(fromText), 'the same tokens, the same completion');
  t.same(fromIds.usage, fromText.usage);
  const noBos = idsOf(PROMPT).slice(1);
  const r = await complete({ prompt: noBos, max_tokens: 2, temperature: 0 });
  t.equal(r.usage!.prompt_tokens, noBos.length, 'no <bos> added to token prompts');
});

t.test('several prompts x n: index = prompt * n + i, each prompt counted once', async (t) => {
  const params = { max_tokens: 6, temperature: 1, seed: 7, ignore_eos: true };
  const r = await complete({ ...params, prompt: PROMPTS, n: 2 });
  t.equal(r.choices.length, 4);
  t.same(r.choices.map((c) => c.index), [0, 1, 2, 3]);
  for (const [p, prompt] of PROMPTS.entries()) {
    for (let i = 0; i < 2; i++) {
      const single = await complete({ ...params, prompt, seed: 7 + i });
      t.equal(r.choices[p * 2 + i]!.text, single.choices[0]!.text, `prompt ${p}, choice ${i} is the seed ${7 + i} completion`);
    }
  }
  t.equal(r.usage!.prompt_tokens, PROMPTS.reduce((s, p) => s + idsOf(p).length, 0));
  t.equal(r.usage!.completion_tokens, 4 * 6);
  t.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + 24);

  const asIds = await complete({ ...params, prompt: PROMPTS.map(idsOf), n: 2 });
  t.same(texts(asIds), texts(r), 'an array of token-id arrays is the same as the array of strings');
  t.same(asIds.usage, r.usage);
});

t.test('n=3 with a seed: reproducible choice by choice', async (t) => {
  const params = { max_tokens: 12, temperature: 1, seed: 1234, ignore_eos: true };
  const a = await complete({ ...params, n: 3 });
  const b = await complete({ ...params, n: 3 });
  t.equal(a.choices.length, 3);
  t.same(texts(a), texts(b));
  t.ok(new Set(texts(a)).size > 1, 'the choices are not all the same');
  for (let i = 0; i < 3; i++) {
    const one = await complete({ ...params, seed: 1234 + i });
    t.equal(a.choices[i]!.text, one.choices[0]!.text, `choice ${i} uses seed + ${i}`);
  }
});

t.test('echo puts the prompt before the completion', async (t) => {
  const params = { max_tokens: 5, temperature: 0, ignore_eos: true };
  const plain = await complete(params);
  const echoed = await complete({ ...params, echo: true });
  t.equal(echoed.choices[0]!.text, PROMPT + plain.choices[0]!.text);
  t.same(echoed.usage, plain.usage);
  const ids = idsOf('Hi');
  const tokens = await complete({ ...params, prompt: [ids], echo: true });
  t.ok(tokens.choices[0]!.text.startsWith(engine.tokenizer.decode(ids)), 'a token prompt echoes as decoded');
});

t.test('echo + logprobs: the prompt tokens are scored like the float64 reference', async (t) => {
  const ids = idsOf(PROMPT);
  const r = await complete({ echo: true, logprobs: 2, max_tokens: 1, temperature: 0 });
  const { text, logprobs } = r.choices[0]!;
  const lp = logprobs!;
  t.ok(text.startsWith(PROMPT));
  t.equal(lp.tokens!.length, ids.length + 1, 'prompt tokens, then the completion token');
  t.same(lp.tokens!.slice(0, ids.length), ids.map((id) => engine.tokenizer.decode([id])));
  t.equal(lp.token_logprobs![0], null);
  t.equal(lp.top_logprobs![0], null);
  const ref = Gemma2Reference.fromCheckpoint(checkpointDir).logprobs(ids);
  let maxDiff = 0;
  for (let i = 1; i < ids.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(lp.token_logprobs![i]! - ref[i - 1]![ids[i]!]!));
    const top = Object.values(lp.top_logprobs![i]!).sort((x, y) => y - x);
    const refTop = [...ref[i - 1]!].sort((x, y) => y - x).slice(0, 2);
    t.equal(top.length, 2, `two alternatives at ${i}`);
    top.forEach((v, k) => { maxDiff = Math.max(maxDiff, Math.abs(v - refTop[k]!)); });
  }
  // Greedy picks the argmax, so its logprob is the reference's best (ties included).
  const best = Math.max(...ref[ids.length - 1]!);
  maxDiff = Math.max(maxDiff, Math.abs(lp.token_logprobs![ids.length]! - best));
  t.ok(maxDiff < 1e-3, `max |server - reference| = ${maxDiff.toExponential(2)}`);

  // text_offset indexes the returned text: prompt tokens where they appear, then the completion.
  const offsets = lp.text_offset!;
  t.equal(offsets[0], 0);
  for (let i = 1; i < ids.length; i++) {
    t.ok(text.startsWith(lp.tokens![i]!, offsets[i]), `prompt token ${i} ${JSON.stringify(lp.tokens![i])} is at its offset ${offsets[i]}`);
  }
  t.equal(offsets[ids.length], PROMPT.length, 'the completion starts after the prompt');
});

t.test('echo + logprobs on a token prompt: offsets include the decoded <bos>', async (t) => {
  const ids = idsOf('one two three');
  const r = await complete({ prompt: ids, echo: true, logprobs: 0, max_tokens: 3, temperature: 0, ignore_eos: true });
  const { text, logprobs } = r.choices[0]!;
  const lp = logprobs!;
  t.equal(lp.tokens!.length, ids.length + 3);
  ids.forEach((_, i) => t.ok(text.startsWith(lp.tokens![i]!, lp.text_offset![i]), `token ${i} at its offset`));
  t.equal(lp.text_offset![ids.length], engine.tokenizer.decode(ids).length);
  for (let i = 1; i < lp.text_offset!.length; i++) t.ok(lp.text_offset![i]! >= lp.text_offset![i - 1]!, 'offsets never decrease');
  t.same(lp.top_logprobs!.slice(1), lp.top_logprobs!.slice(1).map(() => ({})), 'logprobs 0: no alternatives');
});

t.test('max_tokens 0 with echo and logprobs scores the prompt and generates nothing (lm-eval loglikelihood)', async (t) => {
  const ids = idsOf(PROMPT);
  const scored = await complete({ echo: true, logprobs: 2, max_tokens: 0 });
  const longer = await complete({ echo: true, logprobs: 2, max_tokens: 3, temperature: 0, ignore_eos: true });
  const c = scored.choices[0]!;
  t.equal(c.text, PROMPT, 'the text is the prompt');
  t.equal(c.finish_reason, 'length');
  t.same(scored.usage, { prompt_tokens: ids.length, completion_tokens: 0, total_tokens: ids.length, prompt_tokens_details: { cached_tokens: 0 } }, 'scoring computes the whole prompt (no cached prefix)');
  const lp = c.logprobs!;
  t.equal(lp.tokens!.length, ids.length, 'one entry per prompt token, none generated');
  t.equal(lp.token_logprobs![0], null, 'the first token has no context');
  const want = longer.choices[0]!.logprobs!.token_logprobs!.slice(0, ids.length);
  lp.token_logprobs!.slice(1).forEach((v, i) => t.ok(Math.abs(v! - want[i + 1]!) < 1e-6, `prompt token ${i + 1}: ${v} = ${want[i + 1]}`));
  const stream = await streamChunks({ echo: true, logprobs: 2, max_tokens: 0 });
  t.equal(stream.map((ch) => ch.choices.map((x) => x.text).join('')).join(''), PROMPT, 'streamed: the prompt only');
  const plain = await complete({ max_tokens: 0 });
  t.equal(plain.choices[0]!.text, '', 'without echo: empty text');
  t.equal(plain.usage!.completion_tokens, 0);
  t.equal(engine.inFlight, 0);
});

t.test('logprobs without echo: one entry per completion token', async (t) => {
  const r = await complete({ logprobs: 3, max_tokens: 4, temperature: 0, ignore_eos: true });
  const lp = r.choices[0]!.logprobs!;
  t.equal(lp.tokens!.length, 4);
  t.equal(lp.text_offset![0], 0);
  for (const [i, top] of lp.top_logprobs!.entries()) {
    const values = Object.values(top!);
    t.ok(values.length >= 1 && values.length <= 3);
    t.ok(Math.abs(lp.token_logprobs![i]! - Math.max(...values)) < 1e-6, 'greedy: the chosen token is the top one');
  }
});

t.test('streaming matches the whole response', async (t) => {
  const params = { max_tokens: 8, temperature: 0, ignore_eos: true };
  const whole = await complete(params);
  const chunks = await streamChunks({ ...params, stream_options: { include_usage: true } });
  t.ok(chunks.length >= 2);
  for (const c of chunks) {
    t.equal(c.object, 'text_completion');
    t.equal(c.id, chunks[0]!.id);
  }
  t.match(chunks[0]!.id, /^cmpl-/);
  const last = chunks.at(-1)!;
  t.same(last.choices, [], 'the usage chunk has no choices');
  t.same(last.usage, whole.usage);
  const body = chunks.slice(0, -1);
  for (const c of body) t.equal(c.usage, null, 'usage is null before the last chunk');
  t.equal(body.map((c) => c.choices[0]!.text).join(''), whole.choices[0]!.text);
  const finishes = body.filter((c) => c.choices[0]!.finish_reason !== null);
  t.equal(finishes.length, 1);
  t.equal(finishes[0], body.at(-1));
  t.equal(finishes[0]!.choices[0]!.finish_reason, 'length');

  const plain = await streamChunks(params);
  t.notOk(plain.some((c) => c.choices.length === 0), 'no usage chunk unless asked');
});

for (const logprobs of [1, undefined]) {
  t.test(`streaming several prompts x n, with echo${logprobs === undefined ? '' : ' and logprobs'}`, async (t) => {
    const params = { prompt: PROMPTS, n: 2, max_tokens: 4, temperature: 0, ignore_eos: true, echo: true, logprobs };
    const whole = await complete(params);
    const chunks = await streamChunks({ ...params, stream_options: { include_usage: true } });
    t.same(chunks.at(-1)!.usage, whole.usage, 'usage: each prompt once, every choice summed');
    const streamed = whole.choices.map(() => ({ text: '', tokens: [] as string[], offsets: [] as number[], finish: null as string | null }));
    for (const c of chunks.slice(0, -1)) {
      const [part] = c.choices;
      const into = streamed[part!.index]!;
      into.text += part!.text;
      into.tokens.push(...(part!.logprobs?.tokens ?? []));
      into.offsets.push(...(part!.logprobs?.text_offset ?? []));
      if (part!.finish_reason !== null) into.finish = part!.finish_reason;
    }
    whole.choices.forEach((c, i) => {
      t.equal(streamed[i]!.text, c.text, `choice ${i}: text`);
      t.ok(c.text.startsWith(PROMPTS[Math.floor(i / 2)]!), `choice ${i} echoes its prompt`);
      if (logprobs === undefined) t.equal(c.logprobs, null);
      else {
        t.same(streamed[i]!.tokens, c.logprobs!.tokens, `choice ${i}: tokens`);
        t.same(streamed[i]!.offsets, c.logprobs!.text_offset, `choice ${i}: offsets`);
      }
      t.equal(streamed[i]!.finish, c.finish_reason);
    });
  });
}

t.test('stop strings end the completion before them', async (t) => {
  const params = { max_tokens: 16, temperature: 0, ignore_eos: true };
  // Find, among a few prompts, a completion with a plain character after its first one.
  let found: { prompt: string; full: string; stop: string } | null = null;
  for (const prompt of ['Hello there', 'The quick brown fox', 'Once upon a time', 'a b c d e f g', '1, 2, 3, 4,']) {
    const full = (await complete({ ...params, prompt })).choices[0]!.text;
    const k = [...full].findIndex((ch, i) => i > 0 && ch !== '\uFFFD' && full.indexOf(ch) > 0);
    if (k > 0) { found = { prompt, full, stop: [...full][k]! }; break; }
  }
  if (found === null) { t.fail('no completion with a usable stop character'); return; }
  const { prompt, full, stop } = found;
  const expected = full.slice(0, full.indexOf(stop));
  const r = await complete({ ...params, prompt, stop: [stop, 'never-generated-\u2603'] });
  t.equal(r.choices[0]!.text, expected, `stop ${JSON.stringify(stop)} in ${JSON.stringify(full)}`);
  t.equal(r.choices[0]!.finish_reason, 'stop');
  t.ok(r.usage!.completion_tokens < 16);
  const chunks = await streamChunks({ ...params, prompt, stop });
  t.equal(chunks.map((c) => c.choices[0]?.text ?? '').join(''), expected, 'streamed too');
  const echoed = await complete({ ...params, prompt, stop, echo: true });
  t.equal(echoed.choices[0]!.text, prompt + expected, 'echo: the prompt is never matched');
});

t.test('bad requests are 400s naming the parameter', async (t) => {
  const cases: [string, Params, string, string?][] = [
    ['a number prompt', { prompt: 42 }, 'prompt'],
    ['an empty prompt array', { prompt: [] }, 'prompt'],
    ['a mixed prompt array', { prompt: [1, 'a'] }, 'prompt'],
    ['an empty token array', { prompt: [[]] }, 'prompt'],
    ['an object prompt', { prompt: { text: 'hi' } }, 'prompt'],
    ['no prompt', { prompt: undefined }, 'prompt'],
    ['a token id past the vocabulary', { prompt: [bos, engine.vocabSize] }, 'prompt'],
    ['a negative token id', { prompt: [[bos, -1]] }, 'prompt'],
    ['a fractional token id', { prompt: [bos, 1.5] }, 'prompt'],
    ['suffix', { suffix: 'x' }, 'suffix', 'unsupported_parameter'],
    ['best_of above n', { best_of: 3 }, 'best_of', 'unsupported_parameter'],
    ['an unknown field', { bogus_field: 1 }, 'bogus_field', 'unknown_parameter'],
    ['logprobs above 20', { logprobs: 21 }, 'logprobs'],
    ['logprobs as a boolean', { logprobs: true }, 'logprobs'],
    ['echo as a string', { echo: 'yes' }, 'echo'],
    ['max_tokens -1', { max_tokens: -1 }, 'max_tokens'],
    ['stream_options without stream', { stream_options: { include_usage: true } }, 'stream_options'],
  ];
  for (const [what, params, param, code] of cases) {
    const e = await apiError(complete(params));
    t.match(e, { status: 400, bad: true, param, type: 'invalid_request_error', ...(code === undefined ? {} : { code }) }, what);
  }
  t.equal(engine.inFlight, 0, 'nothing was started');
});

t.test('harmless values of unsupported fields are accepted', async (t) => {
  const r = await complete({ suffix: '', best_of: 2, n: 2, max_tokens: 1, user: 'u' });
  t.equal(r.choices.length, 2);
});

t.test('another model is a 404 model_not_found', async (t) => {
  const e = await apiError(complete({ model: 'gpt-3.5-turbo-instruct' }));
  t.match(e, { status: 404, notFound: true, code: 'model_not_found', param: 'model' });
});

t.test('a prompt beyond the context is context_length_exceeded', async (t) => {
  const cases: [string, Params][] = [
    ['a long text prompt', { prompt: 'word '.repeat(400) }],
    ['the prompt plus the default 16 tokens', { prompt: Array.from({ length: engine.contextLength - 10 }, () => bos) }],
    ['the prompt plus max_tokens', { prompt: idsOf(PROMPT), max_tokens: engine.contextLength }],
    ['the second of two prompts', { prompt: ['hi', 'word '.repeat(400)] }],
  ];
  for (const [what, params] of cases) {
    const e = await apiError(complete(params));
    t.match(e, { status: 400, bad: true, code: 'context_length_exceeded', param: 'prompt' }, what);
  }
  t.equal(engine.inFlight, 0, 'nothing was started');
  const fits = await complete({ prompt: Array.from({ length: engine.contextLength - 2 }, () => bos), max_tokens: 2, ignore_eos: true });
  t.equal(fits.usage!.total_tokens, engine.contextLength, 'exactly the context fits');
});
