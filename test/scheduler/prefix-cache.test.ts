// Prefix caching in the scheduler and the block accounting, against a simulated KV store: every
// block slot remembers which content (a rolling hash of the tokens up to its position) was written
// there, and every step checks that each cached slot a row's queries can see (the window's mask
// applied) holds exactly the content of that sequence at that position. So a hit that reuses the
// wrong block, a ring block overwritten while shared, a block reused while a step still reads it
// or evicted while referenced shows as a wrong read. Then: hits of the expected length, eviction,
// n choices prefilling once, and a fuzz of 1,000 requests with cancellations and preemptions.
import t, { type Test } from 'tap';
import { parseGemma2Config, SHAPES } from '../../src/checkpoint/config.ts';
import { KvCache } from '../../src/engine/kv-cache.ts';
import { KvCacheManager } from '../../src/scheduler/kv-cache-manager.ts';
import { LAYER_KINDS, slotPosition, viewSlot, type LayerKind } from '../../src/scheduler/runner-contract.ts';
import { Scheduler, type SchedulerStep } from '../../src/scheduler/scheduler.ts';
import type { Sequence } from '../../src/scheduler/types.ts';

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => (a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

/** Content of position p of a token list: a rolling hash of tokens[0..p], never 0 (0: never written). */
function contents(tokens: readonly number[]): number[] {
  const out: number[] = [];
  let h = 17;
  for (const tok of tokens) { h = ((Math.imul(h, 31) + tok + 1) >>> 0) || 1; out.push(h); }
  return out;
}

interface HarnessOptions {
  readonly blockSize: number;
  readonly window: number;
  readonly global: number;
  readonly sliding: number;
  readonly maxNumSeqs: number;
  readonly maxNumBatchedTokens: number;
  readonly prefixCaching?: boolean;
}

/** Scheduler + manager + a content-checking fake runner; `allLogits` ids take no cached prefix. */
class Harness {
  readonly cache: KvCacheManager;
  readonly sched: Scheduler;
  /** Per kind: [numBlocks * blockSize] the content written at each block slot. */
  private readonly store: Record<LayerKind, Float64Array>;
  readonly live = new Map<number, Sequence>();
  readonly allLogits = new Set<number>();
  readonly errors: string[] = [];
  /** Prompt positions computed (rows' tokens below the prompt's end), per sequence id. */
  readonly promptComputed = new Map<number, number>();
  readonly firstStart = new Map<number, number>();
  readonly done = new Map<number, number[]>();

  constructor(readonly opts: HarnessOptions) {
    const config = parseGemma2Config({ ...SHAPES.tiny, sliding_window: opts.window, max_position_embeddings: 1 << 16 }, 'test');
    const layout = KvCache.layout(config, opts.blockSize, { global: opts.global, sliding: opts.sliding }, undefined, opts.prefixCaching ?? true);
    this.cache = new KvCacheManager(layout);
    this.sched = new Scheduler(this.cache, { maxNumSeqs: opts.maxNumSeqs, maxNumBatchedTokens: opts.maxNumBatchedTokens });
    this.store = { global: new Float64Array(opts.global * opts.blockSize), sliding: new Float64Array(opts.sliding * opts.blockSize) };
  }

  add(id: number, promptIds: readonly number[], maxTokens: number, allLogits = false): Sequence {
    if (allLogits) this.allLogits.add(id);
    const seq = this.sched.add({ id, promptIds, maxTokens, priority: 0 });
    this.live.set(id, seq);
    return seq;
  }

  finish(id: number): void {
    this.sched.finish(id);
    this.live.delete(id);
  }

  /** The token sampled at output index i: a function of the prompt, so equal prompts give equal outputs (and reusable blocks). */
  private sampleFor(seq: Sequence): number {
    const c = contents([...seq.spec.promptIds, ...seq.outputIds]);
    return 3 + (c.at(-1)! % 97);
  }

  step(): SchedulerStep {
    const plan = this.sched.schedule((s) => this.allLogits.has(s.spec.id));
    for (const s of plan.unservable) this.finish(s.spec.id);
    const { blockSize: B } = this.opts;
    const layout = this.cache.layout;
    plan.rows.forEach((r, i) => {
      const s = r.seq;
      const id = s.spec.id;
      const pr = plan.plan.rows[i]!;
      if (!this.firstStart.has(id)) this.firstStart.set(id, r.start);
      const tokens = Array.from({ length: r.start + r.count }, (_, p) => Scheduler.tokenAt(s, p));
      const want = contents(tokens);
      // Reads: every slot of the view whose position a query of the row can see.
      for (const k of LAYER_KINDS) {
        const view = k === 'sliding' ? pr.slidingView ?? pr.blocks.sliding : pr.blocks.global;
        for (let slot = 0; slot < view.length * B; slot++) {
          const p = slotPosition(layout, k, r.start, slot);
          if (p < 0 || (k === 'sliding' && p <= r.start - this.opts.window)) continue;
          const block = view[Math.floor(slot / B)]!;
          const got = this.store[k][block * B + (slot % B)];
          if (block === 0 || got !== want[p]) this.errors.push(`seq ${id} step at ${r.start}: ${k} slot ${slot} (position ${p}) in block ${block} holds ${got}, not ${want[p]}`);
        }
      }
      const promptEnd = s.spec.promptIds.length;
      this.promptComputed.set(id, (this.promptComputed.get(id) ?? 0) + Math.max(0, Math.min(promptEnd, r.start + r.count) - r.start));
    });
    // Writes after every row read (as the runner does): the new positions into the blocks.
    plan.rows.forEach((r, i) => {
      const pr = plan.plan.rows[i]!;
      const want = contents(Array.from({ length: r.start + r.count }, (_, p) => Scheduler.tokenAt(r.seq, p)));
      for (const k of LAYER_KINDS) {
        for (let p = r.start; p < r.start + r.count; p++) {
          const slot = viewSlot(layout, k, p);
          const block = pr.blocks[k][Math.floor(slot / B)]!;
          if (block === 0) this.errors.push(`seq ${r.seq.spec.id}: position ${p} written to the null block`);
          this.store[k][block * B + (slot % B)] = want[p]!;
        }
      }
    });
    const sampled = new Map<number, number>();
    for (const r of plan.rows) if (r.sample) sampled.set(r.seq.spec.id, this.sampleFor(r.seq));
    this.sched.update(plan, sampled);
    for (const r of plan.rows) {
      if (r.sample && r.seq.status === 'running' && r.seq.outputIds.length >= r.seq.spec.maxTokens) {
        this.done.set(r.seq.spec.id, [...r.seq.outputIds]);
        this.finish(r.seq.spec.id);
      }
    }
    this.audit();
    return plan;
  }

  audit(): void {
    const problems = this.cache.audit([...this.live.values()].map((s) => s.cache));
    if (problems.length > 0) this.errors.push(...problems.slice(0, 5));
  }

  drain(limit = 100_000): void {
    for (let i = 0; this.sched.hasWork && i < limit; i++) this.step();
    if (this.sched.hasWork) this.errors.push('did not drain');
  }

  check(t: Test, what: string): void {
    t.same(this.errors.slice(0, 5), [], `${what}: every read saw its own content, accounting consistent`);
    this.errors.length = 0;
  }
}

const seqTokens = (seed: number, len: number): number[] => {
  const r = prng(seed);
  return Array.from({ length: len }, () => 3 + Math.floor(r() * 400));
};

t.test('a second identical prompt reuses every full block short of its last token, on both kinds', async (t) => {
  for (const [B, W] of [[4, 6], [4, 8], [8, 4], [4, 13]] as const) {
    for (const len of [W - 1, W, W + 1, 2 * W + 3, 3 * B, 3 * B + 1, 40]) {
      if (len < 2) continue;
      const h = new Harness({ blockSize: B, window: W, global: 200, sliding: 200, maxNumSeqs: 4, maxNumBatchedTokens: 64 });
      const prompt = seqTokens(len * 7 + W, len);
      h.add(1, prompt, 5);
      h.drain();
      const b = h.add(2, prompt, 5);
      h.drain();
      const expected = Math.floor((len - 1) / B) * B;
      t.equal(b.cachedTokens, expected, `B ${B} W ${W} prompt ${len}: ${expected} cached`);
      t.equal(h.firstStart.get(2), expected, 'it starts computing at the hit');
      t.equal(h.promptComputed.get(2), len - expected, 'and computes only the rest of the prompt');
      t.same(h.done.get(2), h.done.get(1), 'same output');
      h.check(t, `B ${B} W ${W} prompt ${len}`);
    }
  }
});

t.test('a hit needs the sliding blocks of the window before it, not only the global ones', async (t) => {
  const B = 4;
  const W = 8; // ring: ceil(8 / 4) + 1 = 3 blocks
  const prompt = seqTokens(5, 40);
  const hits = (budget: number, second: number): number => {
    const h = new Harness({ blockSize: B, window: W, global: 200, sliding: 200, maxNumSeqs: 4, maxNumBatchedTokens: budget });
    h.add(1, prompt, 1);
    h.drain();
    const b = h.add(2, prompt.slice(0, second), 1);
    h.drain();
    h.check(t, `budget ${budget}, second prompt ${second}`);
    return b.cachedTokens;
  };
  // Chunks of 8: every block index had its sliding block at some point, each kept by its hash.
  t.equal(hits(8, 21), 20, 'chunked: a 21-token prefix reuses 20');
  // One chunk of 40: only the last ring (block indices 7..9) ever existed on the sliding side.
  t.equal(hits(64, 21), 0, 'one chunk: no sliding blocks for a window ending at 20, no hit');
  t.equal(hits(64, 40), 36, 'one chunk: the whole prompt again reuses 36 (its window is in the last ring)');
  t.equal(hits(64, 33), 0, 'one chunk: a window ending at 32 needs block indices 6 and 7, only 7..9 exist: no hit');
});

t.test('prompt-logprob sequences take no cached prefix but register theirs', async (t) => {
  const h = new Harness({ blockSize: 4, window: 6, global: 100, sliding: 100, maxNumSeqs: 4, maxNumBatchedTokens: 64 });
  const prompt = seqTokens(9, 30);
  h.add(1, prompt, 2);
  h.drain();
  const b = h.add(2, prompt, 2, true);
  h.drain();
  t.equal(b.cachedTokens, 0, 'no hit when every prompt logit is wanted');
  t.equal(h.promptComputed.get(2), 30, 'the whole prompt computed');
  h.finish(1);
  const h2 = new Harness({ blockSize: 4, window: 6, global: 100, sliding: 100, maxNumSeqs: 4, maxNumBatchedTokens: 64 });
  h2.add(1, prompt, 2, true);
  h2.drain();
  const c = h2.add(2, prompt, 2);
  h2.drain();
  t.equal(c.cachedTokens, 28, 'a later plain request reuses its blocks');
  h.check(t, 'logprobs');
  h2.check(t, 'logprobs registered');
});

t.test('n = 4 choices of one prompt prefill it once (+ the recomputed tail of each other choice)', async (t) => {
  for (const [len, budget] of [[50, 512], [50, 16], [64, 512], [9, 512]] as const) {
    const B = 8;
    const h = new Harness({ blockSize: B, window: 12, global: 200, sliding: 200, maxNumSeqs: 8, maxNumBatchedTokens: budget });
    const prompt = seqTokens(len, len);
    for (let i = 0; i < 4; i++) h.add(i, prompt, 6);
    h.drain();
    const computed = [...h.promptComputed.values()].reduce((a, b) => a + b, 0);
    // The first choice computes the prompt; each other one reuses floor((len - 1) / B) * B of it.
    const expected = len + 3 * (len - Math.floor((len - 1) / B) * B);
    t.equal(computed, expected, `prompt ${len}, budget ${budget}: ${computed} prompt tokens computed, ${len} + 3 * ${len - Math.floor((len - 1) / B) * B}`);
    t.equal(h.sched.stats().prefixCache.hits, 3 * Math.floor((len - 1) / B) * B, 'hits counted');
    t.equal(h.sched.stats().prefixCache.queries, 4 * len, 'queries counted');
    for (let i = 1; i < 4; i++) t.same(h.done.get(i), h.done.get(0), `choice ${i} output`);
    h.check(t, `n = 4, prompt ${len}`);
  }
});

t.test('without prefix caching nothing is reused', async (t) => {
  const h = new Harness({ blockSize: 4, window: 6, global: 100, sliding: 100, maxNumSeqs: 4, maxNumBatchedTokens: 64, prefixCaching: false });
  const prompt = seqTokens(3, 30);
  h.add(1, prompt, 2);
  h.drain();
  const b = h.add(2, prompt, 2);
  h.drain();
  t.equal(b.cachedTokens, 0);
  t.equal(h.promptComputed.get(2), 30);
  t.equal(h.sched.stats().cache.global.cachedBlocks, 0, 'nothing kept');
  h.check(t, 'off');
});

t.test('eviction takes least recently released blocks, never a referenced one', async (t) => {
  const B = 4;
  // 12 usable blocks of each kind; the ring is ceil(6 / 4) + 1 = 3 blocks.
  const h = new Harness({ blockSize: B, window: 6, global: 13, sliding: 13, maxNumSeqs: 4, maxNumBatchedTokens: 64 });
  const a = seqTokens(1, 20);
  const b = seqTokens(2, 20);
  h.add(1, a, 1);
  h.drain();
  h.add(2, b, 1);
  h.drain();
  // Both are cached (5 + 5 global blocks); a holds 2 more: a long request must evict.
  const holder = h.add(3, a, 200); // takes a's blocks (referenced while it runs)
  h.step();
  t.equal(holder.cachedTokens, 16, 'a is reused');
  const before = [...holder.cache.blocks.global];
  for (let i = 0; i < 8; i++) h.step(); // decodes grow it: free blocks, then b's cached ones, are taken
  t.same(holder.cache.blocks.global.slice(0, before.length), before, 'its shared blocks are still its own');
  const late = h.add(4, b, 1);
  h.drain();
  t.equal(late.cachedTokens, 0, 'b (released last but one, unreferenced) was evicted');
  h.check(t, 'eviction');
});

t.test('1,000 random requests over shared prefixes with cancellations and preemptions leave nothing referenced', async (t) => {
  for (const [B, W, blocks, budget] of [[4, 6, 40, 24], [8, 8, 30, 32], [4, 13, 60, 16]] as const) {
    const r = prng(B * 100 + W);
    const h = new Harness({ blockSize: B, window: W, global: blocks, sliding: blocks, maxNumSeqs: 6, maxNumBatchedTokens: budget });
    const prefixes = Array.from({ length: 6 }, (_, i) => seqTokens(1000 + i, 8 + Math.floor(r() * 60)));
    let next = 0;
    let steps = 0;
    let cancelled = 0;
    while (next < 1000 || h.sched.hasWork) {
      if (next < 1000 && r() < 0.5) {
        const prefix = prefixes[Math.floor(r() * prefixes.length)]!;
        const cut = Math.floor(r() * (prefix.length + 1));
        const prompt = [...prefix.slice(0, cut), ...seqTokens(next, Math.floor(r() * 12))];
        if (prompt.length === 0) prompt.push(5);
        const n = r() < 0.1 ? 3 : 1;
        for (let c = 0; c < n && next < 1000; c++) h.add(next++, prompt, 1 + Math.floor(r() * 20), r() < 0.05);
      }
      if (h.live.size > 0 && r() < 0.15) {
        const ids = [...h.live.keys()];
        h.finish(ids[Math.floor(r() * ids.length)]!);
        cancelled++;
        h.audit();
      }
      if (h.sched.hasWork) { h.step(); steps++; }
      if (steps > 200_000) { h.errors.push('runaway'); break; }
    }
    const st = h.sched.stats();
    t.equal(st.cache.global.usedBlocks + st.cache.sliding.usedBlocks, 0, `B ${B} W ${W}: no block referenced at the end`);
    t.equal(st.cache.global.cachedBlocks + (blocks - 1 - st.cache.global.cachedBlocks), blocks - 1, 'cached + free = all');
    t.ok(st.preemptionsTotal > 0, `${st.preemptionsTotal} preemptions`);
    t.ok(cancelled > 50, `${cancelled} cancellations`);
    t.ok(st.prefixCache.hits > 0, `${st.prefixCache.hits} of ${st.prefixCache.queries} prompt tokens from the cache`);
    h.check(t, `fuzz B ${B} W ${W}`);
    t.same(h.cache.audit([]), [], 'audit with no holders: every block free or cached');
  }
});
