// The continuous-batching scheduler on its own: a real KvCacheManager (block accounting) and a
// simulated engine that runs each plan (a hand-built runner output: every row computed, a
// scripted token sampled where a row samples, handed back through Scheduler.update), and ends
// sequences at their max tokens.
// Every step is checked against the plan's contract (room reserved, budget, rows, sampling).
import t, { type Test } from 'tap';
import { parseGemma2Config, SHAPES } from '../../src/checkpoint/config.ts';
import { KvCache } from '../../src/engine/kv-cache.ts';
import { KvCacheManager } from '../../src/scheduler/kv-cache-manager.ts';
import { Scheduler, type SchedulerStep } from '../../src/scheduler/scheduler.ts';
import type { Sequence, SequenceSpec } from '../../src/scheduler/types.ts';

/** The token a sequence samples at output index i: known, so a lost or repeated token shows. */
const tokenFor = (id: number, i: number): number => id * 1000 + i;

/** A seeded linear congruential generator of floats in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => (a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

interface SimOptions {
  readonly blockSize?: number;
  readonly global: number;
  readonly sliding?: number;
  readonly slidingWindow?: number;
  readonly maxNumSeqs: number;
  readonly maxNumBatchedTokens: number;
}

class Sim {
  readonly cache: KvCacheManager;
  readonly sched: Scheduler;
  readonly steps: SchedulerStep[] = [];
  /** Outputs of sequences that ended at max tokens, by id. */
  readonly done = new Map<number, number[]>();
  readonly unservable: number[] = [];
  /** Ids in the order they were first computed (admitted). */
  readonly admissionOrder: number[] = [];

  constructor(private readonly t: Test, readonly opts: SimOptions) {
    const config = parseGemma2Config({ ...SHAPES.tiny, sliding_window: opts.slidingWindow ?? 4096, max_position_embeddings: 8192 }, 'test');
    this.cache = new KvCacheManager(KvCache.layout(config, opts.blockSize ?? 8, { global: opts.global, sliding: opts.sliding ?? opts.global }));
    this.sched = new Scheduler(this.cache, { maxNumSeqs: opts.maxNumSeqs, maxNumBatchedTokens: opts.maxNumBatchedTokens });
  }

  add(id: number, promptLen: number, maxTokens: number, priority = 0): Sequence {
    const spec: SequenceSpec = { id, promptIds: Array.from({ length: promptLen }, (_, i) => (id + i) % 500), maxTokens, priority };
    return this.sched.add(spec);
  }

  /** One engine step; returns the plan after checking its contract. */
  step(): SchedulerStep {
    const t = this.t;
    const plan = this.sched.schedule();
    this.steps.push(plan);
    const o = this.opts;
    if (plan.numTokens > o.maxNumBatchedTokens) t.fail(`step ${this.steps.length}: ${plan.numTokens} tokens > budget ${o.maxNumBatchedTokens}`);
    if (plan.rows.length > o.maxNumSeqs) t.fail(`step ${this.steps.length}: ${plan.rows.length} rows > maxNumSeqs ${o.maxNumSeqs}`);
    if (plan.numTokens !== plan.rows.reduce((n, r) => n + r.count, 0)) t.fail('numTokens is not the sum of the rows');
    if (new Set(plan.rows.map((r) => r.seq)).size !== plan.rows.length) t.fail('a sequence has two rows in one step');
    for (const r of plan.rows) {
      const s = r.seq;
      if (s.status !== 'running') t.fail(`row of sequence ${s.spec.id} that is ${s.status}`);
      if (r.count < 1) t.fail('empty row');
      if (r.start !== s.cache.numCached) t.fail(`row of ${s.spec.id} starts at ${r.start}, cache holds ${s.cache.numCached}`);
      if (r.start + r.count > Scheduler.numTokens(s)) t.fail(`row of ${s.spec.id} runs past its known tokens`);
      if (r.sample !== (r.start + r.count === Scheduler.numTokens(s))) t.fail(`row of ${s.spec.id}: sample is ${r.sample} at ${r.start}+${r.count} of ${Scheduler.numTokens(s)}`);
      for (const k of ['global', 'sliding'] as const) {
        if (s.cache.blocks[k].length < this.cache.blocksNeeded(k, r.start + r.count)) t.fail(`row of ${s.spec.id}: ${k} room for ${r.start + r.count} not reserved`);
      }
      if (r.start === 0 && !this.admissionOrder.includes(s.spec.id)) this.admissionOrder.push(s.spec.id);
    }
    for (const p of plan.preempted) {
      if (p.status !== 'waiting' || p.cache.numCached !== 0 || p.cache.blocks.global.length + p.cache.blocks.sliding.length !== 0) t.fail(`preempted ${p.spec.id} still holds cache or runs`);
    }
    for (const s of plan.unservable) {
      this.unservable.push(s.spec.id);
      this.sched.finish(s.spec.id); // the engine fails it
    }
    // The runner computes every row, the engine samples, the scheduler takes the samples.
    const sampled = new Map<number, number>();
    for (const r of plan.rows) if (r.sample) sampled.set(r.seq.spec.id, tokenFor(r.seq.spec.id, r.seq.outputIds.length));
    this.sched.update(plan, sampled);
    for (const r of plan.rows) {
      if (r.seq.cache.numCached !== r.start + r.count) t.fail(`update left ${r.seq.spec.id} at ${r.seq.cache.numCached}, not ${r.start + r.count}`);
      if (!r.sample) continue;
      if (r.seq.outputIds.length >= r.seq.spec.maxTokens) {
        this.done.set(r.seq.spec.id, [...r.seq.outputIds]);
        this.sched.finish(r.seq.spec.id);
      }
    }
    this.checkStats();
    return plan;
  }

  /** Steps until nothing is left (bounded). */
  drain(limit = 10_000): void {
    for (let i = 0; this.sched.hasWork; i++) {
      if (i >= limit) { this.t.fail('the scheduler did not drain'); return; }
      this.step();
    }
  }

  /** Stats agree with the blocks the live sequences hold. */
  checkStats(): void {
    const st = this.sched.stats();
    for (const k of ['global', 'sliding'] as const) {
      const u = st.cache[k];
      if (u.totalBlocks !== this.cache.numBlocks[k] - 1) this.t.fail(`${k} totalBlocks ${u.totalBlocks}`);
      if (u.usedBlocks !== u.totalBlocks - this.cache.numFreeBlocks(k)) this.t.fail(`${k} usedBlocks ${u.usedBlocks} disagrees with the free list`);
      if (u.usedTokens !== u.usedBlocks * this.cache.blockSize) this.t.fail(`${k} usedTokens ${u.usedTokens}`);
    }
    if (st.running > this.opts.maxNumSeqs) this.t.fail(`${st.running} running > maxNumSeqs`);
  }

  expectedOutput(id: number, maxTokens: number): number[] {
    return Array.from({ length: maxTokens }, (_, i) => tokenFor(id, i));
  }
}

