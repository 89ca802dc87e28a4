// fp16 KV cache (export --kv-dtype fp16): the graph takes float16 pools and casts the gathered
// blocks to float32. On the golden fixtures, decoding token by token (so every step reads the
// cache): the fp16-cache export computes exactly what the fp32-cache export computes when its
// pool rows are rounded to fp16, and its fidelity against the fp32 cache is bounded and
// reported. The pools take half the bytes per block; an fp16 export generates through the
// Engine; a checkpoint served at both kv dtypes gets two data-dir exports; an export whose
// manifest says another kv dtype than asked is refused.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { readManifest, type Manifest } from '../../src/engine/manifest.ts';
import { ModelRunner } from '../../src/engine/model-runner.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { KvCache } from '../../src/engine/kv-cache.ts';
import { logSoftmax } from '../../src/engine/logprobs.ts';
import { Engine } from '../../src/engine/engine.ts';
import { resolveModel } from '../../src/engine/resolve-model.ts';
import { f16ToF32, f32ToF16 } from '../../src/f16.ts';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { ConfigError } from '../../src/errors.ts';
import { greedyIds } from './engine-run.ts';
import { compareLogprobs, describeDiff, hfInitModel } from '../reference/logprob-diff.ts';
import type { KvDtype } from '../../src/engine/graph-io.ts';

