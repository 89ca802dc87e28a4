// Decode time per token with and without a JSON-schema constraint, at batch 1 and 8, alternated
// in one run (medians). The model is given by --model (an export or checkpoint), else a tiny
// random model with Gemma's 256,000-token vocabulary and real tokenizer: there the forward pass
// is tiny, so the ratio shows the constraint's host cost at its largest.
//   npx tsx bench/constrained-decode.ts [--model DIR] [--tokens 48] [--runs 3]
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeRandomCheckpoint } from '../src/checkpoint/make-random.ts';
import { Engine } from '../src/engine/engine.ts';
import type { Constraint } from '../src/engine/grammar/constraint.ts';
import { GEMMA_TOKENIZER_CONFIG, GEMMA_TOKENIZER_JSON } from '../test/text/gemma-tokenizer.ts';

const { values } = parseArgs({ options: { model: { type: 'string' }, tokens: { type: 'string', default: '48' }, runs: { type: 'string', default: '3' } } });
const tokens = Number(values.tokens);
const runs = Number(values.runs);
const dir = mkdtempSync(join(tmpdir(), 'gs-cdec-'));
let modelDir = values.model;
if (modelDir === undefined) {
  modelDir = join(dir, 'ckpt');
  makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: modelDir, set: { vocab_size: '256000', max_position_embeddings: '2048' } });
  copyFileSync(GEMMA_TOKENIZER_JSON, join(modelDir, 'tokenizer.json'));
  copyFileSync(GEMMA_TOKENIZER_CONFIG, join(modelDir, 'tokenizer_config.json'));
}
const engine = await Engine.start({ modelDir, dataDir: join(dir, 'data'), kvCacheBytes: 256 * 2 ** 20, maxNumSeqs: 8 });
const fields = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`f${i}`, i % 3 === 0 ? { type: 'string' } : i % 3 === 1 ? { type: 'integer' } : { type: 'array', items: { type: 'string' } }]));
const constraint: Constraint = { kind: 'json_schema', schema: { type: 'object', properties: fields, required: Object.keys(fields), additionalProperties: false } };
const prompt = Array.from(await engine.encodeChat([{ role: 'user', content: 'Fill in the form.' }], { addGenerationPrompt: true }));
const t0c = performance.now();
await engine.checkConstraint(constraint);
console.log(`compile (20 fields, cold, incl. token table): ${(performance.now() - t0c).toFixed(0)} ms`);

/** ms per generated token (wall / tokens of the slowest sequence) for `batch` sequences at once. */
async function run(batch: number, constrained: boolean): Promise<number> {
  const t0 = performance.now();
  let max = 0;
  await Promise.all(Array.from({ length: batch }, async (_, i) => {
    let n = 0;
    // min_tokens keeps a JSON value from ending early; ignore_eos lets the free row run as long.
    const req = engine.validate({ promptIds: prompt, maxTokens: tokens, temperature: 1, seed: i, ignoreEos: true, ...(constrained ? { constraint } : {}) });
    for await (const ev of engine.generate(req)) if (ev.type === 'token') n++;
    max = Math.max(max, n);
  }));
  return (performance.now() - t0) / Math.max(1, max);
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const batch of [1, 8]) {
  const free: number[] = [];
  const cons: number[] = [];
  for (let r = 0; r < runs; r++) { free.push(await run(batch, false)); cons.push(await run(batch, true)); }
  console.log(`batch ${batch}: free ${median(free).toFixed(2)} ms/token, constrained ${median(cons).toFixed(2)} ms/token (x${(median(cons) / median(free)).toFixed(2)}); runs free [${free.map((x) => x.toFixed(2)).join(', ')}] constrained [${cons.map((x) => x.toFixed(2)).join(', ')}]`);
}
await engine.close();
rmSync(dir, { recursive: true, force: true });