const rowOf = (plan: SchedulerStep, id: number) => plan.rows.find((r) => r.seq.spec.id === id);

t.test('a request arriving while others decode starts its prefill in the very next step', async (t) => {
  const sim = new Sim(t, { global: 200, maxNumSeqs: 8, maxNumBatchedTokens: 64 });
  sim.add(1, 10, 30);
  sim.add(2, 12, 30);
  const first = sim.step();
  t.same(first.rows.map((r) => [r.seq.spec.id, r.start, r.count, r.sample]), [[1, 0, 10, true], [2, 0, 12, true]], 'both prefill together');
  for (let i = 0; i < 3; i++) sim.step();
  sim.add(3, 20, 5);
  const plan = sim.step();
  t.same(rowOf(plan, 3) && { start: rowOf(plan, 3)!.start, count: rowOf(plan, 3)!.count, sample: rowOf(plan, 3)!.sample }, { start: 0, count: 20, sample: true }, 'the newcomer prefills at once');
  for (const id of [1, 2]) t.equal(rowOf(plan, id)?.count, 1, `sequence ${id} decodes in the same step`);
  t.equal(plan.rows[plan.rows.length - 1]!.seq.spec.id, 3, 'decodes are planned before the prefill');
  t.equal(sim.sched.stats().lastStep.batchSize, 3);
  t.equal(sim.sched.stats().lastStep.numTokens, 22);
  sim.drain();
  for (const [id, n] of [[1, 30], [2, 30], [3, 5]] as const) t.same(sim.done.get(id), sim.expectedOutput(id, n));
});

