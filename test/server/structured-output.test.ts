// Structured output through the real server (HTTP, routes, engine, xgrammar) on a tiny random
// model: with random weights at temperature 1, every constrained output that ends with 'stop'
// is valid — 200 seeded, varied JSON schemas (streamed and not) validate with Ajv, json_object
// parses to an object, choices and regexes match, on chat and completions, through
// response_format, structured_outputs and guided_*; a constraint that does not compile (or two
// of them) is a 400 naming the parameter; constrained and free requests batched together get
// what each gets alone (greedy).
import t from 'tap';
import { Ajv } from 'ajv';
import { startTinyServer } from './tiny-server.ts';

const { baseURL, model } = await startTinyServer('structured', { maxPositions: 2048 });
const messages = [{ role: 'user', content: 'Answer in JSON.' }];

type Body = Record<string, unknown>;
interface Result { status: number; text: string; reason: string | null; json: Body }

/** POSTs `body`; for a stream, the content deltas reassembled and the last finish_reason. */
async function post(path: string, body: Body): Promise<Result> {
  const res = await fetch(`${baseURL}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (body['stream'] !== true || res.status !== 200) {
    const json = await res.json() as Body;
    const choice = (json['choices'] as Body[] | undefined)?.[0];
    const msg = choice?.['message'] as Body | undefined;
    const text = (msg !== undefined ? msg['content'] : choice?.['text']) as string | undefined;
    return { status: res.status, text: text ?? '', reason: (choice?.['finish_reason'] as string | undefined) ?? null, json };
  }
  let text = '';
  let reason: string | null = null;
  for (const line of (await res.text()).split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const choice = ((JSON.parse(line.slice(6)) as Body)['choices'] as Body[])[0];
    if (choice === undefined) continue;
    const delta = choice['delta'] as Body | undefined;
    text += (delta !== undefined ? delta['content'] : choice['text']) as string | undefined ?? '';
    if (choice['finish_reason'] !== null) reason = choice['finish_reason'] as string;
  }
  return { status: res.status, text, reason, json: {} };
}
const chat = (body: Body): Promise<Result> => post('/v1/chat/completions', { model, messages, ...body });
const complete = (body: Body): Promise<Result> => post('/v1/completions', { model, prompt: 'JSON:', ...body });

/** Runs `f` over `items` in batches of `size` concurrent requests. */
async function batched<T, R>(items: readonly T[], size: number, f: (x: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size) out.push(...await Promise.all(items.slice(i, i + size).map((x, k) => f(x, i + k))));
  return out;
}

/** mulberry32: a small seeded generator, so the schemas are the same on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), a | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random JSON schema: objects (nested to `depth`), arrays with item bounds, enums, bounded numbers, strings with maxLength or a pattern, required and optional properties. */
function randomSchema(r: () => number, depth: number): Body {
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)]!;
  const leaf = (): Body => {
    const lo = int(-100, 100);
    return pick<() => Body>([
      () => ({ type: 'integer', minimum: lo, maximum: lo + int(0, 500) }),
      () => ({ type: 'number', minimum: lo, maximum: lo + int(1, 50) }),
      () => ({ type: 'boolean' }),
      () => ({ enum: pick([['red', 'green', 'blue'], ['a', 'b'], ['x1', 'y22', 'z333', 'w']]) }),
      () => ({ type: 'string', maxLength: int(1, 8) }),
      () => ({ type: 'string', minLength: 1, maxLength: int(2, 6) }),
      () => ({ type: 'string', pattern: pick(['^[a-z]{2,5}$', '^[A-Z][0-9]{2}$', '^(yes|no)$']) }),
      () => ({ type: 'null' }),
    ])();
  };
  const node = (d: number): Body => {
    const roll = r();
    if (d > 0 && roll < 0.25) return object(d - 1);
    if (d > 0 && roll < 0.45) {
      const min = int(0, 2);
      return { type: 'array', items: node(d - 1), minItems: min, maxItems: min + int(0, 2) };
    }
    return leaf();
  };
  const object = (d: number): Body => {
    const names = ['id', 'name', 'kind', 'size', 'tags', 'point', 'meta', 'ok'].filter(() => r() < 0.5).slice(0, 4);
    if (names.length === 0) names.push('value');
    const properties = Object.fromEntries(names.map((n) => [n, node(d)]));
    return { type: 'object', properties, required: names.filter(() => r() < 0.7), ...(r() < 0.5 ? { additionalProperties: false } : {}) };
  };
  return object(depth);
}

t.test('200 varied JSON schemas at temperature 1: every output that stops validates', async (t) => {
  const ajv = new Ajv({ strict: false });
  const r = rng(18);
  const cases = Array.from({ length: 200 }, (_, i) => ({ schema: randomSchema(r, 2), stream: i % 2 === 0, seed: 1000 + i }));
  const started = Date.now();
  // response_format's strict in turn: true, absent (strict too) and false (the schema's own
  // additionalProperties rules: a random model then writes extra properties with free-text keys).
  const strictness = (i: number): boolean | undefined => [true, undefined, false][Math.floor(i / 3) % 3];
  const loose = (i: number): boolean => i % 3 === 0 && strictness(i) === false;
  const results = await batched(cases, 20, async ({ schema, stream, seed }, i) => {
    // Three ways to ask for a schema, in turn: OpenAI's response_format, vLLM's structured_outputs and guided_json.
    const field: Body = i % 3 === 0 ? { response_format: { type: 'json_schema', json_schema: { name: `s${i}`, schema, ...(strictness(i) === undefined ? {} : { strict: strictness(i) }) } } }
      : i % 3 === 1 ? { structured_outputs: { json: schema } } : { guided_json: schema };
    return chat({ ...field, stream, seed, temperature: 1, max_tokens: 250 });
  });
  const count = { stop: 0, length: 0, looseStop: 0, looseLength: 0 };
  for (const [i, res] of results.entries()) {
    t.equal(res.status, 200);
    if (res.reason === 'length') {
      if (loose(i)) count.looseLength++; else count.length++;
      if (process.env['SO_DEBUG'] !== undefined) t.comment(`length ${i}: ${res.text} for ${JSON.stringify(cases[i]!.schema)}`);
      continue;
    }
    t.equal(res.reason, 'stop');
    if (loose(i)) count.looseStop++; else count.stop++;
    const { schema } = cases[i]!;
    let value: unknown;
    try { value = JSON.parse(res.text); } catch { t.fail(`case ${i}: not JSON: ${res.text}`); continue; }
    if (!ajv.validate(schema, value)) t.fail(`case ${i}: ${ajv.errorsText()}: ${res.text} for ${JSON.stringify(schema)}`);
  }
  t.comment(`200 schemas in ${Date.now() - started} ms: strict ${count.stop} stop, ${count.length} length; strict: false ${count.looseStop} stop, ${count.looseLength} length`);
  t.ok(count.length <= 0.1 * (count.stop + count.length), `strict: 'length' is a small minority (${count.length}/${count.stop + count.length})`);
  t.ok(count.looseStop >= 3, 'strict: false outputs that stop validate too');
});

t.test('json_object always parses to an object, streamed or not, chat and completions', async (t) => {
  const results = await batched(Array.from({ length: 16 }, (_, i) => i), 16, (i) => {
    const body = { response_format: { type: 'json_object' }, stream: i % 2 === 0, seed: i, temperature: 1, max_tokens: 400 };
    return i < 12 ? chat(body) : complete(body);
  });
  let stopped = 0;
  for (const res of results) {
    t.equal(res.status, 200);
    // A random model's object may nest until max_tokens: then it is cut, but still an object's start.
    if (res.reason !== 'stop') { t.equal(res.reason, 'length'); t.match(res.text, /^\s*\{/, 'a cut object starts as one'); continue; }
    stopped++;
    const v = JSON.parse(res.text) as unknown;
    t.ok(typeof v === 'object' && v !== null && !Array.isArray(v), `an object: ${res.text}`);
  }
  // Which outputs stop varies with the batches their steps ran in (16 requests at once, so the
  // numerics of each step vary a little). At 200 tokens 12/16 stopped, exactly the threshold;
  // at 400 tokens 14/16. Half is enough for the check above to see objects.
  t.ok(stopped >= 8, `${stopped}/16 stopped`);
});

t.test('choice and regex outputs match, through structured_outputs and guided_*', async (t) => {
  const choices = ['alpha', 'beta', 'gamma delta', 'é"quoted"'];
  const pattern = '[a-z]{3,8}-[0-9]{2}';
  const fields: [string, Body, (s: string) => boolean][] = [
    ['structured_outputs.choice', { structured_outputs: { choice: choices } }, (s) => choices.includes(s)],
    ['guided_choice', { guided_choice: choices }, (s) => choices.includes(s)],
    ['structured_outputs.regex', { structured_outputs: { regex: pattern } }, (s) => new RegExp(`^${pattern}$`).test(s)],
    ['guided_regex', { guided_regex: pattern }, (s) => new RegExp(`^${pattern}$`).test(s)],
  ];
  const cases = fields.flatMap(([name, field, ok]) => [0, 1, 2, 3, 4, 5].map((k) => ({ name, field, ok, k })));
  const results = await batched(cases, 24, ({ field, k }) => {
    const body = { ...field, stream: k % 2 === 0, seed: 100 + k, temperature: 1, max_tokens: 40 };
    return k < 4 ? chat(body) : complete(body);
  });
  for (const [i, res] of results.entries()) {
    const { name, ok } = cases[i]!;
    t.equal(res.status, 200, name);
    t.equal(res.reason, 'stop', name);
    t.ok(ok(res.text), `${name}: ${JSON.stringify(res.text)}`);
  }
});

t.test('completions take response_format json_schema and guided_json', async (t) => {
  const ajv = new Ajv({ strict: false });
  const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 }, s: { enum: ['x', 'y'] } }, required: ['n', 's'], additionalProperties: false };
  const results = await Promise.all([0, 1, 2, 3].map((k) => complete({
    ...(k < 2 ? { response_format: { type: 'json_schema', json_schema: { name: 'c', schema, strict: true } } } : { guided_json: JSON.stringify(schema) }),
    stream: k % 2 === 0, seed: k, temperature: 1, max_tokens: 60,
  })));
  for (const res of results) {
    t.equal(res.status, 200);
    t.equal(res.reason, 'stop');
    t.ok(ajv.validate(schema, JSON.parse(res.text)), `${res.text}: ${ajv.errorsText()}`);
  }
});

t.test('a constraint that cannot be compiled, or two of them, is a 400 naming the parameter', async (t) => {
  const errorOf = (res: Result): Body => res.json['error'] as Body;
  const bad: [string, Body, Promise<Result>][] = [
    ['response_format', {}, chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'nonsense' } } } } }, max_tokens: 5 })],
    ['response_format', {}, complete({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'nonsense' } } }, max_tokens: 5 })],
    ['structured_outputs.regex', {}, chat({ structured_outputs: { regex: '([a-z]' }, max_tokens: 5 })],
    ['guided_regex', {}, chat({ guided_regex: '[a-z' , max_tokens: 5, stream: true })],
    ['structured_outputs.json', {}, chat({ structured_outputs: { json: '{not json' }, max_tokens: 5 })],
    ['structured_outputs.choice', {}, chat({ structured_outputs: { choice: [] }, max_tokens: 5 })],
    ['structured_outputs.regex', {}, chat({ response_format: { type: 'json_object' }, structured_outputs: { regex: 'a+' }, max_tokens: 5 })],
    ['guided_choice', {}, complete({ guided_regex: 'a+', guided_choice: ['a'], max_tokens: 5 })],
    ['tool_choice', {}, chat({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }], tool_choice: { type: 'function', function: { name: 'g' } }, max_tokens: 5 })],
    ['response_format', {}, chat({ tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'required', response_format: { type: 'json_object' }, max_tokens: 5 })],
  ];
  for (const [param, , pending] of bad) {
    const res = await pending;
    t.equal(res.status, 400, param);
    t.equal(errorOf(res)['param'], param, `${param}: ${String(errorOf(res)['message'])}`);
    t.match(String(errorOf(res)['message']), param, 'the message names it too');
  }
  // A schema xgrammar refuses says why (its words), not just that it was refused.
  const res = await chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'nonsense' } } } } } });
  t.match(String(errorOf(res)['message']), /nonsense/);
});

t.test('constrained and free requests batched together get what each gets alone (greedy)', async (t) => {
  const schema = { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 999 }, b: { type: 'array', items: { enum: ['p', 'q'] }, maxItems: 3 } }, required: ['a', 'b'] };
  const bodies: [string, Body][] = [
    ['free chat', { max_tokens: 40 }],
    ['json_schema', { response_format: { type: 'json_schema', json_schema: { name: 'g', schema } }, max_tokens: 80 }],
    ['json_object', { response_format: { type: 'json_object' }, max_tokens: 80 }],
    ['regex', { structured_outputs: { regex: '[a-z]{3,8}-[0-9]{2}' }, max_tokens: 40 }],
    ['choice streamed', { guided_choice: ['one', 'two', 'three'], max_tokens: 10, stream: true }],
    ['free streamed', { max_tokens: 40, stream: true }],
    ['tool required', { tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { x: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['x'] } } }], tool_choice: 'required', max_tokens: 120 }],
  ];
  const run = ([name, body]: [string, Body]): Promise<Result> => (name === 'free chat' ? complete : chat)({ ...body, temperature: 0 });
  const alone: Result[] = [];
  for (const b of bodies) alone.push(await run(b));
  const together = await Promise.all(bodies.map(run));
  for (const [i, [name]] of bodies.entries()) {
    t.equal(together[i]!.status, 200, name);
    t.equal(together[i]!.reason, alone[i]!.reason, `${name}: finish_reason`);
    // Tool call ids are random per response; everything else must match.
    const output = (r: Result): string => JSON.stringify(r.json['choices'] ?? r.text, (k, v: unknown) => (k === 'id' ? undefined : v));
    t.equal(output(together[i]!), output(alone[i]!), `${name}: the same output`);
  }
  // Constraints must change something, or the comparison above proves little.
  t.not(alone[1]!.text, alone[0]!.text);
});
