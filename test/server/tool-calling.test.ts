// Structured output and tool calling as client libraries use them, through the real server on
// a tiny random model: the official openai client (`chat.completions.parse` with a zod schema,
// a tool loop with tool_choice required / named / auto, streamed tool-call deltas reassembled,
// parallel_tool_calls false) and LangChain's ChatOpenAI (`withStructuredOutput`, `bindTools`).
// With random weights the values are arbitrary; their shape is what is checked.
import t, { type Test } from 'tap';
import { Ajv } from 'ajv';
import { z } from 'zod';
import { zodResponseFormat } from 'openai/helpers/zod';
import type { ChatCompletionMessageParam, ChatCompletionTool, ChatCompletionToolChoiceOption, ChatCompletionMessageFunctionToolCall } from 'openai/resources/chat/completions';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessage } from '@langchain/core/messages';
import { startTinyServer } from './tiny-server.ts';

// The tool instructions take ~400 tokens of the tiny character-level tokenizer.
const { client, model, baseURL, engine } = await startTinyServer('tools', { maxPositions: 2048 });
const ajv = new Ajv({ strict: false });

const weatherParams = { type: 'object', properties: { city: { type: 'string', minLength: 1, maxLength: 12 }, unit: { enum: ['C', 'F'] } }, required: ['city', 'unit'], additionalProperties: false };
const timeParams = { type: 'object', properties: { zone: { type: 'string', pattern: '^[A-Z]{3}$' }, h24: { type: 'boolean' } }, required: ['zone'], additionalProperties: false };
const tools: ChatCompletionTool[] = [
  { type: 'function', function: { name: 'get_weather', description: 'Current weather in a city', parameters: weatherParams } },
  { type: 'function', function: { name: 'get_time', description: 'Time in a zone', parameters: timeParams } },
];
const paramsOf: Record<string, object> = { get_weather: weatherParams, get_time: timeParams };
const question: ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }];

/** Fails unless `call` names an offered tool and its arguments are JSON valid against its parameters. */
function checkCall(t: Test, call: { name: string; arguments: string }): void {
  const schema = paramsOf[call.name];
  if (schema === undefined) { t.fail(`unknown tool ${call.name}`); return; }
  let args: unknown;
  try { args = JSON.parse(call.arguments); } catch { t.fail(`arguments not JSON: ${call.arguments}`); return; }
  t.ok(ajv.validate(schema, args), `${call.name}(${call.arguments}) ${ajv.errorsText()}`);
}

const functionCalls = (calls: readonly { type: string }[] | undefined): ChatCompletionMessageFunctionToolCall[] =>
  (calls ?? []).filter((c): c is ChatCompletionMessageFunctionToolCall => c.type === 'function');

t.test('chat.completions.parse with zodResponseFormat returns a parsed object', async (t) => {
  const Event = z.object({ name: z.string().max(10), day: z.enum(['mon', 'tue', 'wed']), guests: z.array(z.string().max(5)).max(3), size: z.number().int().min(1).max(50), confirmed: z.boolean() });
  let parsed = 0;
  for (const seed of [1, 2, 3, 4]) {
    const r = await client.chat.completions.parse({ model, messages: [{ role: 'user', content: 'Plan an event.' }], response_format: zodResponseFormat(Event, 'event'), max_tokens: 250, temperature: 1, seed });
    const choice = r.choices[0]!;
    if (choice.finish_reason !== 'stop') continue;
    t.ok(choice.message.parsed !== null, `parsed: ${choice.message.content}`);
    t.same(Event.parse(choice.message.parsed), choice.message.parsed, 'the zod schema accepts it');
    parsed++;
  }
  t.ok(parsed >= 3, `${parsed}/4 stopped and parsed`);
});

t.test('a tool loop: call, tool result with tool_call_id, next turn, for each tool_choice', async (t) => {
  // [label, tool_choice of the first turn, of the second]; 'required, then auto' gives auto a history with a tool result.
  const named: ChatCompletionToolChoiceOption = { type: 'function', function: { name: 'get_time' } };
  const choices: [string, ChatCompletionToolChoiceOption, ChatCompletionToolChoiceOption][] = [
    ['required', 'required', 'required'], ['named', named, named], ['auto', 'auto', 'auto'], ['required, then auto', 'required', 'auto'],
  ];
  for (const [label, first, second] of choices) {
    const outcomes = { called: 0, answered: 0 };
    for (const seed of [11, 12, 13]) {
      let messages = question;
      for (let turn = 0; turn < 2; turn++) {
        const tool_choice = turn === 0 ? first : second;
        const r = await client.chat.completions.create({ model, messages, tools, tool_choice, max_tokens: 200, temperature: 1, seed: seed + turn });
        const choice = r.choices[0]!;
        const calls = functionCalls(choice.message.tool_calls);
        if (calls.length === 0) {
          // Only auto may answer in text; a forced call cut by max_tokens would still show as a call.
          t.equal(tool_choice, 'auto', `${label}: no call (${choice.finish_reason}: ${choice.message.content})`);
          t.type(choice.message.content, 'string');
          outcomes.answered++;
          break;
        }
        outcomes.called++;
        if (choice.finish_reason === 'length') continue;
        t.equal(choice.finish_reason, 'tool_calls', label);
        for (const c of calls) {
          t.match(c.id, /^call_/);
          checkCall(t, c.function);
          if (label === 'named') t.equal(c.function.name, 'get_time');
        }
        messages = [...messages, choice.message, ...calls.map((c): ChatCompletionMessageParam => ({ role: 'tool', tool_call_id: c.id, content: `result of ${c.function.name}: 42` }))];
      }
    }
    t.comment(`${label}: ${outcomes.called} calls, ${outcomes.answered} text answers`);
    if (second !== 'auto') t.equal(outcomes.called, 6, `${label}: a call every turn`);
    else if (first !== 'auto') t.ok(outcomes.called >= 3, `${label}: a call every first turn`);
  }
});

