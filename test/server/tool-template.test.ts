// A checkpoint whose chat template takes a `tools` variable renders the tools and the tool
// turns itself (Hugging Face's message shape); the call is still forced and parsed.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { buildApp } from '../../src/server/app.ts';

const TEMPLATE = `{{ bos_token }}{% if tools %}<start_of_turn>user
TOOLS:{{ tools | tojson }}<end_of_turn>
{% endif %}{% for m in messages %}<start_of_turn>{{ m.role }}
{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}{% elif m.role == 'tool' %}RESULT {{ m.tool_call_id }}: {{ m.content }}{% else %}{{ m.content }}{% endif %}<end_of_turn>
{% endfor %}{% if add_generation_prompt %}<start_of_turn>model
{% endif %}`;

const dir = mkdtempSync(join(tmpdir(), 'gs-tooltpl-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ckpt = join(dir, 'ckpt');
makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '2048' } });
const configPath = join(ckpt, 'tokenizer_config.json');
writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')) as object, chat_template: TEMPLATE }));
const engine = await Engine.start({ modelDir: ckpt, dataDir: join(dir, 'data'), kvCacheBytes: 64 * 2 ** 20 });
const app = buildApp({ engine });
await app.listen({ host: '127.0.0.1', port: 0 });
t.teardown(async () => { await app.close(); await engine.close(); });
const client = new OpenAI({ baseURL: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/v1`, apiKey: 'none', maxRetries: 0 });

const tools = [{ type: 'function' as const, function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 8 } }, required: ['city'], additionalProperties: false } } }];

t.test('the template sees tools and the tool turns in their own shape', async (t) => {
  t.ok(engine.handlesTools, 'the text workers report that the template takes tools');
  const ids = await engine.encodeChat([
    { role: 'user', content: 'weather?' },
    { role: 'assistant', content: '', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: { city: 'Oslo' } } }] },
    { role: 'tool', content: '3C', tool_call_id: 'c1' },
  ], { addGenerationPrompt: true, tools });
  const text = engine.tokenizer.decode(ids);
  t.match(text, /TOOLS:\[\{"type": ?"function"/);
  t.match(text, /CALL get_weather \{"city": ?"Oslo"\}/);
  t.match(text, /RESULT c1: 3C/);
  t.notMatch(text, /<tool_call>/, 'not our own tool instructions');
});

t.test('a tool loop through the server with that template', async (t) => {
  const first = await client.chat.completions.create({ model: engine.modelId, messages: [{ role: 'user', content: 'weather?' }], tools, tool_choice: 'required', max_tokens: 200, seed: 3 });
  const call = first.choices[0]!.message.tool_calls?.[0];
  t.equal(first.choices[0]!.finish_reason, 'tool_calls');
  t.ok(call !== undefined && call.type === 'function');
  if (call === undefined || call.type !== 'function') return;
  t.equal(call.function.name, 'get_weather');
  t.type((JSON.parse(call.function.arguments) as { city: unknown }).city, 'string');
  const second = await client.chat.completions.create({
    model: engine.modelId, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 200, seed: 4,
    messages: [{ role: 'user', content: 'weather?' }, first.choices[0]!.message, { role: 'tool', tool_call_id: call.id, content: '3C' }],
  });
  t.equal(second.choices[0]!.message.tool_calls?.[0]?.type === 'function' ? second.choices[0]!.message.tool_calls[0].function.name : null, 'get_weather');
});
