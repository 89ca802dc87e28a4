// Tool calls on Ollama's /api/chat come back in Ollama's shape (message.tool_calls, arguments
// as an object), streamed and not, through the ollama client and ChatOllama.bindTools. The
// model is a ScriptedRunner writing one call (a random model cannot be made to write one);
// the template, tool grammar, parser and NDJSON are the real ones.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Ollama } from 'ollama';
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
const script = Array.from(tokenizer.encode(`Checking. ${CALL}`));
const engine = await Engine.start({ modelDir: ckpt, dataDir: join(dir, 'data'), script, modelAliases: ['gemma2'] });
const app = buildApp({ engine });
await app.listen({ host: '127.0.0.1', port: 0 });
t.teardown(async () => { await app.close(); await engine.close(); });
const host = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
const ollama = new Ollama({ host });

const tools = [{ type: 'function', function: { name: 'get_time', description: 'The time in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
const messages = [{ role: 'user', content: 'What time is it in Oslo?' }];
// Greedy, penalties off: the script's token is always the one drawn; the generation ends with
// the script (with tools offered, the grammar after a call did not take the scripted end token).
const options = { temperature: 0, repeat_last_n: 0, num_predict: script.length };

t.test('a call comes back as message.tool_calls with object arguments, streamed and not', async (t) => {
  const whole = await ollama.chat({ model: 'gemma2', messages, tools, options, stream: false });
  t.same(whole.message.tool_calls, [{ function: { name: 'get_time', arguments: { city: 'Oslo' } } }]);
  t.equal(whole.message.content, 'Checking. ', 'the text before the call, the call taken out');
  t.equal(whole.done_reason, 'length');
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
  const chat = new ChatOllama({ baseUrl: host, model: 'gemma2', temperature: 0, repeatLastN: 0, numPredict: script.length }).bindTools(tools);
  const reply = await chat.invoke('What time is it in Oslo?');
  t.equal(reply.tool_calls?.length, 1);
  t.match(reply.tool_calls?.[0], { name: 'get_time', args: { city: 'Oslo' } });
});
