// POST /v1/responses (OpenAI's Responses API) through the real server on a tiny random model,
// with the official openai client: text (the same tokens as the chat endpoint for the same
// conversation), instructions, streamed events (in OpenAI's order, reassembled by the SDK's
// stream helper into the same response), structured output (`responses.parse` with a zod
// format), a tool loop (function_call items resent with their function_call_output), LangChain's
// ChatOpenAI on the Responses API, and refusals that name the Responses parameter.
import t, { type Test } from 'tap';
import { Ajv } from 'ajv';
import { z } from 'zod';
import OpenAI from 'openai';
import { zodTextFormat } from 'openai/helpers/zod';
import type { FunctionTool, ResponseInputItem, ResponseStreamEvent } from 'openai/resources/responses/responses';
import { ChatOpenAI } from '@langchain/openai';
import { startTinyServer } from './tiny-server.ts';

// The tool instructions take ~400 tokens of the tiny character-level tokenizer.
const { client, model, baseURL } = await startTinyServer('responses', { maxPositions: 2048 });
const ajv = new Ajv({ strict: false });

const weatherParams = { type: 'object', properties: { city: { type: 'string', minLength: 1, maxLength: 12 }, unit: { enum: ['C', 'F'] } }, required: ['city', 'unit'], additionalProperties: false };
const weather: FunctionTool = { type: 'function', name: 'get_weather', description: 'Current weather in a city', parameters: weatherParams, strict: true };

/** The chat endpoint's answer to the same conversation and sampling. */
async function chatAnswer(messages: OpenAI.ChatCompletionMessageParam[], extra: object = {}): Promise<OpenAI.ChatCompletion> {
  return client.chat.completions.create({ model, messages, temperature: 0, ...extra } as OpenAI.ChatCompletionCreateParamsNonStreaming);
}