t.test('a long prompt is chunked while running sequences decode in every one of its steps', async (t) => {
  const budget = 64;
  const sim = new Sim(t, { global: 200, maxNumSeqs: 4, maxNumBatchedTokens: budget });
  sim.add(1, 5, 40);
  sim.add(2, 7, 40);
  sim.step();
  sim.step();
  const long = sim.add(3, 300, 3);
  let covered = 0;
  let chunks = 0;
  while (covered < 300) {
    const plan = sim.step();
    chunks++;
    for (const id of [1, 2]) t.equal(rowOf(plan, id)?.count, 1, `chunk ${chunks}: sequence ${id} decodes`);
    const row = rowOf(plan, 3);
    if (row === undefined) { t.fail('the long prompt got no chunk'); break; }
    t.equal(row.start, covered, 'chunks are contiguous');
    t.equal(row.count, Math.min(budget - 2, 300 - covered), 'the chunk takes the rest of the budget');
    t.ok(plan.numTokens <= budget);
    covered += row.count;
    t.equal(row.sample, covered === 300, 'samples only at the prompt end');
  }
  t.equal(chunks, Math.ceil(300 / (budget - 2)));
  t.equal(long.outputIds.length, 1, 'the first token came with the last chunk');
  t.equal(sim.done.size, 0, 'nobody finished early');
  sim.drain();
  t.same(sim.done.get(3), sim.expectedOutput(3, 3));
  t.same(sim.done.get(1), sim.expectedOutput(1, 40));
});

t.test('random arrivals: budget and maxNumSeqs hold in every step; no token lost', async (t) => {
  for (const seed of [1, 2, 3]) {
    const rand = prng(seed);
    const maxNumSeqs = 6;
    const maxNumBatchedTokens = 48;
    // Small enough that preemption happens, big enough that every request fits alone.
    const sim = new Sim(t, { global: 40, slidingWindow: 32, sliding: 40, maxNumSeqs, maxNumBatchedTokens });
    const specs = new Map<number, number>();
    const cancelled = new Set<number>();
    let nextId = 1;
    for (let step = 0; step < 400; step++) {
      if (rand() < 0.3) {
        const id = nextId++;
        const prompt = 1 + Math.floor(rand() * 150);
        const maxTokens = 1 + Math.floor(rand() * 60);
        specs.set(id, maxTokens);
        sim.add(id, prompt, maxTokens, Math.floor(rand() * 3));
      }
      if (rand() < 0.03 && specs.size > 0) {
        const id = 1 + Math.floor(rand() * (nextId - 1));
        if (sim.sched.finish(id) !== undefined) cancelled.add(id);
      }
      sim.step();
    }
    sim.drain();
    const st = sim.sched.stats();
    t.equal(st.cache.global.usedBlocks + st.cache.sliding.usedBlocks, 0, `seed ${seed}: all cache back`);
    t.equal(sim.unservable.length, 0, `seed ${seed}: everything fits alone`);
    let bad = 0;
    for (const [id, n] of specs) {
      if (cancelled.has(id)) continue;
      if (JSON.stringify(sim.done.get(id)) !== JSON.stringify(sim.expectedOutput(id, n))) bad++;
    }
    t.equal(bad, 0, `seed ${seed}: ${specs.size - cancelled.size} sequences all produced their full output`);
    t.ok(st.preemptionsTotal > 0, `seed ${seed}: the run preempted (${st.preemptionsTotal})`);
    t.ok(Math.max(...sim.steps.map((p) => p.numTokens)) === maxNumBatchedTokens, `seed ${seed}: the budget was used to the full`);
  }
});

t.test('waiting sequences are admitted by priority, first come first served within one', async (t) => {
  const sim = new Sim(t, { global: 200, maxNumSeqs: 1, maxNumBatchedTokens: 64 });
  sim.add(10, 4, 3, 5); // runs first: it is alone
  sim.step();
  sim.add(20, 4, 2, 2);
  sim.add(11, 4, 2, 1);
  sim.add(30, 4, 2, 0);
  sim.add(12, 4, 2, 1);
  sim.add(31, 4, 2, 0);
  sim.add(21, 4, 2, 2);
  sim.drain();
  t.same(sim.admissionOrder, [10, 30, 31, 11, 12, 20, 21]);
  t.equal(sim.done.size, 7);
});

