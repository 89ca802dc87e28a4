// A server on a tiny random model that carries the real Gemma tokenizer and template: the
// prompt it counts (usage.prompt_tokens) and tokenizes (/tokenize) is the prompt Hugging
// Face's apply_chat_template gives (test/fixtures/gemma-text-reference.json), for parts,
// system, whitespace and prefill requests; the template request fields are checked.
import t from 'tap';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { buildApp } from '../../src/server/app.ts';
import { GEMMA_TOKENIZER_CONFIG, GEMMA_TOKENIZER_JSON } from '../text/gemma-tokenizer.ts';
import { chatCase } from '../text/hf-reference.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-chat-fields-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ckpt = join(dir, 'ckpt');
// Gemma's 256,000-token vocabulary over a model small enough to export in seconds.
makeRandomCheckpoint({
  shape: 'tiny', seed: 0, dtype: 'f32', out: ckpt,
  set: { vocab_size: '256000', hidden_size: '16', intermediate_size: '32', num_hidden_layers: '2', num_attention_heads: '2', num_key_value_heads: '1', head_dim: '8', query_pre_attn_scalar: '8', max_position_embeddings: '512' },
});
copyFileSync(GEMMA_TOKENIZER_JSON, join(ckpt, 'tokenizer.json'));
copyFileSync(GEMMA_TOKENIZER_CONFIG, join(ckpt, 'tokenizer_config.json'));
const engine = await Engine.start({ modelDir: ckpt, dataDir: join(dir, 'data'), kvCacheBytes: 16 * 2 ** 20 });
const app = buildApp({ engine });
t.teardown(async () => { await app.close(); await engine.close(); });

const post = async (url: string, payload: object): Promise<{ status: number; body: Record<string, unknown> }> => {
  const r = await app.inject({ method: 'POST', url, payload });
  return { status: r.statusCode, body: r.json() };
};
const complete = (fields: object): Promise<{ status: number; body: Record<string, unknown> }> =>
  post('/v1/chat/completions', { model: engine.modelId, max_tokens: 1, temperature: 0, ...fields });

for (const name of ['single', 'system', 'two-systems', 'parts', 'parts-with-system', 'whitespace-python-set', 'prefill', 'prefill-trailing-space', 'no-generation-prompt', 'template-kwargs']) {
  t.test(`${name}: usage.prompt_tokens and /tokenize are Hugging Face's prompt`, async (t) => {
    const ref = chatCase(name);
    const r = await complete(ref.request);
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.equal((r.body['usage'] as { prompt_tokens: number }).prompt_tokens, ref.ids.length);
    const tok = await post('/tokenize', ref.request);
    t.same(tok.body['tokens'], ref.ids);
  });
}

t.test('continue_final_message with add_generation_prompt: true is refused, as vLLM refuses it', async (t) => {
  const r = await complete({ messages: chatCase('prefill').request.messages, continue_final_message: true, add_generation_prompt: true });
  t.equal(r.status, 400);
  t.equal((r.body['error'] as { param: string }).param, 'continue_final_message');
});

t.test('chat_template_kwargs may not replace a variable the server sets', async (t) => {
  const r = await complete({ messages: [{ role: 'user', content: 'Hi' }], chat_template_kwargs: { messages: [] } });
  t.equal(r.status, 400);
  t.equal((r.body['error'] as { param: string }).param, 'chat_template_kwargs.messages');
  const bad = await complete({ messages: [{ role: 'user', content: 'Hi' }], chat_template_kwargs: 'x' });
  t.equal(bad.status, 400, 'kwargs must be an object');
  const withPrompt = await post('/tokenize', { prompt: 'Hi', continue_final_message: true });
  t.equal(withPrompt.status, 400, '/tokenize: template fields only with messages');
});
