// Embeddings from the exported graph's `hidden` output equal a float64 reference of Gemma 2's
// pooled final hidden states (after the final norm), L2-normalised, on the golden fixtures: in
// both attention layouts, over one prefill or several chunks, with mean and last-token pooling,
// and with a decode row in the same step (the paged runner's batched pass).
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { loadRunner } from '../../src/engine/runner.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { EmbeddingPool } from '../../src/engine/embedding-pool.ts';
import type { Pooling } from '../../src/engine/types.ts';
import { Gemma2Reference } from '../reference/gemma2-reference.ts';

const fixturesDir = join(import.meta.dirname, '..', 'fixtures');

/** The reference embedding: the mean (or last) of the float64 final hidden states, L2-normalised. */
function referenceEmbedding(ref: Gemma2Reference, ids: readonly number[], pooling: Pooling): Float64Array {
  const states = ref.hiddenStates(ids);
  const pooled = new Float64Array(ref.config.hiddenSize);
  for (const h of pooling === 'mean' ? states : states.slice(-1)) h.forEach((v, j) => { pooled[j]! += v; });
  const norm = Math.hypot(...pooled);
  return pooled.map((v) => v / norm);
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

for (const [name, attention, binder] of [['tiny-gemma2', 'paged', 'native'], ['tiny-gemma2-bf16-mqa', 'paged', 'native'], ['tiny-gemma2', 'paged', 'stock'], ['tiny-gemma2', 'gqa', 'native'], ['tiny-gemma2-bf16-mqa', 'gqa', 'native']] as const) {
  t.test(`${name}, ${attention} attention, ${binder} binding`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'gs-embed-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    exportCheckpoint({ checkpointDir: join(fixturesDir, name), outDir: join(dir, 'model'), attention });
    const golden = JSON.parse(readFileSync(join(fixturesDir, name, 'golden.json'), 'utf8')) as { sequences: { input_ids: number[] }[] };
    const ref = Gemma2Reference.fromCheckpoint(join(fixturesDir, name));
    const runner = await loadRunner(join(dir, 'model'), attention === 'paged' ? { blockSize: 4, kvCacheBytes: 4 * 2 ** 20, binder } : { kvCacheTokens: 64, maxNumSeqs: 2, kvCacheBytes: 4 * 2 ** 20 });
    t.teardown(() => runner.release());
    t.equal(runner.hiddenSize, ref.config.hiddenSize, 'the runner returns hidden states of the hidden size');
    const stepper = new Stepper(runner);

    /** Runs `ids` in chunks of `chunk` tokens with hidden rows, pooled as the step loop pools them. */
    const embed = async (ids: readonly number[], pooling: Pooling, chunk: number): Promise<Float32Array> => {
      const seq = stepper.cache.newSequence();
      t.ok(stepper.cache.reserve(seq, ids.length));
      const pool = new EmbeddingPool(pooling, runner.hiddenSize!);
      for (let at = 0; at < ids.length; at += chunk) {
        const part = ids.slice(at, at + chunk);
        const last = at + chunk >= ids.length;
        const hidden = pooling === 'mean' ? 'all' : last ? 'last' : undefined;
        const out = await stepper.step([{ seq, tokenIds: part, logits: 'last', sample: last, ...(hidden ? { hidden } : {}) }]);
        if (hidden === undefined) continue;
        const h = out.hidden!;
        pool.add(at, h.data, h.offsets[0]!, h.offsets[1]! - h.offsets[0]!);
      }
      await stepper.free(seq);
      return pool.result();
    };

    for (const s of golden.sequences) {
      for (const pooling of ['mean', 'last'] as const) {
        const expected = referenceEmbedding(ref, s.input_ids, pooling);
        for (const chunk of [s.input_ids.length, 16, 1]) {
          const got = await embed(s.input_ids, pooling, chunk);
          const d = maxAbsDiff(got, expected);
          t.ok(d < 1e-3, `${s.input_ids.length} tokens, ${pooling}, chunks of ${chunk}: max |Δ| ${d.toExponential(2)} < 1e-3`);
        }
      }
    }

    t.test('an embedding row next to a decode row in one step', async (t) => {
      const [a, b] = golden.sequences;
      const gen = stepper.cache.newSequence();
      stepper.cache.reserve(gen, a!.input_ids.length + 1);
      await stepper.step([{ seq: gen, tokenIds: a!.input_ids, logits: 'last' }]);
      const emb = stepper.cache.newSequence();
      stepper.cache.reserve(emb, 1);
      // A one-token embedding is a single-token row: it runs in the decodes' batched pass.
      const out = await stepper.step([{ seq: gen, tokenIds: [a!.input_ids[0]!], logits: 'last' }, { seq: emb, tokenIds: [b!.input_ids[0]!], logits: 'last', hidden: 'all' }]);
      const h = out.hidden!;
      t.same(h.offsets, [0, 0, 1], 'only the embedding row has hidden states');
      const pool = new EmbeddingPool('mean', runner.hiddenSize!);
      pool.add(0, h.data, 0, 1);
      const d = maxAbsDiff(pool.result(), referenceEmbedding(ref, [b!.input_ids[0]!], 'mean'));
      t.ok(d < 1e-3, `max |Δ| ${d.toExponential(2)} < 1e-3`);
      await stepper.free(gen);
      await stepper.free(emb);
    });
  });
}
