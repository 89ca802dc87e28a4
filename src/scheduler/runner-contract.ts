/**
 * The contract between the scheduler side and a model runner, in the spirit of vLLM v1's
 * SchedulerOutput → ModelRunnerOutput: each step the runner is handed one plain record
 * (StepPlan: which sequences, which new tokens at which positions, which cache blocks, which
 * logits are wanted, which sequences are gone) and returns the logits asked for (StepOutput).
 * A runner keeps no sequence progress of its own: the scheduler alone advances it after the
 * step. The cache geometry (CacheLayout) is the one thing a runner tells the scheduler side:
 * its storage is sized by the runner (bytes, device), the block accounting mirrors it.
 *
 * Everything here is data and pure functions over it; it imports nothing, so both the
 * scheduler and the runners (src/engine) depend on it and not on each other.
 */

/** Gemma 2's two attention kinds: global layers see every position, sliding ones a window. */
export type LayerKind = 'global' | 'sliding';
export const LAYER_KINDS: readonly LayerKind[] = ['global', 'sliding'];

/**
 * The geometry of a runner's KV storage. Positions are kept in blocks of `blockSize`; a
 * sequence's global blocks cover positions 0..len-1 in order, its sliding blocks form a ring of
 * `ringSlots` positions (position p at view slot p % ringSlots), so a sliding layer never holds
 * more than the window rounded up to a block. Block 0 of each kind is the null block (padding).
 */
export interface CacheLayout {
  /** Positions per block. */
  readonly blockSize: number;
  /** Blocks per kind, the null block 0 included: global and sliding pool sizes. */
  readonly numBlocks: Readonly<Record<LayerKind, number>>;
  /** Positions of a sliding layer's ring: a whole number of blocks >= the sliding window. */
  readonly ringSlots: number;
  /** A cap on one sequence's length below what the blocks hold (a runner with fixed-size slots); absent: none. */
  readonly maxSequenceTokens?: number;
  /**
   * Present when the storage supports prefix caching (kv-cache-manager.ts): blocks may be shared
   * read-only between sequences, and the ring has one block more than the window needs
   * (ringSlots >= slidingWindow + blockSize), so a sequence drops its oldest sliding block at a
   * block boundary instead of overwriting it in place. The runner then reads a row's ring from
   * PlanRow.slidingView when given and writes to PlanRow.blocks.
   */
  readonly prefixCaching?: {
    /** Sliding layers' window W: a query at i sees keys j with i - W < j <= i. */
    readonly slidingWindow: number;
  };
}

/** Blocks of `kind` a sequence of `len` positions holds. */
export function blocksNeeded(layout: CacheLayout, kind: LayerKind, len: number): number {
  const n = Math.ceil(len / layout.blockSize);
  return kind === 'global' ? n : Math.min(n, layout.ringSlots / layout.blockSize);
}

/** Slot index within a sequence's gathered view (its blocks of `kind` end to end) where position `pos` lives. */
export function viewSlot(layout: CacheLayout, kind: LayerKind, pos: number): number {
  return kind === 'global' ? pos : pos % layout.ringSlots;
}

/** Absolute position held by view slot `i` of a sequence with `numCached` positions stored, or -1 (empty). */
export function slotPosition(layout: CacheLayout, kind: LayerKind, numCached: number, i: number): number {
  if (kind === 'global' || numCached <= layout.ringSlots) return i < numCached ? i : -1;
  const last = numCached - 1;
  return last - ((last - i) % layout.ringSlots + layout.ringSlots) % layout.ringSlots;
}

/** One row of a step: one sequence's new tokens. */
export interface PlanRow {
  /** The sequence (the engine's request id); stable across preemptions, never reused. */
  readonly seqId: number;
  /** Positions already stored for this sequence: the new tokens sit at start .. start + n - 1. */
  readonly start: number;
  /** [n] the new tokens' ids, n >= 1. */
  readonly tokenIds: Int32Array;
  /**
   * Per kind, the sequence's block ids in view order ([ceil((start + n) / blockSize)] global;
   * the ring's blocks, sliding), room for the new tokens included. Read during `execute` only:
   * the arrays belong to the scheduler.
   */
  readonly blocks: Readonly<Record<LayerKind, readonly number[]>>;
  /**
   * Prefix caching only, when this step replaced blocks of the ring: the ring as it was before
   * (the blocks the new tokens' queries read, slot positions as slotPosition(start)); the new
   * rows are written to `blocks.sliding`. Absent: `blocks.sliding` is read and written.
   */
  readonly slidingView?: readonly number[];
  /** 'all': logits of every new token (prompt scoring); 'last': of the last one only. */
  readonly logits: 'all' | 'last';
  /** The engine samples from this row's last logits (false: a prefill chunk short of the prompt's end). */
  readonly sample: boolean;
  /**
   * Final hidden states wanted (an embedding's prefill): 'all' of every new token, 'last' of the
   * last one; absent: none. Only a runner with `hiddenSize` is given such rows.
   */
  readonly hidden?: 'all' | 'last';
}