t.test('auto: a text answer ends with stop when the model ends it, streamed and not', async (t) => {
  // The end token is drawn once allowed: first after min_tokens (4 tokens of text, too few to
  // open a `<tool_call>`), where the free text of the tool grammar must allow it.
  const extra = { min_tokens: 4 };
  const req = { model, messages: question, tools, tool_choice: 'auto' as const, logit_bias: { [engine.stopIds[0]!]: 100 }, max_tokens: 40, temperature: 1, ...extra };
  for (const seed of [41, 42]) {
    const r = await client.chat.completions.create({ ...req, seed });
    const choice = r.choices[0]!;
    t.equal(choice.finish_reason, 'stop', `seed ${seed}: ${JSON.stringify(choice.message.content)}`);
    t.equal(functionCalls(choice.message.tool_calls).length, 0, 'no call');
    t.ok(r.usage!.completion_tokens < 40, `${r.usage!.completion_tokens} tokens, not max_tokens`);
    let finish: string | null = null;
    for await (const chunk of await client.chat.completions.create({ ...req, seed, stream: true })) finish = chunk.choices[0]?.finish_reason ?? finish;
    t.equal(finish, 'stop', `seed ${seed}: streamed`);
  }
});

t.test('streamed tool-call deltas reassemble to the non-streamed calls for the same seed', async (t) => {
  for (const [seed, tool_choice] of [[21, 'required'], [22, 'required'], [23, 'auto'], [24, { type: 'function', function: { name: 'get_weather' } }]] as const) {
    const req = { model, messages: question, tools, tool_choice, max_tokens: 200, temperature: 1, seed };
    const whole = await client.chat.completions.create(req);
    const stream = await client.chat.completions.create({ ...req, stream: true });
    const calls: { id: string; name: string; arguments: string }[] = [];
    let content = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice === undefined) continue;
      content += choice.delta.content ?? '';
      for (const d of choice.delta.tool_calls ?? []) {
        if (d.id !== undefined) {
          t.equal(d.index, calls.length, 'a new call takes the next index');
          calls.push({ id: d.id, name: d.function?.name ?? '', arguments: d.function?.arguments ?? '' });
        } else {
          calls[d.index]!.arguments += d.function?.arguments ?? '';
        }
      }
      finish = choice.finish_reason ?? finish;
    }
    const expected = functionCalls(whole.choices[0]!.message.tool_calls);
    t.same(calls.map((c) => [c.name, c.arguments]), expected.map((c) => [c.function.name, c.function.arguments]), `seed ${seed}: the same calls`);
    t.equal(content.trim(), (whole.choices[0]!.message.content ?? '').trim(), `seed ${seed}: the same text`);
    t.equal(finish, whole.choices[0]!.finish_reason);
    for (const c of calls) t.not(c.id, expected.find(() => true)?.id, 'ids are per response');
  }
});

t.test('parallel_tool_calls false makes at most one call; true may make more', async (t) => {
  const counts = await Promise.all([31, 32, 33, 34, 35, 36].map(async (seed) => {
    const [single, multi] = await Promise.all([false, true].map((parallel_tool_calls) =>
      client.chat.completions.create({ model, messages: question, tools, tool_choice: 'required', parallel_tool_calls, max_tokens: 250, temperature: 1, seed })));
    const one = functionCalls(single!.choices[0]!.message.tool_calls);
    t.equal(one.length, 1, `seed ${seed}: one call`);
    for (const c of one) checkCall(t, c.function);
    if (multi!.choices[0]!.finish_reason === 'tool_calls') for (const c of functionCalls(multi!.choices[0]!.message.tool_calls)) checkCall(t, c.function);
    return functionCalls(multi!.choices[0]!.message.tool_calls).length;
  }));
  t.comment(`parallel_tool_calls true: calls per response ${counts.join(', ')}`);
});

t.test('LangChain ChatOpenAI: withStructuredOutput and bindTools against the server', async (t) => {
  const llm = new ChatOpenAI({ model, apiKey: 'none', configuration: { baseURL: `${baseURL}/v1` }, maxRetries: 0, temperature: 1, maxTokens: 250 });
  const Person = z.object({ name: z.string().max(10), age: z.number().int().min(0).max(120), role: z.enum(['admin', 'user']) });
  // The default is jsonSchema for a model name that is not gpt-3*/gpt-4-*/gpt-4; functionCalling forces a named tool.
  for (const method of ['jsonSchema', 'functionCalling', undefined] as const) {
    const structured = llm.withStructuredOutput(Person, method === undefined ? {} : { method });
    const out = await structured.invoke('Describe a person.').then((v) => ({ v }), (e: unknown) => ({ e }));
    if ('e' in out) { t.fail(`withStructuredOutput(${method ?? 'default'}): ${String(out.e)}`); continue; }
    t.same(Person.parse(out.v), out.v, `withStructuredOutput(${method ?? 'default'}) gives a valid object: ${JSON.stringify(out.v)}`);
  }
  const withTools = llm.bindTools(tools, { tool_choice: 'required' });
  const msg = await withTools.invoke('What is the weather in Paris?');
  t.ok(msg instanceof AIMessage);
  t.ok((msg.tool_calls ?? []).length >= 1, 'tool_calls');
  for (const c of msg.tool_calls ?? []) {
    const schema = paramsOf[c.name];
    t.ok(schema !== undefined && ajv.validate(schema, c.args), `${c.name}(${JSON.stringify(c.args)}) ${ajv.errorsText()}`);
  }
});
