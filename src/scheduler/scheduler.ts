/**
 * Continuous batching, one step at a time. Each step (`schedule`):
 *  1. every running sequence with one token pending decodes it (1 token of the budget each);
 *  2. running sequences still prefilling get the next chunk of their prompt, as much as the
 *     per-step token budget (`maxNumBatchedTokens`) has left;
 *  3. waiting sequences are admitted in priority order (lower first, then first come, first
 *     served) while fewer than `maxNumSeqs` run, budget is left and all their known tokens fit
 *     the free cache; each starts with a prefill chunk in this very step.
 * Cache is taken as sequences grow. When a running sequence cannot grow, the most recently
 * admitted sequence of the lowest priority is preempted: its cache is freed and it waits (at
 * the head of its priority) to be recomputed from its prompt and the tokens it already
 * generated, so its output goes on unchanged. A sequence that cannot fit even an empty cache
 * is reported unservable instead of waiting forever.
 *
 * With prefix caching (KvCacheManager), an admitted sequence first takes the longest cached
 * prefix of its tokens and computes only the rest; computed full blocks are registered after each
 * step (`update`). A sequence whose prompt shares more full blocks with a running sequence that
 * has not computed them yet waits for them (the n choices of a request prefill their prompt
 * once); one that wants logits of every prompt token (prompt logprobs) takes no cached prefix.
 *
 * Pure bookkeeping: no tensors, no sampling, no clocks. The engine hands each step's `plan` to
 * the runner, samples, then calls `update` with the sampled tokens (the scheduler alone moves a
 * sequence's progress), and `finish` for sequences that end. Ends and preemptions reach the
 * runner in the next plan that is executed (finishedSeqIds, preemptedSeqIds).
 */
import type { KvCacheManager } from './kv-cache-manager.ts';
import type { KindUsage, PlannedRow, Sequence, SequenceSpec, SchedulerStats, SchedulerStep } from './types.ts';
import { LAYER_KINDS, type LayerKind, type PlanRow } from './runner-contract.ts';

export type { SchedulerStep } from './types.ts';

export interface SchedulerConfig {
  /** Most sequences running (holding cache and computing) at once. */
  readonly maxNumSeqs: number;
  /** Most tokens computed in one step (decodes count 1 each); at least maxNumSeqs. */
  readonly maxNumBatchedTokens: number;
}

export const DEFAULT_MAX_NUM_BATCHED_TOKENS = 512;

export class Scheduler {
  /** Sorted by (priority, arrival). */
  private readonly waiting: Sequence[] = [];
  /** Sorted by (priority, admitted): preemption takes from the end. */
  private readonly running: Sequence[] = [];
  private readonly byId = new Map<number, Sequence>();
  private arrivals = 0;
  private admissions = 0;
  private preemptionsTotal = 0;
  private last = { batchSize: 0, numTokens: 0 };
  /** Prompt tokens of first admissions that looked the cache up, and those of them taken from it. */
  private prefixQueries = 0;
  private prefixHits = 0;
  /** Ended or preempted since the last plan a runner executed (`update` acknowledges them). */
  private readonly unsentFinished: number[] = [];
  private readonly unsentPreempted: number[] = [];

  constructor(readonly cache: KvCacheManager, readonly config: SchedulerConfig) {
    if (config.maxNumSeqs < 1) throw new RangeError('maxNumSeqs must be >= 1');
    if (config.maxNumBatchedTokens < config.maxNumSeqs) throw new RangeError('maxNumBatchedTokens must be >= maxNumSeqs');
  }

  add(spec: SequenceSpec): Sequence {
    if (this.byId.has(spec.id)) throw new RangeError(`sequence ${spec.id} exists`);
    if (spec.promptIds.length === 0) throw new RangeError('empty prompt');
    const seq: Sequence = { spec, outputIds: [], status: 'waiting', arrival: this.arrivals++, admitted: -1, cache: this.cache.newSequence(spec.id), preemptions: 0, cachedTokens: 0 };
    this.byId.set(spec.id, seq);
    insertSorted(this.waiting, seq, waitingOrder);
    return seq;
  }

  get(id: number): Sequence | undefined {
    return this.byId.get(id);
  }

  /** Ends a sequence (finished, stopped, cancelled, failed): its cache is free at once. */
  finish(id: number): Sequence | undefined {
    const seq = this.byId.get(id);
    if (seq === undefined) return undefined;
    this.byId.delete(id);
    remove(this.running, seq);
    remove(this.waiting, seq);
    this.cache.release(seq.cache);
    seq.status = 'finished';
    this.unsentFinished.push(id);
    return seq;
  }

