/**
 * Drives a Runner by hand, without the scheduler: the score command, tests and benchmarks that
 * run one or a few sequences step by step. It does the scheduler's share of the contract in
 * the small: block accounting over the runner's layout (`cache`), a StepPlan per step, each
 * sequence's progress (numCached) moved after the step, and an end passed on at once (a plan of
 * no rows), so the runner holds nothing for it even if no step follows.
 */
import { KvCacheManager, type SequenceCache } from '../scheduler/kv-cache-manager.ts';
import type { Runner, StepOutput } from '../scheduler/runner-contract.ts';

/** One sequence's new tokens: run `tokenIds` at positions seq.numCached.. (cache room reserved). */
export interface StepperRow {
  readonly seq: SequenceCache;
  readonly tokenIds: ArrayLike<number>;
  /** Return logits for every new token, or only the last. */
  readonly logits: 'all' | 'last';
  /** False when the caller will not sample from this row (default true). */
  readonly sample?: boolean;
  /** Final hidden states wanted (PlanRow.hidden); default none. */
  readonly hidden?: 'all' | 'last';
}

export class Stepper<R extends Runner = Runner> {
  readonly cache: KvCacheManager;

  constructor(readonly runner: R) {
    // No prefix caching: the stepper registers nothing and has no step ends (KvCacheManager.endStep).
    this.cache = new KvCacheManager(runner.layout, { prefixCaching: false });
  }

  /** Runs one step; afterwards each row's sequence holds its new tokens. */
  async step(rows: readonly StepperRow[]): Promise<StepOutput> {
    const out = await this.runner.execute({
      rows: rows.map((r) => ({
        seqId: r.seq.id, start: r.seq.numCached, tokenIds: Int32Array.from(r.tokenIds), blocks: r.seq.blocks, logits: r.logits, sample: r.sample ?? true,
        ...(r.hidden !== undefined ? { hidden: r.hidden } : {}),
      })),
      finishedSeqIds: [],
      preemptedSeqIds: [],
    });
    for (const r of rows) r.seq.numCached += r.tokenIds.length;
    return out;
  }

  /** Ends a sequence: its blocks go back, and the runner drops what it keeps for it. */
  async free(seq: SequenceCache): Promise<void> {
    this.cache.release(seq);
    await this.runner.execute({ rows: [], finishedSeqIds: [seq.id], preemptedSeqIds: [] });
  }
}
