// Tool calls on Ollama's /api/chat come back in Ollama's shape (message.tool_calls, arguments
// as an object), streamed and not, through the ollama client and ChatOllama.bindTools; the
// same call on /v1/chat/completions ends with finish_reason "tool_calls". The model is a
// ScriptedRunner writing one call and then its end token (a random model cannot be made to
// write one); the template, tool grammar, parser and NDJSON are the real ones.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import { ChatOllama } from '@langchain/ollama';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { loadTokenizer } from '../../src/engine/tokenizer.ts';
import { buildApp } from '../../src/server/app.ts';

const CALL = '<tool_call>\n{"name": "get_time", "arguments": {"city": "Oslo"}}\n</tool_call>';

const dir = mkdtempSync(join(tmpdir(), 'gs-ollama-tools-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ckpt = join(dir, 'ckpt');
makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '512' } });
const tokenizer = loadTokenizer(join(ckpt, 'tokenizer.json'), join(ckpt, 'tokenizer_config.json'));
const script = [...tokenizer.encode(`Checking. ${CALL}`), tokenizer.eosIds[0]!];
const engine = await Engine.start({ modelDir: ckpt, dataDir: join(dir, 'data'), script, modelAliases: ['gemma2'] });
const app = buildApp({ engine });
await app.listen({ host: '127.0.0.1', port: 0 });
t.teardown(async () => { await app.close(); await engine.close(); });
const host = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
const ollama = new Ollama({ host });

const tools = [{ type: 'function', function: { name: 'get_time', description: 'The time in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
const messages = [{ role: 'user', content: 'What time is it in Oslo?' }];
// Greedy, penalties off: the script's token is always the one drawn, its end token included.
const options = { temperature: 0, repeat_last_n: 0 };

t.test('a call comes back as message.tool_calls with object arguments, streamed and not', async (t) => {
  const whole = await ollama.chat({ model: 'gemma2', messages, tools, options, stream: false });
  t.same(whole.message.tool_calls, [{ function: { name: 'get_time', arguments: { city: 'Oslo' } } }]);
  t.equal(whole.message.content, 'Checking. ', 'the text before the call, the call taken out');
  t.equal(whole.done_reason, 'stop', 'the end token after the call ends it');
  let content = '';
  const calls: unknown[] = [];
  for await (const part of await ollama.chat({ model: 'gemma2', messages, tools, options, stream: true })) {
    content += part.message.content;
    calls.push(...part.message.tool_calls ?? []);
  }
  t.equal(content, whole.message.content);
  t.same(calls, whole.message.tool_calls);
});

t.test('without tools the same text is plain content', async (t) => {
  const r = await ollama.chat({ model: 'gemma2', messages, options, stream: false });
  t.equal(r.message.content, `Checking. ${CALL}`);
  t.equal(r.message.tool_calls, undefined);
});

t.test('ChatOllama.bindTools gets the call as a LangChain tool call', async (t) => {
  const chat = new ChatOllama({ baseUrl: host, model: 'gemma2', temperature: 0, repeatLastN: 0 }).bindTools(tools);
  const reply = await chat.invoke('What time is it in Oslo?');
  t.equal(reply.tool_calls?.length, 1);
  t.match(reply.tool_calls?.[0], { name: 'get_time', args: { city: 'Oslo' } });
});

t.test('on /v1/chat/completions the call ends with tool_calls, parallel calls allowed or not, with either sampler', async (t) => {
  // The engine above samples with the sampler graph where the native runner is built; a second
  // one samples in JS: the grammar's mask (its end tokens included) reaches both alike.
  const jsEngine = await Engine.start({ modelDir: ckpt, dataDir: join(dir, 'data'), script, modelAliases: ['gemma2'], sampler: 'js' });
  const jsApp = buildApp({ engine: jsEngine });
  await jsApp.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => { await jsApp.close(); await jsEngine.close(); });
  for (const [sampler, server] of [['default', host], ['js', `http://127.0.0.1:${(jsApp.server.address() as AddressInfo).port}`]] as const) {
    t.comment(`sampler: ${sampler}`);
    await callEndsWithToolCalls(t, new OpenAI({ baseURL: `${server}/v1`, apiKey: 'none', maxRetries: 0 }));
  }
});

async function callEndsWithToolCalls(t: Test, client: OpenAI): Promise<void> {
  const functionTools = tools.map((x) => ({ type: 'function' as const, function: x.function }));
  for (const parallel_tool_calls of [true, false]) {
    const req = { model: 'gemma2', messages: [{ role: 'user' as const, content: 'What time is it in Oslo?' }], tools: functionTools, tool_choice: 'auto' as const, parallel_tool_calls, temperature: 0, max_tokens: 100 };
    const r = await client.chat.completions.create(req);
    const choice = r.choices[0]!;
    t.equal(choice.finish_reason, 'tool_calls', `parallel_tool_calls ${parallel_tool_calls}`);
    t.same(choice.message.tool_calls?.map((c) => c.type === 'function' ? [c.function.name, c.function.arguments] : null), [['get_time', '{"city": "Oslo"}']]);
    // One call only: the grammar ends the sequence after `</tool_call>`, before the end token.
    t.equal(r.usage?.completion_tokens, parallel_tool_calls ? script.length : script.length - 1, 'the script, its end token drawn where another call could follow');
    let finish: string | null = null;
    for await (const chunk of await client.chat.completions.create({ ...req, stream: true })) finish = chunk.choices[0]?.finish_reason ?? finish;
    t.equal(finish, 'tool_calls', `parallel_tool_calls ${parallel_tool_calls}, streamed`);
  }
}