const fixturesDir = join(import.meta.dirname, '..', 'fixtures');
const root = mkdtempSync(join(tmpdir(), 'gs-kvfp16-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const PREFILL = 4;

/**
 * Log-probabilities at every position of `ids`: the first PREFILL tokens in one step, then one
 * token per step, so positions PREFILL.. attend over cached K/V. `roundPools` rounds an fp32
 * cache's rows to fp16 after every step (what an fp16 cache stores).
 */
async function decodeLogprobs(exportDir: string, ids: readonly number[], roundPools = false): Promise<Float64Array[]> {
  // Both caches run the same attention (the fused op where this runner fuses; it widens float16
  // pool entries exactly), so rounded fp32 pools and fp16 pools give the same numbers.
  const runner = await ModelRunner.load(exportDir, { blockSize: 4, kvCacheTokens: Math.max(64, ids.length) });
  const stepper = new Stepper(runner);
  try {
    const seq = stepper.cache.newSequence();
    stepper.cache.reserve(seq, ids.length);
    const out: Float64Array[] = [];
    for (let at = 0; at < ids.length;) {
      const n = at === 0 ? Math.min(PREFILL, ids.length) : 1;
      const r = await stepper.step([{ seq, tokenIds: ids.slice(at, at + n), logits: 'all' }]);
      for (let i = 0; i < n; i++) out.push(logSoftmax(r.logits.subarray(i * r.vocabSize, (i + 1) * r.vocabSize)));
      if (roundPools) {
        for (const pair of runner.kv.pools) for (const p of pair) for (let i = 0; i < p.length; i++) p[i] = f16ToF32(f32ToF16(p[i]!));
      }
      at += n;
    }
    await stepper.free(seq);
    return out;
  } finally {
    await runner.release();
  }
}

// The golden fixtures' large random weights make them chaotic (rounding tiny-gemma2's matrices to
// fp16 moves log-probabilities by up to 0.86: bench/fixture-fp16-sensitivity.ts), so there the test pins
// exactness (the fp16-cache graph computes what the fp32-cache graph computes on K/V rounded
// to fp16: measured bit-identical) and bounds the fidelity loosely. Measured (CPU,
// onnxruntime-node 1.30): tiny-gemma2 max |Δ logprob| 0.091 (mean 0.0059), top-1 45/45;
// tiny-gemma2-bf16-mqa 0.324 (mean 0.0078), top-1 44/45.
const GOLDEN_MAX_BOUND = 0.5;
const GOLDEN_MEAN_BOUND = 0.02;
const EXACT_BOUND = 1e-5;

for (const name of ['tiny-gemma2', 'tiny-gemma2-bf16-mqa']) {
  t.test(name, async (t) => {
    const ckpt = join(fixturesDir, name);
    const golden = JSON.parse(readFileSync(join(ckpt, 'golden.json'), 'utf8')) as { sequences: { input_ids: number[] }[] };
    const sequences = golden.sequences.map((s) => s.input_ids);
    const dirs: Record<KvDtype, string> = { fp32: join(root, name, 'fp32'), fp16: join(root, name, 'fp16') };
    exportCheckpoint({ checkpointDir: ckpt, outDir: dirs.fp32 });
    exportCheckpoint({ checkpointDir: ckpt, outDir: dirs.fp16, kvDtype: 'fp16' });
    t.equal((JSON.parse(readFileSync(join(dirs.fp16, 'manifest.json'), 'utf8')) as Manifest).kvDtype, 'fp16', 'the manifest records kvDtype');
    t.equal(readManifest(dirs.fp32).manifest.kvDtype, 'fp32');

    const base: Float64Array[][] = [], half: Float64Array[][] = [], rounded: Float64Array[][] = [];
    for (const ids of sequences) {
      base.push(await decodeLogprobs(dirs.fp32, ids));
      half.push(await decodeLogprobs(dirs.fp16, ids));
      rounded.push(await decodeLogprobs(dirs.fp32, ids, true));
    }
    const exact = compareLogprobs(half, rounded);
    t.ok(exact.maxDiff < EXACT_BOUND, `fp16 cache = fp32 cache rounded to fp16: max |Δ logprob| ${exact.maxDiff.toExponential(2)} < ${EXACT_BOUND}`);
    const c = compareLogprobs(half, base);
    t.comment(`${name} fp16 vs fp32 KV cache, decoded token by token: ${describeDiff(c)}`);
    t.ok(c.maxDiff < GOLDEN_MAX_BOUND, `max |Δ logprob| ${c.maxDiff.toFixed(4)} < ${GOLDEN_MAX_BOUND}`);
    t.ok(c.meanDiff < GOLDEN_MEAN_BOUND, `mean |Δ logprob| ${c.meanDiff.toFixed(5)} < ${GOLDEN_MEAN_BOUND}`);
    t.ok(c.agree / c.positions >= 0.95, `top-1 agreement ${c.agree}/${c.positions} >= 95%`);
    t.ok(c.maxDiff > 0, 'the cache is actually read in fp16 (the logprobs differ)');
  });
}

// On a random model with Hugging Face's initialization (matrices N(0, 0.02), as make-random
// writes them; the shape quantized.test.ts uses): measured max |Δ logprob| 1.2e-3 (mean 1.6e-4),
// top-1 96/96.
const HF_MAX_BOUND = 0.01;

t.test('fidelity on an HF-initialized random model, decoded token by token', async (t) => {
  const { checkpointDir: ckpt, sequences } = hfInitModel(join(root, 'hf-init'), [48, 48]);
  exportCheckpoint({ checkpointDir: ckpt, outDir: join(root, 'hf-init-fp32') });
  exportCheckpoint({ checkpointDir: ckpt, outDir: join(root, 'hf-init-fp16'), kvDtype: 'fp16' });
  const base: Float64Array[][] = [], half: Float64Array[][] = [];
  for (const ids of sequences) {
    base.push(await decodeLogprobs(join(root, 'hf-init-fp32'), ids));
    half.push(await decodeLogprobs(join(root, 'hf-init-fp16'), ids));
  }
  const c = compareLogprobs(half, base);
  t.comment(`HF-init H=256 fp16 vs fp32 KV cache: ${describeDiff(c)}`);
  t.ok(c.maxDiff < HF_MAX_BOUND, `max |Δ logprob| ${c.maxDiff.toExponential(2)} < ${HF_MAX_BOUND}`);
  t.ok(c.agree / c.positions >= 0.95, `top-1 agreement ${c.agree}/${c.positions} >= 95%`);
});

t.test('an fp16 pool takes half the bytes per block; the same budget holds twice the blocks', async (t) => {
  const dir = join(root, 'tiny-gemma2', 'fp16');
  const runner = await ModelRunner.load(dir, { blockSize: 4, kvCacheTokens: 16 });
  try {
    const [k] = runner.kv.pools[0]!;
    t.ok(k instanceof Uint16Array, 'Uint16Array pools');
    t.equal(runner.kv.dtype, 'fp16');
  } finally {
    await runner.release();
  }
  const { config } = readManifest(dir);
  t.equal(KvCache.bytesPerBlockPerLayer(config, 16, 'fp16') * 2, KvCache.bytesPerBlockPerLayer(config, 16, 'fp32'));
  const budget = 64 * config.numLayers * KvCache.bytesPerBlockPerLayer(config, 16, 'fp32');
  const c32 = new KvCache(config, KvCache.layoutFromBudget(config, 16, budget, undefined, 'fp32'), 'fp32');
  const c16 = new KvCache(config, KvCache.layoutFromBudget(config, 16, budget, undefined, 'fp16'), 'fp16');
  t.equal(c32.layout.numBlocks.global, 64);
  t.equal(c16.layout.numBlocks.global, 128, 'twice the blocks');
  t.equal(c16.pools[0]![0].byteLength, c32.pools[0]![0].byteLength, 'in the same bytes');
});

t.test('an fp16-cache export generates through the Engine', async (t) => {
  const ckpt = join(root, 'tiny-ckpt');
  makeRandomCheckpoint({ shape: 'tiny', seed: 5, dtype: 'bf16', out: ckpt, set: { max_position_embeddings: '128' } });
  const dir = join(root, 'tiny-fp16');
  exportCheckpoint({ checkpointDir: ckpt, outDir: dir, kvDtype: 'fp16' });
  const engine = await Engine.start({ modelDir: dir, dataDir: join(root, 'data'), kvCacheBytes: 2 ** 20, kvDtype: 'fp16' });
  try {
    const { ids, reason } = await greedyIds(engine, [2, 40, 41, 42, 43], 12);
    t.equal(ids.length, 12);
    t.equal(reason, 'length');
    t.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < engine.vocabSize), 'ids in the vocabulary');
  } finally {
    await engine.close();
  }
});

