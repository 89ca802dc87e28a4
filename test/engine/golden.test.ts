// The exported graph reproduces the golden log-probabilities of an independent float64 Gemma 2
// and its greedy continuation, in both attention layouts: 'paged' (the stock binding over host
// block pools) and 'gqa' (GroupQueryAttention over a cache updated in place in the native
// runner's buffers, the layout --device cuda serves).
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { loadRunner } from '../../src/engine/runner.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { argmax, logSoftmax } from '../../src/engine/logprobs.ts';

interface Golden {
  sequences: { input_ids: number[]; logprobs: number[][] }[];
  greedy: { prompt_ids: number[]; new_tokens: number; output_ids: number[] };
}

const fixturesDir = join(import.meta.dirname, '..', 'fixtures');

// The paged layout runs through the native runner by default; the stock binding is checked too.
for (const [name, attention, binder] of [['tiny-gemma2', 'paged', 'native'], ['tiny-gemma2-bf16-mqa', 'paged', 'native'], ['tiny-gemma2', 'paged', 'stock'], ['tiny-gemma2', 'gqa', 'native'], ['tiny-gemma2-bf16-mqa', 'gqa', 'native']] as const) {
  t.test(`${name}, ${attention} attention, ${binder} binding`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'gs-golden-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    exportCheckpoint({ checkpointDir: join(fixturesDir, name), outDir: join(dir, 'model'), attention });
    const golden = JSON.parse(readFileSync(join(fixturesDir, name, 'golden.json'), 'utf8')) as Golden;
    // paged: block size 4 with windows of 8 and 5, so the sliding ring spans several blocks and wraps.
    // gqa: slots of 64 positions, past both windows.
    const runner = await loadRunner(join(dir, 'model'), attention === 'paged' ? { blockSize: 4, kvCacheBytes: 4 * 2 ** 20, binder } : { kvCacheTokens: 64 });
    t.teardown(() => runner.release());
    const stepper = new Stepper(runner);

    await t.test('every position within 5e-3 of golden, full vocabulary', async (t) => {
      for (const s of golden.sequences) {
        const seq = stepper.cache.newSequence();
        t.ok(stepper.cache.reserve(seq, s.input_ids.length));
        const out = await stepper.step([{ seq, tokenIds: s.input_ids, logits: 'all' }]);
        await stepper.free(seq);
        let maxDiff = 0;
        for (let i = 0; i < s.input_ids.length; i++) {
          const lp = logSoftmax(out.logits.subarray(i * out.vocabSize, (i + 1) * out.vocabSize));
          s.logprobs[i]!.forEach((g, v) => { maxDiff = Math.max(maxDiff, Math.abs(lp[v]! - g)); });
        }
        t.comment(`${s.input_ids.length} tokens: max |Δ logprob| = ${maxDiff.toExponential(2)}`);
        t.ok(maxDiff < 5e-3, `max |Δ| ${maxDiff} < 5e-3`);
      }
    });

    await t.test('prefill then token-by-token decode gives the golden greedy ids', async (t) => {
      const { prompt_ids: prompt, new_tokens: n, output_ids: expected } = golden.greedy;
      const seq = stepper.cache.newSequence();
      stepper.cache.reserve(seq, prompt.length);
      let out = await stepper.step([{ seq, tokenIds: prompt, logits: 'last' }]);
      const ids: number[] = [];
      for (let i = 0; i < n; i++) {
        const next = argmax(out.logits);
        ids.push(next);
        if (i === n - 1) break;
        t.ok(stepper.cache.reserve(seq, seq.numCached + 1));
        out = await stepper.step([{ seq, tokenIds: [next], logits: 'last' }]);
      }
      await stepper.free(seq);
      t.same(ids, expected);
    });

    await t.test('a chunked prefill matches the one-shot prefill', async (t) => {
      const ids = golden.sequences[1]!.input_ids;
      const seq = stepper.cache.newSequence();
      const rows: Float32Array[] = [];
      for (let start = 0; start < ids.length; start += 7) {
        const chunk = ids.slice(start, start + 7);
        stepper.cache.reserve(seq, start + chunk.length);
        const out = await stepper.step([{ seq, tokenIds: chunk, logits: 'all' }]);
        for (let i = 0; i < chunk.length; i++) rows.push(out.logits.slice(i * out.vocabSize, (i + 1) * out.vocabSize));
      }
      await stepper.free(seq);
      let maxDiff = 0;
      rows.forEach((row, i) => {
        const lp = logSoftmax(row);
        golden.sequences[1]!.logprobs[i]!.forEach((g, v) => { maxDiff = Math.max(maxDiff, Math.abs(lp[v]! - g)); });
      });
      t.ok(maxDiff < 5e-3, `max |Δ| ${maxDiff} < 5e-3`);
    });
  });
}
