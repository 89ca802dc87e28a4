// The constraint cache and its keys: a schema as text or as an object shares one compilation,
// property order is part of the key (it decides the output's order),
// the LRU keeps at most its size, a refusal is not cached and names xgrammar's reason, and
// choices with quotes, backslashes and non-ASCII text compile to exactly those strings.
import t from 'tap';
import { buildTokenizerJson } from '../../src/checkpoint/tokenizer-json.ts';
import { ConstraintCompiler } from '../../src/engine/grammar/compiler.ts';
import { SequenceGrammar } from '../../src/engine/grammar/matcher.ts';
import { checkConstraintShape, constraintKey, type Constraint } from '../../src/engine/grammar/constraint.ts';
import { grammarVocab } from '../../src/engine/grammar/vocab.ts';

const vocab = grammarVocab(buildTokenizerJson(512) as Parameters<typeof grammarVocab>[0], 512, [1]);
const compiler = new ConstraintCompiler(() => vocab, { cacheSize: 2 });
t.teardown(() => compiler.dispose());

t.test('keys: text or object is one key; property order, strictness and kind are not', async (t) => {
  const a: Constraint = { kind: 'json_schema', schema: { type: 'object', properties: { x: { type: 'integer' }, y: { type: 'string' } } } };
  const b: Constraint = { kind: 'json_schema', schema: '{"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "string"}}}', param: 'guided_json' };
  t.equal(constraintKey(a), constraintKey(b));
  t.not(constraintKey(a), constraintKey({ kind: 'json_schema', schema: { type: 'object', properties: { y: { type: 'string' }, x: { type: 'integer' } } } }), 'x then y is not y then x');
  t.not(constraintKey(a), constraintKey({ ...a, strict: false }));
  t.not(constraintKey({ kind: 'regex', pattern: 'a' }), constraintKey({ kind: 'grammar', ebnf: 'a' }));
  t.equal((await compiler.compile(a)).compiled, (await compiler.compile(b)).compiled, 'one compilation for both');
});

t.test('the cache keeps at most its size, least recently used out first', async (t) => {
  const c = (p: string): Constraint => ({ kind: 'regex', pattern: p });
  const first = (await compiler.compile(c('a+'))).compiled;
  await compiler.compile(c('b+'));
  t.equal((await compiler.compile(c('a+'))).compiled, first, 'a hit');
  await compiler.compile(c('c+')); // evicts b+, the least recently used
  t.equal(compiler.cachedCount, 2);
  t.equal((await compiler.compile(c('a+'))).compiled, first, 'a+ stayed');
});

t.test('a refusal says why and is not cached', async (t) => {
  const before = compiler.cachedCount;
  await t.rejects(compiler.compile({ kind: 'json_schema', schema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } } }),
    { name: 'ConstraintError', message: /Cannot find field \$defs/ });
  await t.rejects(compiler.compile({ kind: 'regex', pattern: '[a-' }), { name: 'ConstraintError' });
  await t.rejects(compiler.compile({ kind: 'grammar', ebnf: 'root ::= "a' }), { name: 'ConstraintError', message: /EBNF (lexer|parser) error/ });
  t.equal(compiler.cachedCount, before);
  t.equal(checkConstraintShape({ kind: 'choice', choices: ['a', ''] }), 'choices must be a non-empty list of non-empty strings');
  t.match(checkConstraintShape({ kind: 'nope' } as unknown as Constraint), /unknown constraint kind/);
});

t.test('choices are matched literally, quotes, backslashes and non-ASCII included', async (t) => {
  const choices = ['say "hi"', 'back\\slash', 'naïve ✓', 'a'];
  for (const choice of choices) {
    const g = await SequenceGrammar.create(await compiler.compile({ kind: 'choice', choices }), [1]);
    // Spell the choice byte by byte with the byte-fallback tokens (the vocabulary has them all).
    const ok = [...new TextEncoder().encode(choice)].every((b) => g.accept(vocab.byteIds[b]!));
    t.ok(ok && g.canOnlyEnd(), `${JSON.stringify(choice)} is accepted and complete`);
    g.dispose();
  }
  const g = await SequenceGrammar.create(await compiler.compile({ kind: 'choice', choices }), [1]);
  t.notOk(g.accept(vocab.byteIds['b'.charCodeAt(0)]!) && g.accept(vocab.byteIds['a'.charCodeAt(0)]!) && g.accept(vocab.byteIds['d'.charCodeAt(0)]!), '"bad" is not a choice');
  g.dispose();
});

