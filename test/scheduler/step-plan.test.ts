// The scheduler's side of the runner contract, with hand-built runner results and no engine:
// what a plan tells a runner (tokens, positions, blocks, logits wanted, ends), and that the
// scheduler alone moves a sequence's progress, from the results handed to Scheduler.update.
import t from 'tap';
import { KvCacheManager } from '../../src/scheduler/kv-cache-manager.ts';
import { Scheduler } from '../../src/scheduler/scheduler.ts';

const layout = { blockSize: 4, numBlocks: { global: 9, sliding: 9 }, ringSlots: 8 };
const make = (maxNumBatchedTokens = 64): Scheduler => new Scheduler(new KvCacheManager(layout), { maxNumSeqs: 4, maxNumBatchedTokens });

t.test('a plan row carries the tokens at its positions and the blocks reserved for them; progress moves only in update', async (t) => {
  const s = make(6);
  const seq = s.add({ id: 7, promptIds: [11, 12, 13, 14, 15, 16, 17, 18, 19, 20], maxTokens: 4, priority: 0 });
  const first = s.schedule();
  const row = first.plan.rows[0]!;
  t.same({ seqId: row.seqId, start: row.start, tokens: [...row.tokenIds], logits: row.logits, sample: row.sample }, { seqId: 7, start: 0, tokens: [11, 12, 13, 14, 15, 16], logits: 'last', sample: false }, 'a first chunk of the prompt');
  t.same(row.blocks.global, seq.cache.blocks.global, 'its global blocks');
  t.equal(row.blocks.global.length, 2, 'room for 6 positions in blocks of 4');
  t.equal(seq.cache.numCached, 0, 'planning moves nothing');
  t.same(s.schedule().plan.rows[0]?.start, 0, 'a step not taken back is planned again from the same place');

  const s2 = make(6);
  const seq2 = s2.add({ id: 7, promptIds: [11, 12, 13, 14, 15, 16, 17, 18, 19, 20], maxTokens: 4, priority: 0 });
  s2.update(s2.schedule(), new Map());
  t.equal(seq2.cache.numCached, 6, 'update moves progress past the row');
  const second = s2.schedule();
  const r2 = second.plan.rows[0]!;
  t.same({ start: r2.start, tokens: [...r2.tokenIds], sample: r2.sample }, { start: 6, tokens: [17, 18, 19, 20], sample: true }, 'the rest of the prompt, sampled');
  s2.update(second, new Map([[7, 99]]));
  t.same(seq2.outputIds, [99], 'the sampled token is appended');
  const third = s2.schedule();
  t.same([...third.plan.rows[0]!.tokenIds], [99], 'and decoded next');
  t.equal(third.plan.rows[0]!.start, 10);
});

t.test('allLogits asks a sequence\'s rows for every position\'s logits', async (t) => {
  const s = make();
  s.add({ id: 1, promptIds: [1, 2, 3], maxTokens: 2, priority: 0 });
  s.add({ id: 2, promptIds: [4, 5, 6], maxTokens: 2, priority: 0 });
  const plan = s.schedule((seq) => seq.spec.id === 2).plan;
  t.same(plan.rows.map((r) => [r.seqId, r.logits]), [[1, 'last'], [2, 'all']]);
});

t.test('ends reach the runner in the next plan, and are sent again until a plan carrying them is taken back', async (t) => {
  const s = make();
  s.add({ id: 1, promptIds: [1, 2, 3], maxTokens: 5, priority: 0 });
  s.add({ id: 2, promptIds: [4, 5, 6], maxTokens: 5, priority: 0 });
  s.update(s.schedule(), new Map([[1, 7], [2, 8]]));
  s.finish(2);
  const next = s.schedule();
  t.same(next.plan.finishedSeqIds, [2]);
  t.same(next.plan.rows.map((r) => r.seqId), [1]);
  // The runner failed that step (no update): the end is still owed.
  t.same(s.schedule().plan.finishedSeqIds, [2], 'still owed');
  const again = s.schedule();
  s.update(again, new Map([[1, 9]]));
  t.same(s.schedule().plan.finishedSeqIds, [], 'delivered once taken back');
});

t.test('a preemption is in the plan of the step that made it', async (t) => {
  // 8 global blocks of 4 = 32 positions; two sequences that grow to 20 each cannot both stay.
  const s = make();
  s.add({ id: 1, promptIds: Array.from({ length: 12 }, (_, i) => i + 1), maxTokens: 8, priority: 0 });
  s.add({ id: 2, promptIds: Array.from({ length: 12 }, (_, i) => i + 21), maxTokens: 8, priority: 0 });
  for (let i = 0; i < 20; i++) {
    const step = s.schedule();
    if (step.preempted.length > 0) {
      t.same(step.plan.preemptedSeqIds, step.preempted.map((q) => q.spec.id));
      t.notOk(step.plan.rows.some((r) => r.seqId === step.preempted[0]!.spec.id), 'no row for it');
      return;
    }
    s.update(step, new Map(step.rows.filter((r) => r.sample).map((r) => [r.seq.spec.id, 50])));
  }
  t.fail('no preemption');
});