  /**
   * Takes the results of a step whose plan the runner executed (vLLM's update_from_output):
   * every row's tokens are now stored (the sequence's numCached moves past the row), and the
   * token sampled for a sampling row (`sampled`: sequence id → token id) is appended to its
   * output. Rows of sequences that ended meanwhile are skipped. The plan's finished and
   * preempted ids count as delivered.
   */
  update(step: SchedulerStep, sampled: ReadonlyMap<number, number>): void {
    for (const r of step.rows) {
      if (r.seq.status !== 'running') continue;
      r.seq.cache.numCached = r.start + r.count;
      this.cache.commit(r.seq.cache, (i) => Scheduler.tokenAt(r.seq, i));
      const tokenId = sampled.get(r.seq.spec.id);
      if (r.sample && tokenId !== undefined) r.seq.outputIds.push(tokenId);
    }
    this.unsentFinished.splice(0, step.plan.finishedSeqIds.length);
    this.unsentPreempted.splice(0, step.plan.preemptedSeqIds.length);
    this.cache.endStep();
  }

  /** Known tokens of a sequence: prompt then output. */
  static numTokens(seq: Sequence): number {
    return seq.spec.promptIds.length + seq.outputIds.length;
  }

  /** Token i of prompt ++ output. */
  static tokenAt(seq: Sequence, i: number): number {
    const p = seq.spec.promptIds;
    return i < p.length ? p[i]! : seq.outputIds[i - p.length]!;
  }

  get hasWork(): boolean {
    return this.running.length > 0 || this.waiting.length > 0;
  }

  /**
   * Plans the next step. `allLogits`: whether a sequence's row returns logits for every new
   * token (prompt scoring) instead of the last one only. `pooling`: how an embedding sequence
   * pools its hidden states ('mean': its rows ask for every token's, 'last': its last row for
   * the last token's); undefined for a generation.
   */
  schedule(allLogits: (seq: Sequence) => boolean = () => false, pooling: (seq: Sequence) => 'mean' | 'last' | undefined = () => undefined): SchedulerStep {
    this.cache.endStep(); // the previous plan ran (or failed): what it read is free to reuse
    let budget = this.config.maxNumBatchedTokens;
    const rows = new Map<Sequence, PlannedRow>();
    const preempted: Sequence[] = [];
    const unservable: Sequence[] = [];

    /** Reserves room for `count` more tokens of `seq`, preempting from the end; false if `seq` itself went. */
    const makeRoom = (seq: Sequence, count: number): boolean => {
      const len = seq.cache.numCached + count;
      while (!this.cache.reserve(seq.cache, len)) {
        const victim = this.running[this.running.length - 1]!;
        const row = rows.get(victim);
        if (row !== undefined) { rows.delete(victim); budget += row.count; }
        this.preempt(victim);
        preempted.push(victim);
        if (victim === seq) return false;
      }
      return true;
    };
    const plan = (seq: Sequence, count: number): void => {
      const start = seq.cache.numCached;
      rows.set(seq, { seq, start, count, sample: start + count === Scheduler.numTokens(seq) });
      budget -= count;
    };

    // 1. Decodes first, so running sequences keep producing while long prompts prefill.
    for (const seq of [...this.running]) {
      if (seq.status !== 'running' || budget <= 0) continue;
      if (Scheduler.numTokens(seq) - seq.cache.numCached === 1 && makeRoom(seq, 1)) plan(seq, 1);
    }
    // 2. Prefill chunks of running sequences.
    for (const seq of [...this.running]) {
      if (seq.status !== 'running' || rows.has(seq) || budget <= 0) continue;
      const count = Math.min(Scheduler.numTokens(seq) - seq.cache.numCached, budget);
      if (count > 0 && makeRoom(seq, count)) plan(seq, count);
    }
    // 3. Admissions (none in a step that had to preempt: memory is short).
    while (this.waiting.length > 0 && preempted.length === 0 && budget > 0 && this.running.length < this.config.maxNumSeqs) {
      const seq = this.waiting[0]!;
      const total = Scheduler.numTokens(seq);
      if (!this.cache.fitsEmpty(total)) {
        this.waiting.shift();
        unservable.push(seq);
        continue;
      }
      // Rows that need every prompt position computed (prompt logprobs, a mean-pooled embedding) take no hit.
      const lookup = this.cache.prefixCaching && !allLogits(seq) && pooling(seq) !== 'mean';
      const hit = lookup ? this.cache.findPrefix((i) => Scheduler.tokenAt(seq, i), total) : null;
      // First come, first served: no overtaking a sequence that waits.
      if (hit !== null && this.sharesComputingPrefix(seq, hit.numTokens)) break;
      if (hit !== null) this.cache.acquire(seq.cache, hit);
      if (!this.cache.canReserve(seq.cache, total)) { this.cache.release(seq.cache); break; }
      this.waiting.shift();
      seq.status = 'running';
      if (seq.admitted === -1 && hit !== null) {
        seq.cachedTokens = hit.numTokens;
        this.prefixQueries += seq.spec.promptIds.length;
        this.prefixHits += hit.numTokens;
      }
      seq.admitted = this.admissions++;
      insertSorted(this.running, seq, runningOrder);
      const count = Math.min(total - seq.cache.numCached, budget);
      this.cache.reserve(seq.cache, seq.cache.numCached + count);
      plan(seq, count);
    }
    const planned = [...rows.values()];
    const numTokens = planned.reduce((n, r) => n + r.count, 0);
    this.last = { batchSize: planned.length, numTokens };
    return {
      rows: planned, preempted, unservable, numTokens,
      plan: { rows: planned.map((r) => planRow(r, allLogits(r.seq), pooling(r.seq))), finishedSeqIds: [...this.unsentFinished], preemptedSeqIds: [...this.unsentPreempted] },
    };
  }

