// Multi-byte UTF-8 (accents, CJK, emoji) streamed token by token arrives intact. The model is
// a ScriptedRunner emitting the text's byte-fallback tokens (a random model cannot be made to
// write a chosen text); the worker, detokenizer, stop handling and SSE are the real ones.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { loadTokenizer } from '../../src/engine/tokenizer.ts';
import { buildApp } from '../../src/server/app.ts';

const TEXT = 'Grüße, 世界! 🎉🙂 naïve café 日本語';

const dir = mkdtempSync(join(tmpdir(), 'gs-utf8-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ckpt = join(dir, 'ckpt');
makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '256' } });
const tokenizer = loadTokenizer(join(ckpt, 'tokenizer.json'), join(ckpt, 'tokenizer_config.json'));
const script = [...tokenizer.encode(TEXT), tokenizer.eosIds[0]!];
const engine = await Engine.start({ modelDir: ckpt, dataDir: join(dir, 'data'), script });
const app = buildApp({ engine });
await app.listen({ host: '127.0.0.1', port: 0 });
t.teardown(async () => { await app.close(); await engine.close(); });
const client = new OpenAI({ baseURL: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/v1`, apiKey: 'none', maxRetries: 0 });
const base = { model: engine.modelId, messages: [{ role: 'user' as const, content: 'write' }], temperature: 0 };

t.test('the script really splits characters into byte tokens', async (t) => {
  const partial = script.filter((id) => { const b = tokenizer.tokenBytes(id); return b.length === 1 && b[0]! >= 0x80; });
  t.ok(partial.length >= 8, `${partial.length} tokens carry single non-ASCII bytes`);
});

t.test('streamed deltas are whole characters and join to the text', async (t) => {
  const stream = await client.chat.completions.create({ ...base, stream: true });
  const deltas: string[] = [];
  let finish: string | null = null;
  for await (const c of stream) {
    const ch = c.choices[0];
    if (ch?.delta.content) deltas.push(ch.delta.content);
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  t.equal(deltas.join(''), TEXT);
  t.equal(finish, 'stop', 'the scripted EOS ends it');
  t.ok(deltas.length > 10, 'streamed in many deltas');
  for (const d of deltas) t.notMatch(d, /\uFFFD/, `no replacement character in ${JSON.stringify(d)}`);
  const whole = await client.chat.completions.create(base);
  t.equal(whole.choices[0]!.message.content, TEXT);
  t.equal(whole.usage!.completion_tokens, script.length);
});

t.test('a stop string made of multi-byte characters cuts the text before it', async (t) => {
  const r = await client.chat.completions.create({ ...base, stop: ['🙂'] });
  t.equal(r.choices[0]!.message.content, TEXT.slice(0, TEXT.indexOf('🙂')));
  t.equal(r.choices[0]!.finish_reason, 'stop');
});

t.test('logprob bytes of the byte tokens rebuild the UTF-8 of the text', async (t) => {
  const r = await client.chat.completions.create({ ...base, logprobs: true });
  const bytes = r.choices[0]!.logprobs!.content!.flatMap((e) => e.bytes ?? []);
  t.equal(Buffer.from(bytes).toString('utf8'), TEXT);
});
