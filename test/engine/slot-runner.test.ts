// The device-resident KV cache (SlotRunner: 'gqa' export, native runner, one cache slot per
// sequence updated in place) on the CPU provider: a decode batch that spans slots it does not
// run (a sequence still prefilling, a freed slot) gives each row exactly what it gets alone and
// leaves the others intact; a freed slot is reused; through the engine, concurrent generations
// equal their solo ids while the scheduler never runs more sequences than there are slots; fp16
// compute keeps an fp16 cache in place within the fp16 bound; --device cuda's export and errors.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { manifestAttention, manifestKvDtype, readManifest } from '../../src/engine/manifest.ts';
import { KvCache } from '../../src/engine/kv-cache.ts';
import type { SequenceCache } from '../../src/scheduler/kv-cache-manager.ts';
import { resolveModel } from '../../src/engine/resolve-model.ts';
import { loadRunner } from '../../src/engine/runner.ts';
import { SlotRunner } from '../../src/engine/slot-runner.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { ConfigError } from '../../src/errors.ts';
import { describeDiff, hfInitModel } from '../reference/logprob-diff.ts';
import { fp16ReferenceDiff, greedyIds } from './engine-run.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-slots-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ckpt = join(dir, 'ckpt');
const { config } = makeRandomCheckpoint({ shape: 'tiny', seed: 3, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '128', sliding_window: '8' } });
const model = join(dir, 'gqa');
exportCheckpoint({ checkpointDir: ckpt, outDir: model, attention: 'gqa' });
const slotsBudget = (n: number): number => n * config.maxPositions * KvCache.bytesPerToken(config);

const prompt = (salt: number, len: number): number[] => Array.from({ length: len }, (_, j) => 3 + ((salt * 131 + j * 17 + j * j) % (config.vocabSize - 3)));
const DECODE = [7, 19, 101, 5, 64, 33, 2, 250];

/** A sequence's logits: after its prompt, then after each DECODE token (rows copied out). */
async function solo(promptIds: readonly number[]): Promise<Float32Array[]> {
  const r = SlotRunner.load(model, { kvCacheBytes: slotsBudget(1) });
  const rs = new Stepper(r);
  try {
    const seq = rs.cache.newSequence();
    const rows: Float32Array[] = [];
    rs.cache.reserve(seq, promptIds.length);
    rows.push((await rs.step([{ seq, tokenIds: promptIds, logits: 'last' }])).logits.slice());
    for (const tok of DECODE) {
      rs.cache.reserve(seq, seq.numCached + 1);
      rows.push((await rs.step([{ seq, tokenIds: [tok], logits: 'last' }])).logits.slice());
    }
    return rows;
  } finally {
    await r.release();
  }
}

const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

t.test('decode batches over slots they do not all run give every row its solo logits', async (t) => {
  const prompts = [prompt(1, 10), prompt(2, 23), prompt(3, 13), prompt(4, 6), prompt(5, 9)];
  const want = await Promise.all(prompts.map(solo));
  const r = SlotRunner.load(model, { kvCacheBytes: slotsBudget(4), maxNumSeqs: 4 });
  t.teardown(() => r.release());
  t.equal(r.maxRunning, 4);
  const rs = new Stepper(r);
  const [a, b, c, d] = prompts.slice(0, 4).map(() => rs.cache.newSequence()) as [SequenceCache, SequenceCache, SequenceCache, SequenceCache];
  const got = new Map<SequenceCache, Float32Array[]>([[a, []], [b, []], [c, []], [d, []]]);
  const prefill = async (seq: SequenceCache, ids: readonly number[]): Promise<void> => {
    rs.cache.reserve(seq, seq.numCached + ids.length);
    const out = await rs.step([{ seq, tokenIds: ids, logits: 'last' }]);
    got.get(seq)!.push(out.logits.slice());
  };
  /** One decode step of `seqs` together, each with its own next DECODE token. */
  const decode = async (...seqs: SequenceCache[]): Promise<void> => {
    for (const s of seqs) rs.cache.reserve(s, s.numCached + 1);
    const out = await rs.step(seqs.map((seq) => ({ seq, tokenIds: [DECODE[got.get(seq)!.length - 1]!], logits: 'last' as const })));
    seqs.forEach((s, i) => got.get(s)!.push(out.logits.slice(i * out.vocabSize, (i + 1) * out.vocabSize)));
  };
  await prefill(a, prompts[0]!); // slot 0
  // b (slot 1) prefills its first chunk only: it is mid-prefill while a, c, d decode around it.
  rs.cache.reserve(b, 11);
  await rs.step([{ seq: b, tokenIds: prompts[1]!.slice(0, 11), logits: 'last', sample: false }]);
  await prefill(c, prompts[2]!); // slot 2
  await prefill(d, prompts[3]!); // slot 3
  await decode(d, a, c); // rows out of slot order, over slots 0..3 with b not in the step
  await decode(a, c, d);
  await prefill(b, prompts[1]!.slice(11));
  await decode(a, b, c, d);
  await rs.free(c); // slot 2 is free now, inside the range of a and d
  await decode(a, d);
  await decode(d, a);
  // e takes the freed slot 2 (lowest free) and decodes with a and d, then alone.
  const e = rs.cache.newSequence();
  got.set(e, []);
  await prefill(e, prompts[4]!);
  for (let k = 0; k < 3; k++) await decode(a, e, d);
  while (got.get(e)!.length < 1 + DECODE.length) await decode(e);
  while (got.get(b)!.length < 1 + DECODE.length) await decode(b);

  const check = (name: string, seq: SequenceCache, i: number, rows: number): void => {
    const diffs = got.get(seq)!.slice(0, rows).map((row, k) => maxDiff(row, want[i]![k]!));
    t.ok(Math.max(...diffs) < 1e-4, `${name}: ${rows} steps, max |Δ logit| vs alone ${Math.max(...diffs).toExponential(2)}`);
  };
  check('a (slot 0)', a, 0, 1 + DECODE.length);
  check('b (slot 1, mid-prefill during two decode steps)', b, 1, 1 + DECODE.length);
  check('c (slot 2, released)', c, 2, 1 + 3);
  check('d (slot 3, across a free slot)', d, 3, 1 + DECODE.length);
  check('e (reused slot 2)', e, 4, 1 + DECODE.length);
});