  stats(): SchedulerStats {
    const usage = (k: LayerKind): KindUsage => {
      const total = this.cache.numBlocks[k] - 1;
      const used = total - this.cache.numFreeBlocks(k);
      return { usedBlocks: used, totalBlocks: total, usedTokens: used * this.cache.blockSize, cachedBlocks: this.cache.numCachedBlocks(k) };
    };
    const cache = Object.fromEntries(LAYER_KINDS.map((k) => [k, usage(k)])) as Record<LayerKind, KindUsage>;
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      preemptedWaiting: this.waiting.filter((s) => s.preemptions > 0).length,
      preemptionsTotal: this.preemptionsTotal,
      cache,
      prefixCache: { queries: this.prefixQueries, hits: this.prefixHits },
      lastStep: { ...this.last },
    };
  }

  /**
   * Whether a running sequence is computing full blocks `seq` shares beyond its cached prefix of
   * `cached` tokens: `seq` then waits for them to be registered instead of computing them twice.
   */
  private sharesComputingPrefix(seq: Sequence, cached: number): boolean {
    const B = this.cache.blockSize;
    const reusable = Math.floor((Scheduler.numTokens(seq) - 1) / B) * B;
    if (reusable <= cached) return false;
    for (const r of this.running) {
      if (r.cache.numCached >= reusable) continue; // computed (and registered) already
      const limit = Math.min(reusable, Scheduler.numTokens(r));
      let n = 0;
      while (n < limit && Scheduler.tokenAt(r, n) === Scheduler.tokenAt(seq, n)) n++;
      const shared = Math.floor(n / B) * B;
      if (shared > cached && r.cache.numCached < shared) return true;
    }
    return false;
  }

  private preempt(seq: Sequence): void {
    remove(this.running, seq);
    this.cache.release(seq.cache);
    seq.status = 'waiting';
    seq.preemptions++;
    this.preemptionsTotal++;
    this.unsentPreempted.push(seq.spec.id);
    insertSorted(this.waiting, seq, waitingOrder);
  }
}

/** A planned row as the runner sees it. */
function planRow(r: PlannedRow, allLogits: boolean, pooling: 'mean' | 'last' | undefined): PlanRow {
  const tokenIds = new Int32Array(r.count);
  for (let i = 0; i < r.count; i++) tokenIds[i] = Scheduler.tokenAt(r.seq, r.start + i);
  const hidden = pooling === 'mean' ? 'all' : pooling === 'last' && r.sample ? 'last' : undefined;
  const view = r.seq.cache.slidingView;
  return { seqId: r.seq.spec.id, start: r.start, tokenIds, blocks: r.seq.cache.blocks, ...(view !== null ? { slidingView: view } : {}), logits: allLogits ? 'all' : 'last', sample: r.sample, ...(hidden !== undefined ? { hidden } : {}) };
}

const waitingOrder = (a: Sequence, b: Sequence): number => a.spec.priority - b.spec.priority || a.arrival - b.arrival;
const runningOrder = (a: Sequence, b: Sequence): number => a.spec.priority - b.spec.priority || a.admitted - b.admitted;

function insertSorted(list: Sequence[], seq: Sequence, order: (a: Sequence, b: Sequence) => number): void {
  let i = list.length;
  while (i > 0 && order(list[i - 1]!, seq) > 0) i--;
  list.splice(i, 0, seq);
}

function remove(list: Sequence[], seq: Sequence): void {
  const i = list.indexOf(seq);
  if (i >= 0) list.splice(i, 1);
}