async function refusal(t: Test, body: object): Promise<{ status: number; error: { message: string; type: string; param: string | null; code: string | null } }> {
  const r = await fetch(`${baseURL}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, input: 'Hi', ...body }) });
  const j = await r.json() as { error: { message: string; type: string; param: string | null; code: string | null } };
  t.ok(j.error !== undefined, `an error body: ${JSON.stringify(j)}`);
  return { status: r.status, error: j.error };
}

t.test('text input: the chat endpoint\'s tokens, as a response object', async (t) => {
  const r = await client.responses.create({ model, input: 'Hello there', temperature: 0, max_output_tokens: 12 });
  const chat = await chatAnswer([{ role: 'user', content: 'Hello there' }], { max_tokens: 12 });
  t.match(r.id, /^resp_[0-9a-f]{32}$/);
  t.equal(r.object, 'response');
  t.equal(r.model, model);
  t.equal(r.output.length, 1, 'one output item');
  const item = r.output[0]!;
  t.equal(item.type, 'message');
  if (item.type !== 'message') return;
  t.equal(item.role, 'assistant');
  t.match(item.id, /^msg_/);
  t.equal(r.output_text, chat.choices[0]!.message.content, 'output_text (the SDK joins the output_text parts) is the chat content');
  t.same(r.usage, {
    input_tokens: chat.usage!.prompt_tokens, input_tokens_details: { cached_tokens: r.usage!.input_tokens_details.cached_tokens },
    output_tokens: chat.usage!.completion_tokens, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: chat.usage!.total_tokens,
  }, 'usage in the Responses shape');
  const cut = chat.choices[0]!.finish_reason === 'length';
  t.equal(r.status, cut ? 'incomplete' : 'completed');
  t.same(r.incomplete_details, cut ? { reason: 'max_output_tokens' } : null);
  t.equal(item.status, cut ? 'incomplete' : 'completed');
  t.equal((r as unknown as { store: boolean }).store, false, 'nothing is stored');
  t.same([r.temperature, r.top_p, r.max_output_tokens, r.tool_choice, r.tools, r.parallel_tool_calls], [0, 1, 12, 'auto', [], true], 'the request echoed');
});

t.test('instructions are a system message before the input; message items with parts', async (t) => {
  const input: ResponseInputItem[] = [
    { role: 'user', content: 'Name a color.' },
    // An assistant turn as a response's output item gives it (the SDK types it as an output message).
    { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Blue.', annotations: [] }] } as unknown as ResponseInputItem,
    { role: 'user', content: [{ type: 'input_text', text: 'Another' }, { type: 'input_text', text: 'one?' }] },
  ];
  const r = await client.responses.create({ model, instructions: 'Answer briefly.', input, temperature: 0, max_output_tokens: 10 });
  const chat = await chatAnswer([
    { role: 'system', content: 'Answer briefly.' }, { role: 'user', content: 'Name a color.' }, { role: 'assistant', content: 'Blue.' }, { role: 'user', content: 'Another\none?' },
  ], { max_tokens: 10 });
  t.equal(r.output_text, chat.choices[0]!.message.content);
  t.equal(r.usage!.input_tokens, chat.usage!.prompt_tokens, 'the same prompt');
  t.equal(r.instructions, 'Answer briefly.');
});

t.test('a stream: typed events in order, numbered from 0, and the SDK\'s helper assembles the same response', async (t) => {
  const body = { model, input: 'Tell me a story', temperature: 0, max_output_tokens: 16 };
  const whole = await client.responses.create(body);
  const events: ResponseStreamEvent[] = [];
  for await (const e of await client.responses.create({ ...body, stream: true })) events.push(e);
  t.same(events.map((e) => e.sequence_number), events.map((_, i) => i), 'sequence numbers 0, 1, 2, ...');
  const types = events.map((e) => e.type);
  t.same(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
  t.same(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', whole.status === 'incomplete' ? 'response.incomplete' : 'response.completed']);
  const deltas = events.flatMap((e) => (e.type === 'response.output_text.delta' ? [e.delta] : []));
  t.ok(deltas.length > 1, `${deltas.length} text deltas`);
  t.equal(deltas.join(''), whole.output_text, 'the deltas make the whole response\'s text');
  const last = events.at(-1)!;
  if (last.type !== 'response.completed' && last.type !== 'response.incomplete') { t.fail(last.type); return; }
  t.equal(last.response.output_text ?? last.response.output.flatMap((o) => (o.type === 'message' ? o.content.map((c) => (c.type === 'output_text' ? c.text : '')) : [])).join(''), whole.output_text);
  // (Its cached_tokens differ: the stream's prompt is in the prefix cache by now.)
  t.same([last.response.usage?.input_tokens, last.response.usage?.output_tokens], [whole.usage!.input_tokens, whole.usage!.output_tokens], 'the final event carries the usage');

  const helper = client.responses.stream(body);
  const texts: string[] = [];
  helper.on('response.output_text.delta', (e) => { texts.push(e.delta); });
  const final = await helper.finalResponse();
  t.equal(final.output_text, whole.output_text, 'responses.stream(): finalResponse() has the same text');
  t.equal(texts.join(''), whole.output_text);
  t.equal(final.status, whole.status);
});

t.test('responses.parse with zodTextFormat: a parsed object', async (t) => {
  const Answer = z.object({ answer: z.enum(['yes', 'no', 'maybe']), confidence: z.number().int().min(0).max(10) });
  let parsed = 0;
  for (const seed of [1, 2, 3, 4]) {
    const r = await client.responses.parse({ model, input: 'Is it raining?', text: { format: zodTextFormat(Answer, 'answer') }, max_output_tokens: 200, temperature: 1, seed } as never) as OpenAI.Responses.ParsedResponse<z.infer<typeof Answer>>;
    if (r.status !== 'completed') continue;
    t.same(Answer.parse(r.output_parsed), r.output_parsed, `parsed: ${r.output_text}`);
    parsed++;
  }
  t.ok(parsed >= 3, `${parsed}/4 completed and parsed`);
  t.same((await refusal(t, { text: { format: { type: 'json_schema', name: 'x', schema: { type: 'nonsense' } } } })).error.param, 'text.format', 'a schema that does not compile names text.format');
});

t.test('a tool loop: function_call items, then the call and its output resent', async (t) => {
  const input: ResponseInputItem[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const first = await client.responses.create({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: 200 });
  const calls = first.output.filter((o) => o.type === 'function_call');
  t.ok(calls.length >= 1, `${calls.length} function_call item(s)`);
  for (const c of calls) {
    if (c.type !== 'function_call') continue;
    t.equal(c.name, 'get_weather');
    t.match(c.call_id, /^call_/);
    t.match(c.id, /^fc_/);
    t.ok(ajv.validate(weatherParams, JSON.parse(c.arguments)), `arguments ${c.arguments} ${ajv.errorsText()}`);
  }
  t.equal(first.status, 'completed');
  // The next turn: the response's items as they came, each call answered by its call_id.
  const next: ResponseInputItem[] = [...input, ...first.output as ResponseInputItem[],
    ...calls.map((c): ResponseInputItem => ({ type: 'function_call_output', call_id: (c as { call_id: string }).call_id, output: '{"temperature": 21}' }))];
  const second = await client.responses.create({ model, input: next, tools: [weather], tool_choice: 'none', temperature: 0, max_output_tokens: 10 });
  t.same(second.output.map((o) => o.type), ['message'], 'tool_choice none: a message');
  // The same turns through the chat endpoint give the same prompt.
  const chat = await chatAnswer([{ role: 'user', content: 'What is the weather in Paris?' },
    { role: 'assistant', content: null, tool_calls: calls.map((c) => ({ id: (c as { call_id: string }).call_id, type: 'function' as const, function: { name: 'get_weather', arguments: (c as { arguments: string }).arguments } })) },
    ...calls.map((c) => ({ role: 'tool' as const, tool_call_id: (c as { call_id: string }).call_id, content: '{"temperature": 21}' }))],
  { tools: [{ type: 'function', function: { name: 'get_weather', description: weather.description, parameters: weatherParams, strict: true } }], tool_choice: 'none', max_tokens: 10 });
  t.equal(second.usage!.input_tokens, chat.usage!.prompt_tokens, 'the same prompt as the chat endpoint\'s');
  t.equal(second.output_text, chat.choices[0]!.message.content);

  // Streamed: the call's arguments arrive as deltas; the helper assembles the same call.
  const events: ResponseStreamEvent[] = [];
  for await (const e of await client.responses.create({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: 200, stream: true })) events.push(e);
  const added = events.filter((e) => e.type === 'response.output_item.added');
  t.ok(added.length >= 1 && added.every((e) => e.type === 'response.output_item.added' && e.item.type === 'function_call'), 'function_call items added');
  const args = events.flatMap((e) => (e.type === 'response.function_call_arguments.delta' ? [e.delta] : [])).join('');
  t.equal(args, calls.map((c) => (c as { arguments: string }).arguments).join(''), 'the argument deltas make the calls\' arguments');
  const done = events.filter((e) => e.type === 'response.function_call_arguments.done');
  t.same(done.map((e) => (e as { arguments: string }).arguments), calls.map((c) => (c as { arguments: string }).arguments));
  const final = await client.responses.stream({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: 200 }).finalResponse();
  t.same(final.output.map((o) => (o.type === 'function_call' ? [o.name, o.arguments] : o.type)), calls.map((c) => [(c as { name: string }).name, (c as { arguments: string }).arguments]));
});

t.test('include ["message.output_text.logprobs"]: the chat endpoint\'s logprobs, whole and streamed', async (t) => {
  const body = { model, input: 'Hello there', temperature: 0, max_output_tokens: 10, include: ['message.output_text.logprobs' as const], top_logprobs: 3 };
  const chat = await chatAnswer([{ role: 'user', content: 'Hello there' }], { max_tokens: 10, logprobs: true, top_logprobs: 3 });
  const expected = chat.choices[0]!.logprobs!.content!;
  const r = await client.responses.create(body);
  const part = (r.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText;
  t.equal(part.logprobs!.length, expected.length, `${expected.length} tokens`);
  t.same(part.logprobs, expected, 'as chat\'s logprobs.content (token, bytes, logprob, 3 alternatives)');
  t.ok(part.logprobs!.every((lp) => lp.top_logprobs.length === 3));
  const events: ResponseStreamEvent[] = [];
  for await (const e of await client.responses.create({ ...body, stream: true })) events.push(e);
  const deltas = events.flatMap((e) => (e.type === 'response.output_text.delta' ? e.logprobs ?? [] : []));
  t.same(deltas, expected, 'the deltas carry every token\'s logprobs, in order');
  const done = events.find((e) => e.type === 'response.output_text.done');
  t.same(done?.type === 'response.output_text.done' ? done.logprobs : null, expected, 'output_text.done has them all');
  const plain = await client.responses.create({ model, input: 'Hello there', temperature: 0, max_output_tokens: 4 });
  t.same(((plain.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText).logprobs, [], 'none unless asked');
});

t.test("LangChain's ChatOpenAI with useResponsesApi: invoke, stream, structured output", async (t) => {
  const llm = new ChatOpenAI({ model, apiKey: 'none', configuration: { baseURL: `${baseURL}/v1` }, useResponsesApi: true, temperature: 0, maxTokens: 12, maxRetries: 0 });
  const chat = await chatAnswer([{ role: 'user', content: 'Hello there' }], { max_tokens: 12 });
  const m = await llm.invoke('Hello there');
  t.equal(m.text, chat.choices[0]!.message.content, 'invoke: the chat endpoint\'s text');
  t.equal(m.usage_metadata?.input_tokens, chat.usage!.prompt_tokens);
  let streamed = '';
  for await (const piece of await llm.stream('Hello there')) streamed += piece.text;
  t.equal(streamed, m.text, 'stream: the same text');
  const structured = new ChatOpenAI({ model, apiKey: 'none', configuration: { baseURL: `${baseURL}/v1` }, useResponsesApi: true, temperature: 0, maxTokens: 200, maxRetries: 0 })
    .withStructuredOutput(z.object({ answer: z.enum(['yes', 'no']) }), { name: 'answer', method: 'jsonSchema' });
  const o = await structured.invoke('Is it raining?');
  t.ok(o.answer === 'yes' || o.answer === 'no', `withStructuredOutput: ${JSON.stringify(o)}`);
});

t.test('refusals name the Responses parameter', async (t) => {
  const cases: [string, object, number, string, string | null][] = [
    ['stored state', { previous_response_id: 'resp_1' }, 400, 'previous_response_id', 'unsupported_parameter'],
    ['an image part', { input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://x/y.png' }] }] }, 400, 'input[0].content[0].type', 'unsupported_parameter'],
    ['a hosted tool', { tools: [{ type: 'web_search' }] }, 400, 'tools[0].type', 'unsupported_parameter'],
    ['an unknown item', { input: [{ type: 'item_reference', id: 'x' }] }, 400, 'input[0].type', 'unsupported_parameter'],
    ['a call without call_id', { input: [{ type: 'function_call', name: 'f', arguments: '{}' }] }, 400, 'input[0].call_id', 'invalid_value'],
    // As the chat endpoint names messages when prompt and max_tokens overflow the context (OpenAI's choice).
    ['too many tokens', { max_output_tokens: 100_000 }, 400, 'input', 'context_length_exceeded'],
    ['an unknown field', { bogus: 1 }, 400, 'bogus', null],
    ['a bad temperature', { temperature: 5 }, 400, 'temperature', null],
    ['a tool without a name', { tools: [{ type: 'function', parameters: {} }] }, 400, 'tools[0].name', null],
    ['empty input', { input: [] }, 400, 'input', null],
    ['reasoning', { reasoning: { effort: 'high' } }, 400, 'reasoning', 'unsupported_parameter'],
  ];
  for (const [label, body, status, param, code] of cases) {
    const r = await refusal(t, body);
    t.equal(r.status, status, `${label}: ${status}`);
    t.equal(r.error.param, param, `${label}: param ${param} (${r.error.message})`);
    if (code !== null) t.equal(r.error.code, code, `${label}: code ${code}`);
    t.equal(r.error.type, 'invalid_request_error');
  }
  for (const harmless of [{ include: ['reasoning.encrypted_content'] }, { reasoning: { effort: null } }, { store: true, truncation: 'disabled', background: false }]) {
    const r = await fetch(`${baseURL}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, input: 'Hi', max_output_tokens: 2, ...harmless }) });
    t.equal(r.status, 200, `accepted: ${JSON.stringify(harmless)}`);
  }
  t.equal((await refusal(t, { include: ['file_search_call.results'] })).error.param, 'include', 'other include entries: refused');
  t.equal((await refusal(t, { top_logprobs: 3 })).error.param, 'top_logprobs', 'top_logprobs without include: refused');
  const wrong = await refusal(t, { model: 'no-such-model' });
  t.equal(wrong.status, 404);
  t.equal(wrong.error.code, 'model_not_found');
});