t.test('a matcher keeps working after its grammar is evicted and others compiled', async (t) => {
  const g = await SequenceGrammar.create(await compiler.compile({ kind: 'regex', pattern: 'x+yz' }), [1]);
  t.ok(g.accept(vocab.byteIds[0x78]!), 'x');
  for (const p of ['p1[0-9]+', 'p2[a-z]+', 'p3(ab)+']) await compiler.compile({ kind: 'regex', pattern: p });
  t.ok(g.accept(vocab.byteIds[0x78]!) && g.accept(vocab.byteIds[0x79]!), 'x y');
  t.notOk(g.canOnlyEnd(), 'not complete before z');
  t.ok(g.accept(vocab.byteIds[0x7a]!) && g.canOnlyEnd(), 'z completes it');
  g.dispose();
});

t.test('numeric bounds: our range rules accept exactly the integers in range, and numbers only within bounds', async (t) => {
  /** Whether the grammar accepts `text` as a complete output. */
  const accepts = async (c: Constraint, text: string): Promise<boolean> => {
    const g = await SequenceGrammar.create(await compiler.compile(c), [1]);
    try {
      for (const b of new TextEncoder().encode(text)) if (!g.accept(vocab.byteIds[b]!)) return false;
      g.fillMask();
      return ((g.mask[0]! >>> 1) & 1) === 1; // the end token (id 1) is allowed: complete
    } finally {
      g.dispose();
    }
  };
  const wrong: string[] = [];
  for (const [lo, hi] of [[0, 130], [-7, 130], [-25, -12], [99, 101], [5, 5]] as const) {
    const c: Constraint = { kind: 'json_schema', schema: { type: 'integer', minimum: lo, maximum: hi } };
    for (let v = lo - 12; v <= hi + 12; v++) if ((await accepts(c, String(v))) !== (v >= lo && v <= hi)) wrong.push(`integer ${lo}..${hi}: ${v}`);
    for (const s of ['-0', '07', '-', '1.5']) if (await accepts(c, s)) wrong.push(`integer ${lo}..${hi} accepts ${s}`);
  }
  for (const bounds of [{ minimum: 0, maximum: 1 }, { minimum: -10.5, maximum: 10.5 }, { exclusiveMinimum: 0, exclusiveMaximum: 3 }, { maximum: -2 }]) {
    const c: Constraint = { kind: 'json_schema', schema: { type: 'number', ...bounds } };
    const b = bounds as Partial<Record<'minimum' | 'maximum' | 'exclusiveMinimum' | 'exclusiveMaximum', number>>;
    const within = (v: number): boolean => v >= (b.minimum ?? -Infinity) && v <= (b.maximum ?? Infinity) && v > (b.exclusiveMinimum ?? -Infinity) && v < (b.exclusiveMaximum ?? Infinity);
    let accepted = 0;
    for (let k = -13; k <= 13; k++) {
      for (const s of [String(k), `${k}.5`, `${k}.999`, `${k}.0`, `-0.${Math.abs(k)}5`]) {
        const ok = await accepts(c, s);
        if (ok) accepted++;
        if (ok && !within(Number(s))) wrong.push(`number ${JSON.stringify(bounds)} accepts ${s}`);
      }
    }
    t.ok(accepted > 0, `${JSON.stringify(bounds)}: ${accepted} of the probes accepted`);
  }
  t.same(wrong, []);
  await t.rejects(compiler.compile({ kind: 'json_schema', schema: { type: 'integer', minimum: 3, maximum: 2 } }), { name: 'ConstraintError', message: /no integer/ });
});
