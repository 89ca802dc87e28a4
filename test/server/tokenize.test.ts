// POST /tokenize and /detokenize end to end (real engine, real server, fetch). Expected
// tokens come from the tokenizer and chat template, or from the generation endpoints' usage.
import t from 'tap';
import { startTinyServer } from './tiny-server.ts';
import { templateOf, tokenizerOf } from '../text/engine-tokenizer.ts';

const { client, model, baseURL, engine } = await startTinyServer('tokenize');
const bos = engine.tokenizer.bosId;
const messages = [
  { role: 'system' as const, content: 'Be brief.' },
  { role: 'user' as const, content: 'Hello there' },
  { role: 'assistant' as const, content: 'Hi!' },
  { role: 'user' as const, content: 'What is 2 + 2?' },
];

interface Tokenized { count: number; max_model_len: number; tokens: number[]; token_strs?: string[] }

async function post(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${baseURL}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
async function ok<T>(path: string, body: unknown): Promise<T> {
  const { status, json } = await post(path, body);
  if (status !== 200) throw new Error(`${path} answered ${status}: ${JSON.stringify(json)}`);
  return json as T;
}
const tokenize = (body: unknown): Promise<Tokenized> => ok<Tokenized>('/tokenize', body);
const detokenize = async (tokens: unknown): Promise<string> => (await ok<{ prompt: string }>('/detokenize', { tokens })).prompt;

t.test('a prompt: <bos> then its tokens, unless add_special_tokens is false', async (t) => {
  const prompt = 'Hello there, how are you?';
  const ids = [...tokenizerOf(engine).encode(prompt)];
  const r = await tokenize({ model, prompt });
  t.same(r, { count: ids.length + 1, max_model_len: engine.contextLength, tokens: [bos, ...ids] });
  t.same(await tokenize({ prompt, add_special_tokens: true }), r, 'true is the default; model is optional');
  const plain = await tokenize({ prompt, add_special_tokens: false });
  t.same(plain.tokens, ids);
  t.equal(plain.count, ids.length);
  const completion = await client.completions.create({ model, prompt, max_tokens: 1 });
  t.equal(r.count, completion.usage!.prompt_tokens, 'the count /v1/completions bills');
  t.same(await tokenize({ prompt: '' }), { count: 1, max_model_len: engine.contextLength, tokens: [bos] });
});

t.test('messages: the tokens /v1/chat/completions bills', async (t) => {
  const r = await tokenize({ model, messages });
  const chat = await client.chat.completions.create({ model, messages, max_tokens: 1 });
  t.equal(r.count, chat.usage!.prompt_tokens);
  t.same(r.tokens, [...tokenizerOf(engine).encode(templateOf(engine).renderChat(messages, { addGenerationPrompt: true }))]);
  t.equal(r.max_model_len, engine.contextLength);
  const noPrompt = await tokenize({ messages, add_generation_prompt: false });
  t.same(noPrompt.tokens, [...tokenizerOf(engine).encode(templateOf(engine).renderChat(messages, { addGenerationPrompt: false }))]);
  t.ok(noPrompt.count < r.count, 'the generation prompt adds tokens');
  t.same(noPrompt.tokens, r.tokens.slice(0, noPrompt.count), 'as a suffix');
  t.same(await tokenize({ messages, add_special_tokens: false }), r, 'add_special_tokens false is accepted');
});

t.test('return_token_strs: one string per token', async (t) => {
  const prompt = 'naïve café, 2 + 2 = 4';
  const r = await tokenize({ prompt, return_token_strs: true });
  t.equal(r.token_strs!.length, r.count);
  t.same(r.token_strs, r.tokens.map((id) => engine.tokenizer.decode([id])));
  t.equal(r.token_strs![0], engine.tokenizer.decode([bos]));
  const off = await tokenize({ prompt, return_token_strs: false });
  t.notOk('token_strs' in off, 'absent unless asked');
  const chat = await tokenize({ messages, return_token_strs: true });
  t.equal(chat.token_strs!.length, chat.count);
});

t.test('detokenize inverts tokenize', async (t) => {
  for (const prompt of ['Hello there', 'naïve café ☃ 🚀', '  leading spaces\nand\ttabs', '']) {
    const { tokens } = await tokenize({ prompt, add_special_tokens: false });
    t.equal(await detokenize(tokens), prompt, JSON.stringify(prompt));
    const withBos = await tokenize({ prompt });
    t.equal(await detokenize(withBos.tokens), engine.tokenizer.decode(withBos.tokens), 'special tokens kept');
  }
  const chat = await tokenize({ messages });
  t.equal(await detokenize(chat.tokens), templateOf(engine).renderChat(messages, { addGenerationPrompt: true }));
  t.same(await ok('/detokenize', { model, tokens: [] }), { prompt: '' });
});

t.test('bad requests are 400s naming the parameter', async (t) => {
  const cases: [string, string, unknown, string | null][] = [
    ['/tokenize', 'both prompt and messages', { prompt: 'hi', messages }, 'messages'],
    ['/tokenize', 'neither prompt nor messages', { model }, 'prompt'],
    ['/tokenize', 'a non-string prompt', { prompt: [1, 2] }, 'prompt'],
    ['/tokenize', 'bad messages', { messages: [{ role: 'wizard', content: 'hi' }] }, null],
    ['/tokenize', 'messages not an array', { messages: 'hi' }, null],
    ['/tokenize', 'add_generation_prompt with a prompt', { prompt: 'hi', add_generation_prompt: true }, 'add_generation_prompt'],
    ['/tokenize', 'add_special_tokens with messages', { messages, add_special_tokens: true }, 'add_special_tokens'],
    ['/tokenize', 'a non-boolean add_special_tokens', { prompt: 'hi', add_special_tokens: 'no' }, 'add_special_tokens'],
    ['/tokenize', 'a non-boolean return_token_strs', { prompt: 'hi', return_token_strs: 1 }, 'return_token_strs'],
    ['/tokenize', 'an unknown field', { prompt: 'hi', bogus: 1 }, 'bogus'],
    ['/tokenize', 'a non-object body', ['hi'], null],
    ['/detokenize', 'no tokens', { model }, 'tokens'],
    ['/detokenize', 'tokens not an array', { tokens: '1 2' }, 'tokens'],
    ['/detokenize', 'a token id past the vocabulary', { tokens: [bos, engine.vocabSize] }, 'tokens'],
    ['/detokenize', 'a negative token id', { tokens: [-1] }, 'tokens'],
    ['/detokenize', 'a fractional token id', { tokens: [1.5] }, 'tokens'],
    ['/detokenize', 'a string token id', { tokens: ['2'] }, 'tokens'],
    ['/detokenize', 'an unknown field', { tokens: [bos], prompt: 'hi' }, 'prompt'],
  ];
  for (const [path, what, body, param] of cases) {
    const { status, json } = await post(path, body);
    const error = json.error as { type: string; param: string | null; message: string } | undefined;
    t.equal(status, 400, `${path}: ${what}`);
    t.equal(error?.type, 'invalid_request_error', `${what}: type`);
    t.type(error?.message, 'string');
    if (param !== null) t.equal(error?.param, param, `${what}: param`);
  }
});

t.test('another model is a 404 model_not_found', async (t) => {
  for (const [path, body] of [['/tokenize', { model: 'gpt-4', prompt: 'hi' }], ['/detokenize', { model: 'gpt-4', tokens: [bos] }]] as const) {
    const { status, json } = await post(path, body);
    t.equal(status, 404, path);
    t.match(json.error, { code: 'model_not_found', param: 'model', type: 'invalid_request_error' });
  }
  const { status, json } = await post('/tokenize', { model: 7, prompt: 'hi' });
  t.equal(status, 400, 'a non-string model');
  t.match(json.error, { param: 'model' });
});