t.test('preemption takes the most recently admitted, frees its cache, recomputes it later', async (t) => {
  // 10 global blocks of 8 = 80 positions; two sequences grow to 60 each.
  const sim = new Sim(t, { global: 11, maxNumSeqs: 4, maxNumBatchedTokens: 64 });
  const a = sim.add(1, 20, 40);
  const b = sim.add(2, 20, 40);
  let plan = sim.step();
  t.equal(plan.rows.length, 2, 'both admitted');
  while (plan.preempted.length === 0 && sim.sched.hasWork) plan = sim.step();
  t.same(plan.preempted.map((s) => s.spec.id), [2], 'the later admitted goes');
  t.equal(b.status, 'waiting');
  t.equal(b.cache.numCached, 0);
  t.equal(rowOf(plan, 2), undefined, 'no row for the preempted sequence');
  t.equal(rowOf(plan, 1)?.count, 1, 'the survivor decodes');
  const st = sim.sched.stats();
  t.equal(st.preemptionsTotal, 1);
  t.equal(st.preemptedWaiting, 1);
  t.equal(st.waiting, 1);
  t.equal(st.running, 1);
  t.equal(st.cache.global.usedBlocks, a.cache.blocks.global.length, 'only the survivor holds cache');
  const outputBefore = [...b.outputIds];
  t.ok(outputBefore.length > 0, 'it had generated tokens');
  // Run until b is recomputed.
  let recompute = rowOf(plan, 2);
  while (recompute === undefined && sim.sched.hasWork) recompute = rowOf(sim.step(), 2);
  t.ok(sim.done.has(1), 'recomputed once the survivor finished and freed its cache');
  t.equal(recompute?.start, 0, 'recomputation starts at position 0');
  t.equal(recompute?.count, 20 + outputBefore.length, 'over prompt and generated tokens');
  t.equal(recompute?.sample, true, 'sampling the next token only at the end');
  t.same(b.outputIds, [...outputBefore, tokenFor(2, outputBefore.length)], 'generation goes on where it was');
  sim.drain();
  t.same(sim.done.get(1), sim.expectedOutput(1, 40));
  t.same(sim.done.get(2), sim.expectedOutput(2, 40), 'no token lost or repeated');
  t.equal(b.preemptions, 1);
  t.equal(sim.sched.stats().preemptionsTotal, 1);
  t.equal(sim.sched.stats().preemptedWaiting, 0);
});

t.test('a recomputation longer than the budget is chunked, sampling only at its end', async (t) => {
  const sim = new Sim(t, { global: 11, maxNumSeqs: 4, maxNumBatchedTokens: 16 });
  sim.add(1, 30, 40);
  const b = sim.add(2, 30, 40);
  let plan = sim.step();
  while (plan.preempted.length === 0 && sim.sched.hasWork) plan = sim.step();
  t.same(plan.preempted.map((s) => s.spec.id), [2]);
  const known = Scheduler.numTokens(b);
  const rows = [];
  while (sim.sched.hasWork && (rows.length === 0 || rows[rows.length - 1]!.start + rows[rows.length - 1]!.count < known)) {
    const r = rowOf(sim.step(), 2);
    if (r !== undefined) rows.push(r);
  }
  t.same(rows.map((r) => r.start), rows.map((_, i) => i * 16), 'chunks from 0');
  t.same(rows.map((r) => r.sample), rows.map((_, i) => i === rows.length - 1), 'sample only on the last');
  sim.drain();
  t.same(sim.done.get(2), sim.expectedOutput(2, 40));
});

t.test('preemption takes the lowest priority first, then the most recently admitted', async (t) => {
  const sim = new Sim(t, { global: 16, maxNumSeqs: 4, maxNumBatchedTokens: 128 });
  sim.add(1, 16, 60, 1); // admitted first, but of lower priority
  sim.step();
  sim.add(2, 16, 60, 0);
  sim.add(3, 16, 60, 0);
  let plan = sim.step();
  while (plan.preempted.length === 0 && sim.sched.hasWork) plan = sim.step();
  t.same(plan.preempted.map((s) => s.spec.id), [1], 'priority 1 goes before priority 0');
  const ofPriority0 = (p: SchedulerStep): number[] => p.preempted.map((s) => s.spec.id).filter((id) => id !== 1);
  while (ofPriority0(plan).length === 0 && sim.sched.hasWork) plan = sim.step();
  t.same(ofPriority0(plan), [3], 'among equals, the most recently admitted goes');
  t.equal(sim.sched.get(2)?.status, 'running', 'the earliest admitted of the highest priority keeps running');
  sim.drain();
  for (const id of [1, 2, 3]) t.same(sim.done.get(id), sim.expectedOutput(id, 60), `sequence ${id} complete`);
});