t.test('serve --kv-dtype: checkpoint exports per kv dtype; a mismatched export is refused', async (t) => {
  const ckpt = join(root, 'tiny-ckpt');
  const data = join(root, 'data-resolve');
  const e32 = await resolveModel(ckpt, data);
  const e16 = await resolveModel(ckpt, data, 'fp16');
  t.not(e32, e16, 'fp32 and fp16 exports of one checkpoint coexist');
  t.equal(readManifest(e32).manifest.kvDtype, 'fp32');
  t.equal(readManifest(e16).manifest.kvDtype, 'fp16');
  t.equal(await resolveModel(ckpt, data, 'fp16'), e16, 'reused');
  t.equal(await resolveModel(e16, data, 'fp16'), e16, 'an export at the asked dtype is used as it is');
  t.equal(await resolveModel(e16, data), e16, 'no dtype asked: the export is used as it is');
  await t.rejects(resolveModel(e32, data, 'fp16'), ConfigError, 'an fp32-cache export served with --kv-dtype fp16');
  await t.rejects(resolveModel(e32, data, 'fp16'), { message: /KV cache is fp32.*--kv-dtype fp16.*export --kv-dtype fp16/ });
  await t.rejects(Engine.start({ modelDir: e16, dataDir: data, kvDtype: 'fp32' }), ConfigError);
});

t.test('serve: --kv-dtype / GEMMA_SERVE_KV_DTYPE validated', async (t) => {
  const { resolveKvDtype } = await import('../../src/cli/serve.ts');
  t.equal(resolveKvDtype('fp16'), 'fp16');
  t.equal(resolveKvDtype('fp32'), 'fp32');
  t.equal(resolveKvDtype(undefined), undefined);
  t.throws(() => resolveKvDtype('bf16'), ConfigError);
});
