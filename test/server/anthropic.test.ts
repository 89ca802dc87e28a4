// POST /v1/messages (Anthropic's Messages API) through the real server on a tiny random model,
// with the official @anthropic-ai/sdk client: text (the chat endpoint's tokens for the same
// conversation), system prompts, stop sequences (stop_reason and stop_sequence), streamed events
// (the SDK's MessageStream assembles the same message), a tool loop (tool_use blocks, tool_result
// sent back), count_tokens, x-api-key authentication, and errors in Anthropic's shape.
import t from 'tap';
import { Ajv } from 'ajv';
import type { AddressInfo } from 'node:net';
import Anthropic from '@anthropic-ai/sdk';
import { zodOutputFormat } from '@anthropic-ai/sdk/helpers/zod';
import { z } from 'zod';
import type OpenAI from 'openai';
import { buildApp } from '../../src/server/app.ts';
import { startTinyServer } from './tiny-server.ts';

// The tool instructions take ~400 tokens of the tiny character-level tokenizer.
const { client, model, baseURL, engine } = await startTinyServer('anthropic', { maxPositions: 2048 });
const anthropic = new Anthropic({ baseURL, apiKey: 'none', maxRetries: 0 });
const ajv = new Ajv({ strict: false });

const weatherSchema = { type: 'object' as const, properties: { city: { type: 'string', minLength: 1, maxLength: 12 }, unit: { enum: ['C', 'F'] } }, required: ['city', 'unit'], additionalProperties: false };
const weather: Anthropic.Tool = { name: 'get_weather', description: 'Current weather in a city', input_schema: weatherSchema };

async function chatAnswer(messages: OpenAI.ChatCompletionMessageParam[], extra: object = {}): Promise<OpenAI.ChatCompletion> {
  return client.chat.completions.create({ model, messages, temperature: 0, ...extra } as OpenAI.ChatCompletionCreateParamsNonStreaming);
}

// Greedy, to compare with the chat endpoint: Anthropic's current API and SDK have no sampling
// fields; gemma-serve still takes its earlier temperature / top_p / top_k.
const GREEDY: object = { temperature: 0 };

const textOf = (m: Anthropic.Message): string => m.content.flatMap((b) => (b.type === 'text' ? [b.text] : [])).join('');

t.test("messages.create: the chat endpoint's tokens, as a message", async (t) => {
  const m = await anthropic.messages.create({ model, max_tokens: 12, ...GREEDY, system: 'Answer briefly.', messages: [{ role: 'user', content: 'Hello there' }] });
  const chat = await chatAnswer([{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: 'Hello there' }], { max_tokens: 12 });
  t.match(m.id, /^msg_[0-9a-f]{32}$/);
  t.equal(m.type, 'message');
  t.equal(m.role, 'assistant');
  t.equal(m.model, model);
  t.equal(textOf(m), chat.choices[0]!.message.content);
  t.equal(m.stop_reason, chat.choices[0]!.finish_reason === 'length' ? 'max_tokens' : 'end_turn');
  t.equal(m.stop_sequence, null);
  const cached = m.usage.cache_read_input_tokens!;
  t.equal(m.usage.input_tokens + cached, chat.usage!.prompt_tokens, 'input_tokens + cache_read_input_tokens = the prompt');
  t.equal(m.usage.output_tokens, chat.usage!.completion_tokens);
  t.equal(m.usage.cache_creation_input_tokens, 0);
});