t.test('a sequence larger than the whole cache is reported unservable', async (t) => {
  const sim = new Sim(t, { global: 11, maxNumSeqs: 4, maxNumBatchedTokens: 64 }); // 80 positions
  sim.add(1, 100, 5);
  sim.add(2, 10, 5);
  const plan = sim.step();
  t.same(plan.unservable.map((s) => s.spec.id), [1], 'too long a prompt');
  t.same(plan.rows.map((r) => r.seq.spec.id), [2], 'the next one is admitted behind it');
  t.equal(sim.sched.stats().waiting, 0, 'it does not wait');
  // Fits at admission, then outgrows the whole cache: preempted (by itself), then unservable.
  sim.add(3, 50, 60);
  sim.drain(500);
  t.same(sim.unservable, [1, 3], 'the outgrown one is reported, not left waiting');
  t.same(sim.done.get(2), sim.expectedOutput(2, 5));
  t.notOk(sim.sched.hasWork);
  t.equal(sim.sched.stats().cache.global.usedBlocks, 0);
  // The limit is the cache, not a sliding pool too small for the ring.
  const sl = new Sim(t, { global: 40, sliding: 3, slidingWindow: 32, maxNumSeqs: 2, maxNumBatchedTokens: 64 });
  sl.add(1, 20, 2); // 3 sliding blocks: fits the 2 usable
  sl.add(2, 10, 2);
  const p = sl.step();
  t.same(p.unservable.map((s) => s.spec.id), [1]);
  sl.drain();
  t.same(sl.done.get(2), sl.expectedOutput(2, 2));
});

t.test('finish() frees the cache at once, running or waiting', async (t) => {
  const sim = new Sim(t, { global: 30, slidingWindow: 16, maxNumSeqs: 2, maxNumBatchedTokens: 64 });
  sim.add(1, 30, 50);
  sim.add(2, 30, 50);
  sim.add(3, 30, 50); // waits: maxNumSeqs
  for (let i = 0; i < 5; i++) sim.step();
  let st = sim.sched.stats();
  t.ok(st.cache.global.usedBlocks > 0 && st.cache.sliding.usedBlocks > 0);
  t.equal(st.waiting, 1);
  t.equal(sim.sched.finish(3)?.status, 'finished', 'a waiting one');
  t.equal(sim.sched.stats().waiting, 0);
  sim.sched.finish(1);
  sim.sched.finish(2);
  st = sim.sched.stats();
  t.equal(st.cache.global.usedBlocks, 0, 'global blocks back');
  t.equal(st.cache.sliding.usedBlocks, 0, 'sliding blocks back');
  t.equal(st.cache.global.usedTokens, 0);
  t.equal(st.running, 0);
  t.notOk(sim.sched.hasWork);
  t.equal(sim.sched.finish(1), undefined, 'a second finish is a no-op');
  t.equal(sim.cache.numFreeBlocks('global'), 29);
});

t.test('sliding layers hold at most the window ring per sequence; global grows with length', async (t) => {
  const W = 32;
  const bs = 8;
  const ring = Math.ceil(W / bs) * bs;
  const sim = new Sim(t, { global: 100, sliding: 100, slidingWindow: W, blockSize: bs, maxNumSeqs: 4, maxNumBatchedTokens: 16 });
  t.equal(sim.cache.ringSlots, ring);
  const a = sim.add(1, 10, 190); // grows to 200 positions
  const b = sim.add(2, 150, 40); // a long prompt prefilled in chunks of the small budget
  let maxSliding = 0;
  let maxGlobal = 0;
  let over = 0;
  while (sim.sched.hasWork) {
    sim.step();
    const st = sim.sched.stats();
    for (const s of [a, b]) {
      if (s.status === 'finished') continue;
      if (s.cache.blocks.sliding.length * bs > ring) over++;
      if (s.cache.blocks.global.length !== Math.ceil(s.cache.numCached / bs)) t.fail(`global blocks of ${s.spec.id} do not follow its length`);
      maxGlobal = Math.max(maxGlobal, s.cache.blocks.global.length * bs);
      maxSliding = Math.max(maxSliding, s.cache.blocks.sliding.length * bs);
    }
    if (st.cache.sliding.usedTokens > st.running * ring) over++;
  }
  t.equal(over, 0, 'never more sliding than the ring');
  t.equal(maxSliding, ring, 'the ring is used whole');
  t.equal(maxGlobal, 200, 'global reached the full length');
  t.same(sim.done.get(1), sim.expectedOutput(1, 190));
  t.same(sim.done.get(2), sim.expectedOutput(2, 40));
});
