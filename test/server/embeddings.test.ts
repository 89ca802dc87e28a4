// Embeddings from the served model, end to end: a real engine on a tiny random model behind the
// real app, driven by the clients people use (openai, @langchain/openai, ollama, @langchain/ollama)
// and by raw requests for the refusals. The vectors are checked against a float64 reference of
// the served checkpoint's pooled final hidden states.
import t from 'tap';
import OpenAI from 'openai';
import { Ollama } from 'ollama';
import { OpenAIEmbeddings } from '@langchain/openai';
import { OllamaEmbeddings } from '@langchain/ollama';
import { startTinyServer } from './tiny-server.ts';
import { Gemma2Reference } from '../reference/gemma2-reference.ts';

const { client, model, baseURL, engine, checkpointDir } = await startTinyServer('embeddings');
const ollama = new Ollama({ host: baseURL });
const H = engine.embeddingSize!;
const texts = ['the quick brown fox', 'jumps over the lazy dog', 'a third text, somewhat longer than the other two are'];

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return a.length === b.length ? d : Infinity;
};
const norm = (v: ArrayLike<number>): number => Math.hypot(...Array.from(v));
const post = (path: string, body: unknown): Promise<Response> => fetch(`${baseURL}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const floats = async (input: OpenAI.EmbeddingCreateParams['input']): Promise<number[][]> =>
  (await client.embeddings.create({ model, input, encoding_format: 'float' })).data.map((d) => d.embedding);

t.test('one text: a unit vector of the hidden size, the same on every call', async (t) => {
  t.equal(H, 64, "the tiny model's hidden size");
  const r = await client.embeddings.create({ model, input: texts[0]!, encoding_format: 'float' });
  t.equal(r.object, 'list');
  t.equal(r.model, model);
  t.equal(r.data.length, 1);
  t.equal(r.data[0]!.object, 'embedding');
  t.equal(r.data[0]!.index, 0);
  const v = r.data[0]!.embedding;
  t.equal(v.length, H, 'dimensions = hidden size');
  t.ok(Math.abs(norm(v) - 1) < 1e-5, `L2 norm ${norm(v)} is 1`);
  const tokens = [engine.tokenizer.bosId, ...await engine.encodeText(texts[0]!)];
  t.same(r.usage, { prompt_tokens: tokens.length, total_tokens: tokens.length }, 'usage counts <bos> and the text');
  t.same((await floats(texts[0]!))[0], v, 'same input, same vector');
  t.same((await floats(tokens))[0], v, 'the same as its token ids');
});

t.test('a batch equals the single calls', async (t) => {
  const batch = await floats(texts);
  t.equal(batch.length, texts.length);
  for (const [i, text] of texts.entries()) {
    const [single] = await floats(text);
    t.ok(maxAbsDiff(batch[i]!, single!) < 1e-5, `input ${i}: max |Δ| ${maxAbsDiff(batch[i]!, single!)}`);
  }
  const ids = await Promise.all(texts.map(async (s) => [engine.tokenizer.bosId, ...await engine.encodeText(s)]));
  t.ok((await floats(ids)).every((v, i) => maxAbsDiff(v, batch[i]!) < 1e-5), 'arrays of token ids give the same vectors');
});

t.test('equal to a float64 reference of the pooled final hidden states', async (t) => {
  const ref = Gemma2Reference.fromCheckpoint(checkpointDir);
  // Inputs across one chunk, several prefill chunks (--max-num-batched-tokens 512 is one here;
  // the scheduler splits them when run together) and past the sliding window.
  for (const ids of [[2, 17, 99, 301, 5], Array.from({ length: 150 }, (_, i) => (i * 37 + 11) % engine.vocabSize)]) {
    const states = ref.hiddenStates(ids);
    for (const pooling of ['mean', 'last'] as const) {
      const pooled = new Float64Array(H);
      for (const h of pooling === 'mean' ? states : states.slice(-1)) h.forEach((x, j) => { pooled[j]! += x; });
      const expected = pooled.map((x) => x / norm(pooled));
      const r = await post('/v1/embeddings', { model, input: ids, pooling });
      t.equal(r.status, 200);
      const got = ((await r.json()) as { data: { embedding: number[] }[] }).data[0]!.embedding;
      t.ok(maxAbsDiff(got, expected) < 1e-3, `${ids.length} tokens, ${pooling}: max |Δ| ${maxAbsDiff(got, expected).toExponential(2)} < 1e-3`);
    }
  }
});

t.test('base64: the openai client decodes it (its default) and it is the float vector', async (t) => {
  const [expected] = await floats(texts[1]!);
  const decoded = await client.embeddings.create({ model, input: texts[1]! });
  t.same(Array.from(decoded.data[0]!.embedding), expected, 'the default request (base64) decodes to the float vector');
  const raw = await client.embeddings.create({ model, input: texts[1]!, encoding_format: 'base64' });
  const b64 = raw.data[0]!.embedding as unknown as string;
  t.type(b64, 'string');
  const buf = Buffer.from(b64, 'base64');
  t.same(Array.from(new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4)), expected);
});

t.test('dimensions: the hidden size or a 400', async (t) => {
  t.equal((await client.embeddings.create({ model, input: 'x', dimensions: H, encoding_format: 'float' })).data[0]!.embedding.length, H);
  const err = await client.embeddings.create({ model, input: 'x', dimensions: H / 2 }).catch((e: unknown) => e);
  t.ok(err instanceof OpenAI.BadRequestError);
  t.equal((err as InstanceType<typeof OpenAI.BadRequestError>).param, 'dimensions');
});

t.test('refusals on /v1/embeddings', async (t) => {
  for (const input of ['', [], [[]], ['a', '']]) {
    const r = await post('/v1/embeddings', { model, input });
    t.equal(r.status, 400, `input ${JSON.stringify(input)}: 400`);
    t.equal(((await r.json()) as { error: { param: string } }).error.param, 'input');
  }
  const long = await post('/v1/embeddings', { model, input: Array.from({ length: engine.contextLength + 1 }, () => 5) });
  t.equal(long.status, 400);
  t.equal(((await long.json()) as { error: { code: string } }).error.code, 'context_length_exceeded');
  const outside = await post('/v1/embeddings', { model, input: [1, engine.vocabSize] });
  t.equal(outside.status, 400, 'a token id outside the vocabulary');
  const other = await post('/v1/embeddings', { model: 'no-such-model', input: 'x' });
  t.equal(other.status, 404);
  t.equal(((await other.json()) as { error: { code: string } }).error.code, 'model_not_found');
});

t.test('@langchain/openai OpenAIEmbeddings', async (t) => {
  const lc = new OpenAIEmbeddings({ model, apiKey: 'none', configuration: { baseURL: `${baseURL}/v1` }, maxRetries: 0 });
  const expected = await floats(texts);
  const docs = await lc.embedDocuments(texts);
  t.ok(docs.every((v, i) => maxAbsDiff(v, expected[i]!) < 1e-6), 'embedDocuments');
  t.ok(maxAbsDiff(await lc.embedQuery(texts[0]!), expected[0]!) < 1e-6, 'embedQuery');
});

t.test('ollama client: embed and the legacy embeddings', async (t) => {
  const expected = await floats(texts);
  const one = await ollama.embed({ model, input: texts[0]! });
  t.equal(one.model, model);
  t.ok(maxAbsDiff(one.embeddings[0]!, expected[0]!) < 1e-6, 'embed, one text');
  const many = await ollama.embed({ model, input: texts });
  t.ok(many.embeddings.every((v, i) => maxAbsDiff(v, expected[i]!) < 1e-6), 'embed, a batch');
  const tokens = (await client.embeddings.create({ model, input: texts, encoding_format: 'float' })).usage.prompt_tokens;
  t.equal(many.prompt_eval_count, tokens, 'prompt_eval_count');
  t.ok(many.total_duration > 0 && Number.isInteger(many.total_duration), 'total_duration in ns');
  const legacy = await ollama.embeddings({ model, prompt: texts[2]! });
  t.ok(maxAbsDiff(legacy.embedding, expected[2]!) < 1e-6, 'embeddings (legacy)');
});

t.test('@langchain/ollama OllamaEmbeddings (truncate: false)', async (t) => {
  const lc = new OllamaEmbeddings({ model, baseUrl: baseURL, maxRetries: 0 });
  const expected = await floats(texts);
  t.ok((await lc.embedDocuments(texts)).every((v, i) => maxAbsDiff(v, expected[i]!) < 1e-6), 'embedDocuments');
  t.ok(maxAbsDiff(await lc.embedQuery(texts[1]!), expected[1]!) < 1e-6, 'embedQuery');
});

t.test('Ollama: an input over the context is cut to it by default, a 400 with truncate false', async (t) => {
  const text = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
  const ids = [engine.tokenizer.bosId, ...await engine.encodeText(text, null)];
  t.ok(ids.length > engine.contextLength, `${ids.length} tokens > ${engine.contextLength}`);
  const cut = await ollama.embed({ model, input: text });
  t.equal(cut.prompt_eval_count, engine.contextLength, 'truncated to the context');
  const [expected] = await floats(ids.slice(0, engine.contextLength));
  t.ok(maxAbsDiff(cut.embeddings[0]!, expected!) < 1e-6, 'the embedding of the first context-length tokens');
  const err = await ollama.embed({ model, input: text, truncate: false }).catch((e: unknown) => e) as { status_code?: number; error?: string };
  t.equal(err.status_code, 400);
  t.match(err.error, /context length/);
  const small = await ollama.embed({ model, input: text, options: { num_ctx: 32 } });
  t.equal(small.prompt_eval_count, 32, 'options.num_ctx bounds the cut');
  const openai = await post('/v1/embeddings', { model, input: text });
  t.equal(openai.status, 400, '/v1/embeddings refuses it');
});

t.test("Ollama's refusals are {\"error\": \"message\"}", async (t) => {
  for (const [path, body, status] of [
    ['/api/embed', { model, input: '' }, 400],
    ['/api/embed', { model, input: [] }, 400],
    ['/api/embed', { model: 'no-such-model', input: 'x' }, 404],
    ['/api/embed', { model, input: 'x', dimensions: 3 }, 400],
    ['/api/embed', { model }, 400],
    ['/api/embeddings', { model, prompt: '' }, 400],
  ] as const) {
    const r = await post(path, body);
    t.equal(r.status, status, `${path} ${JSON.stringify(body)}: ${status}`);
    const json = await r.json() as { error: unknown };
    t.type(json.error, 'string', 'the error is a message');
  }
});

t.test('chat generation running during embeddings is unchanged, and the embeddings too', async (t) => {
  const messages = [{ role: 'user' as const, content: 'Tell me something' }];
  const alone = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 });
  const long = Array.from({ length: 8 }, (_, k) => Array.from({ length: 200 }, (_, i) => (i * 13 + k * 7 + 3) % engine.vocabSize));
  const before = await floats(long);
  const [together, ...during] = await Promise.all([
    client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 }),
    ...long.map((ids) => floats(ids)),
    floats(long),
  ]);
  t.equal(together.choices[0]!.message.content, alone.choices[0]!.message.content, 'the same greedy completion');
  const vectors = (during as number[][][]);
  for (const [k, v] of vectors.slice(0, 8).entries()) t.ok(maxAbsDiff(v[0]!, before[k]!) < 1e-5, `input ${k} alone during the chat`);
  t.ok(vectors[8]!.every((v, k) => maxAbsDiff(v, before[k]!) < 1e-5), 'the batch during the chat');
});

t.test('an embedding holds no cache once it has ended', async (t) => {
  await floats(texts);
  for (let i = 0; i < 50 && (engine.stats?.running !== 0 || engine.stats.cache.global.usedBlocks !== 0); i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(engine.stats?.running, 0);
  t.equal(engine.stats?.cache.global.usedBlocks, 0, 'no global blocks held');
  t.equal(engine.stats?.cache.sliding.usedBlocks, 0, 'no sliding blocks held');
  t.equal(engine.inFlight, 0);
});