t.test('through the engine: concurrent generations equal their solo ids, running capped at the slots', async (t) => {
  const engine = await Engine.start({ modelDir: model, dataDir: join(dir, 'data'), kvCacheBytes: slotsBudget(2), maxNumSeqs: 4 });
  t.teardown(() => engine.close());
  t.equal(engine.maxRunning, 2, 'two slots: --max-num-seqs 4 capped at 2');
  t.equal(engine.prefixCaching, false, 'no prefix caching on one cache slot per sequence (asked for by default)');
  const reqs = [prompt(11, 12), prompt(12, 30), prompt(13, 5), prompt(14, 17)];
  const alone: number[][] = [];
  for (const p of reqs) alone.push((await greedyIds(engine, p, 20)).ids);
  let maxRunning = 0;
  const timer = setInterval(() => { maxRunning = Math.max(maxRunning, engine.stats?.running ?? 0); }, 1);
  const together = await Promise.all(reqs.map((p) => greedyIds(engine, p, 20)));
  clearInterval(timer);
  t.same(together.map((r) => r.ids), alone);
  t.ok(maxRunning <= 2, `at most 2 running (saw ${maxRunning})`);
  t.equal(engine.inFlight, 0);
});

t.test('fp16 compute through the native runner: the in-place fp16 cache within the fp16 bound of the reference', async (t) => {
  const { checkpointDir, sequences } = hfInitModel(join(dir, 'hf'), [40]);
  const out = join(dir, 'hf-gqa-fp16');
  exportCheckpoint({ checkpointDir, outDir: out, attention: 'gqa', dtype: 'fp16' });
  const r = SlotRunner.load(out, { kvCacheTokens: 64 });
  t.teardown(() => r.release());
  const c = await fp16ReferenceDiff(r, checkpointDir, sequences[0]!);
  t.comment(`fp16 compute, native runner, prefill 9 + one token per step: ${describeDiff(c)}`);
  t.ok(c.maxDiff < 1e-2, `max |Δ logprob| ${c.maxDiff.toExponential(2)} < 1e-2`);
});

t.test('--device cuda: checkpoints export as gqa fp16, paged exports are refused, a missing provider is named', async (t) => {
  const data = join(dir, 'data-cuda');
  const exported = await resolveModel(ckpt, data, undefined, 'cuda');
  const { manifest } = readManifest(exported);
  t.equal(manifestAttention(manifest), 'gqa');
  t.equal(manifestKvDtype(manifest), 'fp16');
  t.equal(await resolveModel(ckpt, data, undefined, 'cuda'), exported, 'reused');
  t.not(await resolveModel(ckpt, data), exported, 'the CPU export is another one');
  await t.rejects(resolveModel(ckpt, data, 'fp32', 'cuda'), ConfigError);
  await t.rejects(loadRunner(await resolveModel(ckpt, data), { device: 'cuda' }), { code: 'export_not_for_cuda', message: /--attention gqa --dtype fp16/ });
  const err = await loadRunner(exported, { device: 'cuda', kvCacheTokens: 64 }).then(async (r) => { await r.release(); return null; }, (e: unknown) => e);
  if (err === null) {
    t.pass('the CUDA provider loaded: this host has it');
    return;
  }
  t.match(err, { code: 'cuda_unavailable', message: /ONNXRUNTIME_NODE_INSTALL=cuda12/ });
});