t.test('content blocks, system blocks, and a stop sequence: stop_reason stop_sequence', async (t) => {
  const messages: Anthropic.MessageParam[] = [
    { role: 'user', content: [{ type: 'text', text: 'Name a color.' }] },
    { role: 'assistant', content: [{ type: 'text', text: 'Blue.' }] },
    { role: 'user', content: [{ type: 'text', text: 'Another' }, { type: 'text', text: 'one?' }] },
  ];
  const first = await anthropic.messages.create({ model, max_tokens: 24, ...GREEDY, system: [{ type: 'text', text: 'Be brief.' }], messages });
  const chat = await chatAnswer([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Name a color.' }, { role: 'assistant', content: 'Blue.' }, { role: 'user', content: 'Another\none?' }], { max_tokens: 24 });
  t.equal(textOf(first), chat.choices[0]!.message.content, 'the same conversation as the chat endpoint\'s');
  const text = textOf(first);
  t.ok(text.length >= 4, `long enough to stop inside: ${JSON.stringify(text)}`);
  const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 2);
  const cut = await anthropic.messages.create({ model, max_tokens: 24, ...GREEDY, system: [{ type: 'text', text: 'Be brief.' }], messages, stop_sequences: ['\u0000never', stop] });
  t.equal(textOf(cut), text.slice(0, text.indexOf(stop)));
  t.equal(cut.stop_reason, 'stop_sequence');
  t.equal(cut.stop_sequence, stop);
});

t.test('a stream: Anthropic\'s events in order; the SDK\'s MessageStream assembles the same message', async (t) => {
  const body = { model, max_tokens: 16, ...GREEDY, messages: [{ role: 'user' as const, content: 'Tell me a story' }] };
  const whole = await anthropic.messages.create(body);
  const events: Anthropic.RawMessageStreamEvent[] = [];
  for await (const e of await anthropic.messages.create({ ...body, stream: true })) events.push(e);
  const types = events.map((e) => e.type);
  t.same(types.slice(0, 2), ['message_start', 'content_block_start']);
  t.same(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
  t.ok(types.slice(2, -3).every((x) => x === 'content_block_delta'), 'text deltas between');
  const start = events[0] as Anthropic.RawMessageStartEvent;
  t.equal(start.message.usage.input_tokens, whole.usage.input_tokens + whole.usage.cache_read_input_tokens!, 'message_start: the prompt\'s tokens');
  const text = events.flatMap((e) => (e.type === 'content_block_delta' && e.delta.type === 'text_delta' ? [e.delta.text] : [])).join('');
  t.equal(text, textOf(whole));
  const delta = events.at(-2) as Anthropic.RawMessageDeltaEvent;
  t.equal(delta.delta.stop_reason, whole.stop_reason);
  t.equal(delta.usage.output_tokens, whole.usage.output_tokens);

  const final = await anthropic.messages.stream(body).finalMessage();
  t.equal(textOf(final), textOf(whole), 'messages.stream(): finalMessage() has the same text');
  t.equal(final.stop_reason, whole.stop_reason);
  t.equal(final.usage.output_tokens, whole.usage.output_tokens);
});

t.test('a tool loop: tool_use blocks, then the call and its tool_result sent back', async (t) => {
  const question: Anthropic.MessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const first = await anthropic.messages.create({ model, max_tokens: 200, ...GREEDY, tools: [weather], tool_choice: { type: 'any' }, messages: question });
  t.equal(first.stop_reason, 'tool_use');
  const uses = first.content.filter((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use');
  t.ok(uses.length >= 1, `${uses.length} tool_use block(s)`);
  for (const u of uses) {
    t.equal(u.name, 'get_weather');
    t.ok(ajv.validate(weatherSchema, u.input), `input ${JSON.stringify(u.input)} ${ajv.errorsText()}`);
  }
  const next: Anthropic.MessageParam[] = [...question, { role: 'assistant', content: first.content },
    { role: 'user', content: uses.map((u) => ({ type: 'tool_result' as const, tool_use_id: u.id, content: '{"temperature": 21}' })) }];
  const second = await anthropic.messages.create({ model, max_tokens: 10, ...GREEDY, tools: [weather], tool_choice: { type: 'none' }, messages: next });
  t.same(second.content.map((b) => b.type), second.content.length === 0 ? [] : ['text'], 'tool_choice none: text only');
  const chat = await chatAnswer([{ role: 'user', content: 'What is the weather in Paris?' },
    { role: 'assistant', content: null, tool_calls: uses.map((u) => ({ id: u.id, type: 'function' as const, function: { name: u.name, arguments: JSON.stringify(u.input) } })) },
    ...uses.map((u) => ({ role: 'tool' as const, tool_call_id: u.id, content: '{"temperature": 21}' }))],
  { tools: [{ type: 'function', function: { name: 'get_weather', description: weather.description, parameters: weatherSchema } }], tool_choice: 'none', max_tokens: 10 });
  t.equal(second.usage.input_tokens + second.usage.cache_read_input_tokens!, chat.usage!.prompt_tokens, 'the same prompt as the chat endpoint\'s');
  t.equal(textOf(second), chat.choices[0]!.message.content);
  const counted = await anthropic.messages.countTokens({ model, tools: [weather], tool_choice: { type: 'none' }, messages: next });
  t.equal(counted.input_tokens, chat.usage!.prompt_tokens, 'count_tokens: the same prompt');

  // Streamed: input_json_delta pieces; the SDK assembles the same input.
  const final = await anthropic.messages.stream({ model, max_tokens: 200, ...GREEDY, tools: [weather], tool_choice: { type: 'any' }, messages: question }).finalMessage();
  t.same(final.content.map((b) => (b.type === 'tool_use' ? [b.name, b.input] : b.type)), uses.map((u) => [u.name, u.input]));
  t.equal(final.stop_reason, 'tool_use');
});

t.test('output_config.format: JSON valid against the schema (messages.parse with zodOutputFormat)', async (t) => {
  const Answer = z.object({ answer: z.enum(['yes', 'no', 'maybe']), sure: z.boolean() });
  let parsed = 0;
  for (const content of ['Is it raining?', 'Is the sky blue?', 'Will it snow?']) {
    try {
      const m = await anthropic.messages.parse({ model, max_tokens: 200, ...GREEDY, messages: [{ role: 'user', content }], output_config: { format: zodOutputFormat(Answer) } });
      t.same(Answer.parse(m.parsed_output), m.parsed_output, `parsed: ${textOf(m)}`);
      t.equal(m.stop_reason, 'end_turn');
      parsed++;
    } catch (e) {
      t.comment(`${content}: ${(e as Error).message}`); // cut by max_tokens: the SDK cannot parse it
    }
  }
  t.ok(parsed >= 2, `${parsed}/3 ended and parsed`);
});

t.test("errors in Anthropic's shape, naming the Messages parameter", async (t) => {
  const post = (path: string, body: object) => fetch(`${baseURL}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const cases: [string, object, number, string, RegExp][] = [
    ['no max_tokens', { model, messages: [{ role: 'user', content: 'Hi' }] }, 400, 'invalid_request_error', /max_tokens/],
    ['an image block', { model, max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AA==' } }] }] }, 400, 'invalid_request_error', /^messages\[0\]\.content\[0\]\.type: "image" blocks are not supported/],
    ['a server tool', { model, max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }], tools: [{ type: 'web_search_20250305', name: 'web_search' }] }, 400, 'invalid_request_error', /^tools\[0\]\.type/],
    ['a tool schema that does not compile', { model, max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }], tools: [{ name: 'f', input_schema: { type: 'nonsense' } }] }, 400, 'invalid_request_error', /^tools: .*Unsupported type "nonsense"/],
    ['temperature above 1', { model, max_tokens: 5, temperature: 1.5, messages: [{ role: 'user', content: 'Hi' }] }, 400, 'invalid_request_error', /temperature/],
    ['thinking', { model, max_tokens: 5, thinking: { type: 'enabled', budget_tokens: 1024 }, messages: [{ role: 'user', content: 'Hi' }] }, 400, 'invalid_request_error', /^thinking/],
    ['a tool_result from the assistant', { model, max_tokens: 5, messages: [{ role: 'assistant', content: [{ type: 'tool_result', tool_use_id: 'x', content: 'y' }] }] }, 400, 'invalid_request_error', /^messages\[0\]\.content\[0\]\.type: "tool_result" blocks are not supported in an assistant turn/],
    ['too many tokens', { model, max_tokens: 100_000, messages: [{ role: 'user', content: 'Hi' }] }, 400, 'invalid_request_error', /maximum context length/],
    ['an unknown model', { model: 'claude-nope', max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }] }, 404, 'not_found_error', /claude-nope/],
  ];
  for (const [label, body, status, type, message] of cases) {
    const r = await post('/v1/messages', body);
    const j = await r.json() as { type: string; error: { type: string; message: string } };
    t.equal(r.status, status, `${label}: ${status}`);
    t.same(Object.keys(j), ['type', 'error'], `${label}: Anthropic's shape ${JSON.stringify(j)}`);
    t.equal(j.type, 'error');
    t.equal(j.error.type, type, `${label}: ${type}`);
    t.match(j.error.message, message);
  }
  const sdkError = await anthropic.messages.create({ model: 'claude-nope', max_tokens: 5, messages: [{ role: 'user', content: 'Hi' }] }).catch((e: unknown) => e);
  t.ok(sdkError instanceof Anthropic.NotFoundError, 'the SDK raises its NotFoundError');
  const count = await post('/v1/messages/count_tokens', { model, messages: [{ role: 'user', content: [{ type: 'document' }] }] });
  t.equal(count.status, 400);
  t.match(await count.json(), { type: 'error', error: { type: 'invalid_request_error', message: /messages\[0\]\.content\[0\]\.type/ } });
});

t.test('with API keys: x-api-key (what the SDK sends) is accepted under /v1/messages; a wrong key is a 401 in Anthropic\'s shape', async (t) => {
  const key = 'sk-ant-test-key';
  const app = buildApp({ engine, apiKeys: [key] });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const ok = await new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 }).messages.create({ model, max_tokens: 3, messages: [{ role: 'user', content: 'Hi' }] });
  t.equal(ok.type, 'message');
  const wrong = await new Anthropic({ baseURL: url, apiKey: 'wrong', maxRetries: 0 }).messages.create({ model, max_tokens: 3, messages: [{ role: 'user', content: 'Hi' }] }).catch((e: unknown) => e);
  t.ok(wrong instanceof Anthropic.AuthenticationError, 'a wrong key: the SDK\'s AuthenticationError');
  const raw = await fetch(`${url}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  t.equal(raw.status, 401);
  t.match(await raw.json(), { type: 'error', error: { type: 'authentication_error' } });
  const elsewhere = await fetch(`${url}/v1/models`, { headers: { 'x-api-key': key } });
  t.equal(elsewhere.status, 401, 'x-api-key is read only under /v1/messages');
});
