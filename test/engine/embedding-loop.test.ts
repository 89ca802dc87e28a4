// Embeddings in the step loop, against a fake runner that knows only the plan record: an
// embedding is a prefill-only sequence whose rows ask for hidden states (every token's for mean
// pooling, the last token's for last-token pooling), pooled across prefill chunks, ended with its
// normalised vector after its last chunk, its cache given back in that same step.
import t from 'tap';
import { driveLoop } from './drive-loop.ts';
import { EmbeddingPool } from '../../src/engine/embedding-pool.ts';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling.ts';
import type { Pooling, SequenceEvent, StepReport, SubmitMessage } from '../../src/engine/types.ts';
import { hiddenOffsets, type CacheLayout, type Runner, type StepOutput, type StepPlan } from '../../src/scheduler/runner-contract.ts';

const V = 16;
const H = 3;
/** The fake model's hidden state of token `id` at position `pos`. */
const state = (id: number, pos: number): number[] => [id + 1, pos + 1, (id * pos) % 5 - 2];

class HiddenRunner implements Runner {
  readonly layout: CacheLayout = { blockSize: 4, numBlocks: { global: 33, sliding: 33 }, ringSlots: 8 };
  readonly plans: StepPlan[] = [];
  readonly hiddenSize: number | undefined;
  /** `withHidden` false: a runner that cannot return hidden states. */
  constructor(withHidden = true) {
    this.hiddenSize = withHidden ? H : undefined;
  }

  async execute(plan: StepPlan): Promise<StepOutput> {
    this.plans.push(plan);
    const offsets = plan.rows.map((_, i) => i);
    offsets.push(plan.rows.length);
    const ho = hiddenOffsets(plan.rows);
    const data = new Float32Array(ho.at(-1)! * H);
    plan.rows.forEach((r, i) => {
      const n = r.tokenIds.length;
      for (let s = r.hidden === 'last' ? n - 1 : 0, at = ho[i]!; at < ho[i + 1]!; s++, at++) data.set(state(r.tokenIds[s]!, r.start + s), at * H);
    });
    return { logits: new Float32Array(plan.rows.length * V), offsets, vocabSize: V, ...(ho.at(-1)! > 0 ? { hidden: { data, offsets: ho, size: H } } : {}) };
  }

  async release(): Promise<void> {}
}

const embedding = (id: number, promptIds: number[], pooling: Pooling): SubmitMessage => ({
  type: 'submit', id, promptIds, maxTokens: 0, priority: 0, sampling: DEFAULT_SAMPLING, seed: 0, stopIds: [], minTokens: 0, logprobs: null, promptLogprobs: null, pooling,
});

/** Runs the loop (steps of at most 8 tokens) until every request ended; the reports. */
const drive = (runner: Runner, reqs: readonly SubmitMessage[]): Promise<StepReport[]> => driveLoop(runner, reqs, { maxNumSeqs: 4, maxNumBatchedTokens: 8 });

function expected(ids: readonly number[], pooling: Pooling): number[] {
  const rows = ids.map((id, pos) => state(id, pos));
  const sum = [0, 0, 0];
  for (const r of pooling === 'mean' ? rows : rows.slice(-1)) r.forEach((x, j) => { sum[j]! += x; });
  return sum.map((x) => x / Math.hypot(...sum));
}

const events = (reports: readonly StepReport[]): SequenceEvent[] => reports.flatMap((r) => r.events);

t.test('mean pooling across prefill chunks: every row asks for all its hidden states', async (t) => {
  const runner = new HiddenRunner();
  const ids = Array.from({ length: 19 }, (_, i) => (i * 5) % V);
  const reports = await drive(runner, [embedding(1, ids, 'mean')]);
  const rows = runner.plans.flatMap((p) => p.rows);
  t.same(rows.map((r) => r.tokenIds.length), [8, 8, 3], 'three prefill chunks');
  t.ok(rows.every((r) => r.hidden === 'all'));
  const ev = events(reports).filter((e) => e.type !== 'scheduled');
  t.equal(ev.length, 1, 'one event: the embedding');
  const e = ev[0]!;
  if (e.type !== 'embedding') throw new Error(e.type);
  t.equal(e.promptTokens, 19);
  t.ok(Array.from(e.embedding).every((x, j) => Math.abs(x - expected(ids, 'mean')[j]!) < 1e-6), 'the normalised mean of every token');
  const ended = reports.find((r) => r.events.some((x) => x.type === 'embedding'))!;
  t.ok(ended.computed, 'it ends in the step of its last chunk');
});

t.test('last-token pooling: only the last chunk asks, for its last token', async (t) => {
  const runner = new HiddenRunner();
  const ids = Array.from({ length: 13 }, (_, i) => (i * 3 + 1) % V);
  const reports = await drive(runner, [embedding(1, ids, 'last')]);
  t.same(runner.plans.flatMap((p) => p.rows).map((r) => r.hidden), [undefined, 'last']);
  const e = events(reports).find((x) => x.type === 'embedding')!;
  if (e.type !== 'embedding') throw new Error(e.type);
  t.ok(Array.from(e.embedding).every((x, j) => Math.abs(x - expected(ids, 'last')[j]!) < 1e-6));
});

t.test('embeddings and a generation share steps; the embedding is freed at once', async (t) => {
  const runner = new HiddenRunner();
  const gen: SubmitMessage = { ...embedding(1, [1, 2, 3], 'mean'), maxTokens: 6, sampling: { ...DEFAULT_SAMPLING, temperature: 0 } };
  delete (gen as { pooling?: Pooling }).pooling;
  const reports = await drive(runner, [gen, embedding(2, [4, 5], 'mean'), embedding(3, [6], 'last')]);
  const first = runner.plans[0]!;
  t.same(first.rows.map((r) => [r.seqId, r.hidden]), [[1, undefined], [2, 'all'], [3, 'last']], 'one step runs all three');
  t.same(runner.plans[1]!.finishedSeqIds, [2, 3], 'the next plan tells the runner both embeddings ended');
  t.equal(events(reports).filter((e) => e.type === 'token').length, 6, 'the generation goes on');
  const after = reports.findIndex((r) => r.events.some((e) => e.type === 'embedding'));
  t.equal(reports.slice(after + 1).find((r) => r.computed)!.stats.cache.global.usedBlocks, 1, 'the next step holds the generation\'s one block only');
});

t.test('a runner without hidden states refuses an embedding', async (t) => {
  const reports = await drive(new HiddenRunner(false), [embedding(1, [1, 2], 'mean')]);
  const e = events(reports).find((x) => x.id === 1)!;
  t.equal(e.type, 'error', JSON.stringify(e));
});

t.test('the pool starts again when a recomputation starts at position 0 (after a preemption)', async (t) => {
  const pool = new EmbeddingPool('mean', 2);
  pool.add(0, Float32Array.of(100, 100, 100, 100), 0, 2);
  pool.add(0, Float32Array.of(3, 0), 0, 1);
  pool.add(1, Float32Array.of(9, 9, 0, 4), 1, 1);
  const v = pool.result();
  t.ok(Math.abs(v[0]! - 0.6) < 1e-6 && Math.abs(v[1]! - 0.8) < 1e-6, `[3, 0] + [0, 4] normalised: ${Array.from(v).join(', ')}`);
});
