// Tool calling's pure parts: the prompt rendering of tools and history, the constraint per
// tool_choice, and the parser that turns generated text into content and OpenAI tool calls.
import t from 'tap';
import { checkTools, parseToolCalls, renderToolMessages, toolCallConstraint, ToolCallParser, formatToolCall, type ToolFunction } from '../../src/server/tool-calls.ts';
import { InvalidRequestError } from '../../src/errors.ts';

const weather: ToolFunction = { name: 'get_weather', description: 'Weather now', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };
const time: ToolFunction = { name: 'get_time', parameters: { type: 'object', properties: {} } };

t.test('the parser splits text and calls, and streamed deltas reassemble to the whole parse', async (t) => {
  const text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris \\"}\\" {x}", "n": [1, {"a": 2}]}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';
  let n = 0;
  const whole = parseToolCalls(text, () => `call_${n++}`);
  t.equal(whole.content, 'Let me check.');
  t.same(whole.calls.map((c) => c.name), ['get_weather', 'get_time']);
  t.same(JSON.parse(whole.calls[0]!.arguments), { city: 'Paris "}" {x}', n: [1, { a: 2 }] });
  t.equal(whole.calls[1]!.arguments, '{}');
  // Every split point, one character at a time: the same content and calls.
  const p = new ToolCallParser();
  const events = [...[...text].flatMap((c) => p.push(c)), ...p.end()];
  const content = events.filter((e) => e.type === 'text').map((e) => (e as { text: string }).text).join('');
  t.equal(content.trim(), whole.content);
  const args = ['', ''];
  for (const e of events) if (e.type === 'arguments') args[e.index] += e.text;
  t.same(args, whole.calls.map((c) => c.arguments));
  t.equal(p.numCalls, 2);
});

t.test('text that only looks like the start of a tag is given back', async (t) => {
  const p = new ToolCallParser();
  t.same(p.push('a <tool'), [{ type: 'text', text: 'a ' }]);
  t.same(p.push('box> b'), [{ type: 'text', text: '<toolbox> b' }]);
  t.same(p.end(), []);
});

t.test('a call cut by max_tokens keeps what was generated', async (t) => {
  const r = parseToolCalls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', () => 'id');
  t.same(r.calls, [{ id: 'id', name: 'get_weather', arguments: '{"city": "Par' }]);
  t.equal(r.content, '');
});

t.test('history with calls and results renders as alternating turns, calls as the model writes them', async (t) => {
  const msgs = renderToolMessages([
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: '', toolCalls: [{ id: 'c1', name: 'get_weather', arguments: '{"city":"Paris"}' }, { id: 'c2', name: 'get_time', arguments: '' }] },
    { role: 'tool', content: '18C', toolCallId: 'c1' },
    { role: 'tool', content: '12:00', toolCallId: 'c2' },
  ], [weather, time], true);
  t.same(msgs.map((m) => m.role), ['system', 'user', 'assistant', 'user']);
  t.match(msgs[0]!.content, /get_weather/);
  t.equal(msgs[2]!.content, `${formatToolCall({ name: 'get_weather', arguments: '{"city":"Paris"}' })}\n${formatToolCall({ name: 'get_time', arguments: '' })}`);
  t.match(msgs[3]!.content, /^<tool_response>\n\{"tool_call_id": "c1", "name": "get_weather"\}\n18C\n<\/tool_response>\n<tool_response>\n\{"tool_call_id": "c2", "name": "get_time"\}\n12:00/);
  t.same(renderToolMessages([{ role: 'user', content: 'hi' }], [weather], false), [{ role: 'user', content: 'hi' }]);
});

t.test('the constraint follows tool_choice', async (t) => {
  t.equal(toolCallConstraint([weather], 'none', true), null);
  const auto = toolCallConstraint([weather, time], 'auto', true)!;
  t.equal(auto.format['type'], 'triggered_tags');
  t.equal(auto.format['stop_after_first'], false);
  const req = toolCallConstraint([weather, time], 'required', false)!;
  t.equal(req.format['type'], 'tags_with_separator');
  t.equal(req.format['at_least_one'], true);
  t.equal(req.format['stop_after_first'], true);
  const named = toolCallConstraint([weather, time], { name: 'get_time' }, true)!;
  t.same((named.format['tags'] as { begin: string }[]).map((x) => x.begin), ['<tool_call>\n{"name": "get_time", "arguments": ']);
});

/** The `param` of the InvalidRequestError that `f` throws. */
function paramOf(f: () => void): string | null | undefined {
  try { f(); } catch (e) { return e instanceof InvalidRequestError ? e.param : undefined; }
  return undefined;
}

t.test('bad tool names and unknown named choices are 400s naming the parameter', async (t) => {
  t.throws(() => checkTools([{ ...weather, name: 'has space' }], 'auto'), InvalidRequestError);
  t.equal(paramOf(() => checkTools([weather, weather], 'auto')), 'tools[1].function.name');
  t.equal(paramOf(() => checkTools([weather], { name: 'nope' })), 'tool_choice');
  t.equal(paramOf(() => checkTools([], 'required')), 'tool_choice');
  t.doesNotThrow(() => checkTools([weather], { name: 'get_weather' }));
});