t.test('a stream cut by a failure after the headers ends with an error event; a client that leaves stops its generation', async (t) => {
  // Steps of at least 5 ms: a 200-token response is still running when the test acts, on any machine.
  const paced = await startTinyServer('responses-paced', { minStepMs: 5 });
  const post = (signal?: AbortSignal) => fetch(`${paced.baseURL}/v1/responses`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal,
    body: JSON.stringify({ model: paced.model, input: 'Tell me a story', max_output_tokens: 200, temperature: 0, ignore_eos: true, stream: true }),
  });
  /** Reads until `until` holds for the text so far (or the end); the text. */
  const read = async (body: ReadableStream<Uint8Array>, until: (text: string) => boolean): Promise<string> => {
    const reader = body.getReader();
    let text = '';
    while (!until(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString('utf8');
    }
    return text;
  };

  const controller = new AbortController();
  const left = await post(controller.signal);
  await read(left.body!, (text) => text.includes('response.output_text.delta'));
  t.ok(paced.engine.inFlight > 0, 'generating');
  controller.abort();
  const t0 = performance.now();
  while (paced.engine.inFlight > 0 && performance.now() - t0 < 1000) await new Promise((r) => setTimeout(r, 10));
  t.equal(paced.engine.inFlight, 0, `the generation stopped ${(performance.now() - t0).toFixed(0)} ms after the client left (200 tokens take 1 s or more)`);

  const cut = await post();
  let closing: Promise<void> | null = null;
  const text = await read(cut.body!, (so) => {
    if (closing === null && so.includes('response.output_text.delta')) closing = paced.engine.close();
    return false; // to the end
  });
  await closing;
  const events = text.split('\n\n').filter((e) => e !== '').map((e) => {
    const [typeLine, dataLine] = e.split('\n');
    return { type: typeLine!.replace(/^event: /, ''), data: JSON.parse(dataLine!.replace(/^data: /, '')) as { type: string; sequence_number: number; code?: string; message?: string } };
  });
  const last = events.at(-1)!;
  t.equal(last.type, 'error', 'the last event is an error');
  t.equal(last.data.code, 'engine_closed');
  t.same(Object.keys(last.data).sort(), ['code', 'message', 'param', 'sequence_number', 'type']);
  t.same(events.map((e) => e.data.sequence_number), events.map((_, i) => i), 'numbered on from the events before it');
  t.ok(events.every((e) => e.type === e.data.type), 'each event line names its data\'s type');
  t.notOk(events.some((e) => e.type === 'response.completed' || e.type === 'response.incomplete'), 'no completion before the error');
});