/** What a runner computes in one step. Cache room for every row is already reserved. */
export interface StepPlan {
  /** [numRows] at most one row per sequence; may be empty (the step only frees). */
  readonly rows: readonly PlanRow[];
  /** Sequences ended (finished, aborted, failed) since the last plan: a runner drops what it keeps for them. */
  readonly finishedSeqIds: readonly number[];
  /**
   * Sequences whose cache was taken back since the last plan (preempted): their stored
   * positions are gone and they come back later with start 0; a runner frees their storage but
   * may keep other per-sequence state.
   */
  readonly preemptedSeqIds: readonly number[];
}

/** The logits of a step: row r of the plan owns logits rows [offsets[r], offsets[r + 1]). */
export interface StepOutput {
  /**
   * [offsets[numRows], vocabSize] float32: 'all' rows give n rows, 'last' rows one. Valid until the next `execute` (a runner may reuse it).
   * Empty when `device` is present: the logits were left in device memory.
   */
  readonly logits: Float32Array;
  /** Where the logits stayed in the runner's device memory (Runner.keepLogitsOnDevice) instead of `logits`. */
  readonly device?: DeviceLogits;
  /** [numRows + 1] offsets[0] = 0, ascending. */
  readonly offsets: readonly number[];
  /** Logits per position (the model's vocabulary). */
  readonly vocabSize: number;
  /**
   * Present when a row asked for hidden states: row r owns rows [offsets[r], offsets[r + 1]) of
   * `data` [offsets[numRows], size] float32 ('all' rows n, 'last' rows 1, others 0): the final
   * hidden states (after the final norm, before the LM head). Valid until the next `execute`.
   */
  readonly hidden?: HiddenRows;
}

/**
 * A step's logits left in a runner's device memory: logits row k (plan order, as in
 * StepOutput.logits) is row `rowIndex[k]` of the float32 [numRows, vocabSize] tensor at
 * `byteOffset` in buffer `buffer` of the native session `owner`. Valid until the next `execute` (the
 * runner reuses `rowIndex` and the buffer). Opaque to the scheduler: the
 * engine's sampler binds it in place and copies rows to the host only where it needs them.
 */
export interface DeviceLogits {
  readonly owner: unknown;
  readonly buffer: number;
  readonly byteOffset: number;
  readonly numRows: number;
  readonly rowIndex: Int32Array;
}

/** Hidden states of a step's rows (StepOutput.hidden). */
export interface HiddenRows {
  readonly data: Float32Array;
  /** [numRows + 1] offsets[0] = 0, ascending. */
  readonly offsets: readonly number[];
  /** Floats per position (the model's hidden size). */
  readonly size: number;
}

/** [numRows + 1] where each row's hidden states start in StepOutput.hidden. */
export function hiddenOffsets(rows: readonly PlanRow[]): number[] {
  const offsets = [0];
  for (const r of rows) offsets.push(offsets.at(-1)! + (r.hidden === 'all' ? r.tokenIds.length : r.hidden === 'last' ? 1 : 0));
  return offsets;
}

/** A model runner: the ONNX paged runner, the device-resident slot runner, a scripted one. */
export interface Runner {
  /** Its KV storage's geometry; the scheduler's block accounting is built over it. */
  readonly layout: CacheLayout;
  /** Sequences it can hold at once, where it has such a limit (one cache slot each). */
  readonly maxRunning?: number;
  /** Floats per hidden state when it can return hidden states (PlanRow.hidden); absent: it cannot. */
  readonly hiddenSize?: number;
  /** Int4 matmuls run by gemma-serve's kernel (0 or absent: none). */
  readonly int4Swapped?: number;
  /** Layers whose attention runs as one fused node (0 or absent: none). */
  readonly attentionFused?: number;
  /**
   * From now on, leave the logits in device memory (StepOutput.device, `logits` empty) when the
   * runner runs on `device` ('cpu' | 'cuda'); true when it will. Asked once, before the first step,
   * by a step loop whose sampler reads logits in place; a runner without it always returns `logits`.
   */
  keepLogitsOnDevice?(device: string): boolean;
  /** Runs one step: frees what the plan says, computes its rows, returns their logits. */
  execute(plan: StepPlan): Promise<StepOutput>;
  /** Releases the model (and its storage); no step runs after. */
  release(): Promise<void>;
}
