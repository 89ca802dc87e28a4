// The exported graph against the float64 reference on shapes the golden fixtures do not
// cover, and the behaviours the issue pins: window boundary, soft-caps, GQA / MQA,
// query_pre_attn_scalar != head_dim, BF16 weights, batched rows at different lengths.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { ModelRunner } from '../../src/engine/model-runner.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { argmax, logSoftmax } from '../../src/engine/logprobs.ts';
import { Gemma2Reference } from '../reference/gemma2-reference.ts';

const root = mkdtempSync(join(tmpdir(), 'gs-variants-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

async function model(name: string, set: Record<string, string>, dtype: 'f32' | 'bf16' = 'f32'): Promise<{ runner: ModelRunner; ckpt: string }> {
  const ckpt = join(root, name);
  makeRandomCheckpoint({ shape: 'tiny', seed: 7, dtype, out: ckpt, set });
  exportCheckpoint({ checkpointDir: ckpt, outDir: join(root, `${name}-onnx`) });
  const runner = await ModelRunner.load(join(root, `${name}-onnx`), { blockSize: 4, kvCacheBytes: 2 * 2 ** 20 });
  t.teardown(() => runner.release());
  return { runner, ckpt };
}

/** Logprobs of every position through a prefill of `split` tokens then one-token decode steps. */
async function runLogprobs(runner: ModelRunner, ids: number[], split: number): Promise<Float64Array[]> {
const stepper = new Stepper(runner);
  const seq = stepper.cache.newSequence();
  const out: Float64Array[] = [];
  for (let start = 0; start < ids.length; ) {
    const chunk = ids.slice(start, start === 0 ? split : start + 1);
    stepper.cache.reserve(seq, start + chunk.length);
    const r = await stepper.step([{ seq, tokenIds: chunk, logits: 'all' }]);
    for (let i = 0; i < chunk.length; i++) out.push(logSoftmax(r.logits.subarray(i * r.vocabSize, (i + 1) * r.vocabSize)));
    start += chunk.length;
  }
  await stepper.free(seq);
  return out;
}

const ids = Array.from({ length: 24 }, (_, i) => [2, 17, 400, 33, 250, 99, 301, 5][i % 8]! + i);

const variants: [string, Record<string, string>, 'f32' | 'bf16'][] = [
  ['gqa', {}, 'f32'],
  ['mqa', { num_key_value_heads: '1' }, 'f32'],
  ['scalar-ne-head-dim', { query_pre_attn_scalar: '24', head_dim: '32' }, 'f32'],
  ['tight-softcaps', { attn_logit_softcapping: '0.5', final_logit_softcapping: '2' }, 'f32'],
  ['no-softcaps', { attn_logit_softcapping: 'null', final_logit_softcapping: 'null' }, 'f32'],
  ['bf16', {}, 'bf16'],
];
for (const [name, set, dtype] of variants) {
  t.test(`${name}: prefill + decode within 5e-3 of the float64 reference`, async (t) => {
    const { runner, ckpt } = await model(name, set, dtype);
    const want = Gemma2Reference.fromCheckpoint(ckpt).logprobs(ids);
    const got = await runLogprobs(runner, ids, 10);
    let maxDiff = 0;
    got.forEach((row, i) => row.forEach((v, j) => { maxDiff = Math.max(maxDiff, Math.abs(v - want[i]![j]!)); }));
    t.comment(`max |Δ logprob| = ${maxDiff.toExponential(2)}`);
    t.ok(maxDiff < 5e-3, `max |Δ| ${maxDiff} < 5e-3`);
  });
}

t.test('soft-caps change the output (the reference comparison above can fail)', async (t) => {
  const a = Gemma2Reference.fromCheckpoint(join(root, 'gqa')).logprobs(ids);
  const b = Gemma2Reference.fromCheckpoint(join(root, 'tight-softcaps')).logprobs(ids);
  t.ok(Math.abs(a[5]![0]! - b[5]![0]!) > 1e-2);
});

t.test('window boundary: a key at distance exactly W is invisible, at W-1 visible', async (t) => {
  const W = 4;
  const { runner } = await model('one-sliding-layer', { num_hidden_layers: '1', layer_types: '["sliding_attention"]', sliding_window: String(W) });
  const base = [10, 20, 30, 40, 50, 60];
  const changed = [300, ...base.slice(1)];
  const a = await runLogprobs(runner, base, 1);
  const b = await runLogprobs(runner, changed, 1);
  const diff = (i: number): number => Math.max(...a[i]!.map((v, j) => Math.abs(v - b[i]![j]!)));
  t.ok(diff(W - 1) > 1e-4, `position ${W - 1} (key 0 at distance W-1) sees the change: ${diff(W - 1)}`);
  t.equal(diff(W), 0, `position ${W} (key 0 at distance W) does not`);
  t.equal(diff(W + 1), 0);
});

t.test('three sequences of different lengths decoded together = each alone', async (t) => {
  const { runner } = await model('gqa-batch', {});
  const stepper = new Stepper(runner);
  const prompts = [[2, 50, 60], [2, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], Array.from({ length: 20 }, (_, i) => 100 + i)];
  const steps = 12;
  const alone = async (p: number[]): Promise<number[]> => {
    const seq = stepper.cache.newSequence();
    stepper.cache.reserve(seq, p.length);
    let r = await stepper.step([{ seq, tokenIds: p, logits: 'last' }]);
    const out: number[] = [];
    for (let i = 0; i < steps; i++) {
      out.push(argmax(r.logits));
      stepper.cache.reserve(seq, seq.numCached + 1);
      r = await stepper.step([{ seq, tokenIds: [out[i]!], logits: 'last' }]);
    }
    await stepper.free(seq);
    return out;
  };
  const expected = [];
  for (const p of prompts) expected.push(await alone(p));

  const seqs = prompts.map(() => stepper.cache.newSequence());
  const outs: number[][] = prompts.map(() => []);
  // prefill all three in one padded batch, then decode them together
  seqs.forEach((s, i) => stepper.cache.reserve(s, prompts[i]!.length));
  let r = await stepper.step(prompts.map((p, i) => ({ seq: seqs[i]!, tokenIds: p, logits: 'last' as const })));
  for (let step = 0; step < steps; step++) {
    seqs.forEach((_, i) => outs[i]!.push(argmax(r.logits.subarray(i * r.vocabSize, (i + 1) * r.vocabSize))));
    seqs.forEach((s) => stepper.cache.reserve(s, s.numCached + 1));
    r = await stepper.step(seqs.map((s, i) => ({ seq: s, tokenIds: [outs[i]![step]!], logits: 'last' as const })));
  }
  for (const s of seqs) await stepper.free(s);
  t.same(outs, expected);
  t.equal(stepper.cache.numFreeBlocks('global'), stepper.cache.numBlocks.global - 1, 'all blocks returned');
});
