/**
 * The data that crosses the scheduler's boundary, step by step:
 *   request (SequenceSpec) → sequence state (Sequence) → step (SchedulerStep, whose `plan` is
 *   the runner's StepPlan) → the engine runs the plan and samples → the scheduler takes the
 *   sampled tokens (Scheduler.update) → token events.
 * The scheduler owns sequences and the KV cache accounting; it never touches tensors, logits
 * or sampling, so it runs the same against the ONNX model, a scripted model, or nothing.
 */
import type { SequenceCache } from './kv-cache-manager.ts';
import type { StepPlan } from './runner-contract.ts';

/** What the scheduler needs to know of a request. */
export interface SequenceSpec {
  readonly id: number;
  readonly promptIds: readonly number[];
  /** Tokens to generate at most (prompt + maxTokens fits the context: checked before). */
  readonly maxTokens: number;
  /** Lower runs sooner (vLLM's convention); equal priorities are first come, first served. */
  readonly priority: number;
}

export type SequenceStatus = 'waiting' | 'running' | 'finished';

/** A request's state in the scheduler. */
export interface Sequence {
  readonly spec: SequenceSpec;
  /** Sampled tokens, in order. */
  readonly outputIds: number[];
  status: SequenceStatus;
  /** Arrival order, for first come, first served. */
  readonly arrival: number;
  /** Order of the latest admission (preemption takes the most recent first). */
  admitted: number;
  /** The sequence's cache: positions [0, cache.numCached) of prompt ++ output are computed (advanced by Scheduler.update). */
  readonly cache: SequenceCache;
  /** Times its cache was taken back under memory pressure (recomputed afterwards). */
  preemptions: number;
  /** Prompt tokens taken from the prefix cache at its first admission (not computed). */
  cachedTokens: number;
}

/** One row of a step: compute tokens [start, start + count) of prompt ++ output. */
export interface PlannedRow {
  readonly seq: Sequence;
  readonly start: number;
  readonly count: number;
  /** The last computed position is the end of the known tokens: sample the next token from it. */
  readonly sample: boolean;
}

/** What one step computes, in the scheduler's terms. Cache room for every row is already reserved. */
export interface SchedulerStep {
  readonly rows: readonly PlannedRow[];
  /** Sequences whose cache was freed this step to make room (they wait to be recomputed). */
  readonly preempted: readonly Sequence[];
  /** Sequences that can never fit the cache (the engine fails them). */
  readonly unservable: readonly Sequence[];
  /** Sum of the rows' counts (≤ maxNumBatchedTokens). */
  readonly numTokens: number;
  /** The same step as a runner sees it: plan.rows[i] is rows[i]. */
  readonly plan: StepPlan;
}

/** Cache use of one layer kind, in blocks (the null block excluded). */
export interface KindUsage {
  readonly usedBlocks: number;
  readonly totalBlocks: number;
  /** Positions the blocks can hold. */
  readonly usedTokens: number;
  /** Blocks no sequence holds that are kept for prefix reuse (free to evict; not in usedBlocks). */
  readonly cachedBlocks: number;
}

/** The observability hooks: what the metrics issue exposes. */
export interface SchedulerStats {
  readonly running: number;
  readonly waiting: number;
  /** Of the waiting: those that ran before and were preempted. */
  readonly preemptedWaiting: number;
  readonly preemptionsTotal: number;
  readonly cache: { readonly global: KindUsage; readonly sliding: KindUsage };
  /** Prefix cache lookups since start, in prompt tokens (vLLM's prefix_cache_queries / _hits): first admissions only. */
  readonly prefixCache: { readonly queries: number; readonly hits: number };
  /** Rows and tokens of the last step planned. */
  readonly lastStep: { readonly batchSize: number; readonly numTokens: number };
}
