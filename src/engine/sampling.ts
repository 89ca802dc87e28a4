/**
 * Pure sampling: logits processing (repetition / presence / frequency penalties, logit bias)
 * then a draw (greedy at temperature 0, else softmax(logits / T) with top-k, top-p and min-p).
 */
import { argmax } from './logprobs.ts';

export interface SamplingParams {
  readonly temperature: number;
  readonly topP: number;
  /** 0 (or less) disables top-k. */
  readonly topK: number;
  readonly minP: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  /** vLLM semantics: 1 disables; seen tokens' positive logits are divided, negative multiplied. */
  readonly repetitionPenalty: number;
  /** [token id, bias] pairs. */
  readonly logitBias: ReadonlyArray<readonly [number, number]>;
  /**
   * llama.cpp's penalty window (Ollama's repeat_last_n): N > 0 applies all three penalties to
   * the tokens among the last N of prompt and output, presence and frequency counted there
   * too; -1 the same over the whole sequence. Absent or 0: vLLM's semantics above (repetition
   * over every token seen, presence and frequency over the output only).
   */
  readonly penaltyLastN?: number;
}

export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 1, topP: 1, topK: 0, minP: 0, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1, logitBias: [],
};

/**
 * Token history of one sequence: ids seen in prompt + output, and output counts; with a
 * penalty window (SamplingParams.penaltyLastN), the counts of the ids in that window instead.
 */
export class TokenHistory {
  readonly seen = new Set<number>();
  readonly outputCounts = new Map<number, number>();
  /** Counts of the ids in the window (null: no window); what the penalties read when set. */
  readonly windowCounts: Map<number, number> | null;
  /** A bounded window's ids, a ring (the oldest at `next` once full), to evict the oldest. */
  private readonly ring: Int32Array | null;
  private next = 0;
  private filled = 0;

  constructor(promptIds: Iterable<number>, penaltyLastN = 0) {
    this.windowCounts = penaltyLastN === 0 ? null : new Map();
    this.ring = penaltyLastN > 0 ? new Int32Array(penaltyLastN) : null;
    if (this.windowCounts === null) {
      for (const id of promptIds) this.seen.add(id);
    } else {
      for (const id of promptIds) this.slide(id);
    }
  }

  add(id: number): void {
    if (this.windowCounts !== null) { this.slide(id); return; }
    this.seen.add(id);
    this.outputCounts.set(id, (this.outputCounts.get(id) ?? 0) + 1);
  }

  private slide(id: number): void {
    const counts = this.windowCounts!;
    counts.set(id, (counts.get(id) ?? 0) + 1);
    const ring = this.ring;
    if (ring === null) return;
    if (this.filled === ring.length) {
      const old = ring[this.next]!;
      const n = counts.get(old)! - 1;
      if (n === 0) counts.delete(old);
      else counts.set(old, n);
    } else {
      this.filled++;
    }
    ring[this.next] = id;
    this.next = (this.next + 1) % ring.length;
  }
}

/** The processed logits (a copy when anything applies, else `logits` itself). */
export function processLogits(logits: Float32Array, p: SamplingParams, history: TokenHistory | null): Float32Array {
  const rep = p.repetitionPenalty !== 1;
  const pen = p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
  if (!(rep && history) && !(pen && history) && p.logitBias.length === 0) return logits;
  const out = new Float32Array(logits);
  if (history?.windowCounts != null) {
    // llama.cpp's penalties: every id in the window, presence and frequency counted there.
    for (const [id, n] of history.windowCounts) {
      if (id < 0 || id >= out.length) continue;
      let x = out[id]!;
      if (rep) x = x > 0 ? x / p.repetitionPenalty : x * p.repetitionPenalty;
      out[id] = x - p.frequencyPenalty * n - p.presencePenalty;
    }
  } else if (history !== null) {
    if (rep) {
      for (const id of history.seen) {
        if (id < 0 || id >= out.length) continue;
        const x = out[id]!;
        out[id] = x > 0 ? x / p.repetitionPenalty : x * p.repetitionPenalty;
      }
    }
    if (pen) {
      for (const [id, n] of history.outputCounts) {
        if (id < 0 || id >= out.length) continue;
        out[id] = out[id]! - p.frequencyPenalty * n - p.presencePenalty;
      }
    }
  }
  for (const [id, bias] of p.logitBias) if (id >= 0 && id < out.length) out[id] = out[id]! + bias;
  return out;
}

/** Unnormalized softmax weights at temperature T: exp((logits - max) / T), so the largest is exactly 1. */
export type Weights = Float32Array | Float64Array;
export type SoftmaxWeights = (logits: Float32Array, temperature: number) => Weights;

let scratch = new Float64Array(0);
/**
 * The weights in float64 with Math.exp, into a buffer reused across calls (valid until the next
 * call). The native runner's vectorized version (native/softmax-weights.ts) is ~10x faster.
 */
export const jsSoftmaxWeights: SoftmaxWeights = (logits, temperature) => {
  if (scratch.length < logits.length) scratch = new Float64Array(logits.length);
  const out = scratch.subarray(0, logits.length);
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  for (let i = 0; i < logits.length; i++) out[i] = Math.exp((logits[i]! - max) / temperature);
  return out;
};

/**
 * One draw from already processed logits. Without top-k / top-p / min-p the draw walks the
 * vocabulary in index order (no sort). With them, only the candidates any filter could keep
 * are sorted (by probability, then logit, then id: the order of the sampler graph's TopK over
 * the logits, which float32 weights that round equal cannot reorder), a few hundred entries rather than a 256,000-entry
 * vocabulary per token; the kept prefix, and so the token a given random number picks, is the
 * same as sorting everything. `weightsOf` computes the softmax weights (JS float64 by default;
 * the worker passes the native runner's vectorized float32 one where it is built).
 */
export function sampleProcessed(logits: Float32Array, p: SamplingParams, rand: () => number, weightsOf: SoftmaxWeights = jsSoftmaxWeights): number {
  if (p.temperature <= 0) return argmax(logits);
  const probs = weightsOf(logits, p.temperature);
  let sum = 0;
  for (let i = 0; i < probs.length; i++) sum += probs[i]!;
  const topK = p.topK > 0 && p.topK < probs.length ? p.topK : 0;
  if (topK === 0 && p.topP >= 1 && p.minP <= 0) {
    let r = rand() * sum;
    let last = 0;
    for (let i = 0; i < probs.length; i++) {
      if (probs[i]! === 0) continue;
      last = i;
      r -= probs[i]!;
      if (r < 0) return i;
    }
    return last;
  }
  // The top-k set (its mass normalizes top-p), or, without top-k, the whole vocabulary.
  const order = topK > 0 ? topKIndices(probs, logits, topK) : candidatesAbove(probs, logits, sum, p);
  const keptMass = topK > 0 ? order.reduce((a, i) => a + probs[i]!, 0) : sum;
  let keep = order.length;
  if (p.topP < 1) {
    let acc = 0;
    for (let i = 0; i < keep; i++) {
      acc += probs[order[i]!]! / keptMass;
      if (acc >= p.topP) { keep = i + 1; break; }
    }
  }
  if (p.minP > 0) {
    // The most likely token has probs = 1 (before normalization), so the threshold is minP of it.
    const threshold = p.minP * probs[order[0]!]!;
    let k = 1;
    while (k < keep && probs[order[k]!]! >= threshold) k++;
    keep = k;
  }
  let total = 0;
  for (let i = 0; i < keep; i++) total += probs[order[i]!]!;
  let r = rand() * total;
  for (let i = 0; i < keep; i++) {
    r -= probs[order[i]!]!;
    if (r < 0) return order[i]!;
  }
  return order[keep - 1]!;
}

const byProbThenId = (probs: Weights, logits: Float32Array) => (a: number, b: number): number => probs[b]! - probs[a]! || logits[b]! - logits[a]! || a - b;

/** The k most likely ids, sorted (ties by logit, then id, as a full sort would order them). */
function topKIndices(probs: Weights, logits: Float32Array, k: number): number[] {
  // The k-th largest value by a bounded min-heap, then every id at or above it, sorted and cut.
  const heap = new Float64Array(k);
  let n = 0;
  const down = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < n && heap[l]! < heap[m]!) m = l;
      if (r < n && heap[r]! < heap[m]!) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  for (let i = 0; i < probs.length; i++) {
    const x = probs[i]!;
    if (n < k) {
      let j = n++;
      heap[j] = x;
      while (j > 0 && heap[(j - 1) >> 1]! > heap[j]!) { const q = (j - 1) >> 1; [heap[j], heap[q]] = [heap[q]!, heap[j]!]; j = q; }
    } else if (x > heap[0]!) {
      heap[0] = x;
      down(0);
    }
  }
  const kth = heap[0]!;
  const out: number[] = [];
  for (let i = 0; i < probs.length; i++) if (probs[i]! >= kth) out.push(i);
  return out.sort(byProbThenId(probs, logits)).slice(0, k);
}

/**
 * Without top-k: the ids top-p or min-p could keep, sorted. Min-p keeps ids >= minP * max;
 * top-p's nucleus lies above the highest threshold whose mass reaches topP (found by halving
 * from the maximum), so the ids above the larger of those thresholds hold the kept prefix.
 */
function candidatesAbove(probs: Weights, logits: Float32Array, sum: number, p: SamplingParams): number[] {
  const max = 1; // probs are exp(x - max): the largest is exactly 1
  let threshold = p.minP > 0 ? p.minP * max : 0;
  if (p.topP < 1) {
    let t = max;
    for (;;) {
      let mass = 0;
      for (let i = 0; i < probs.length; i++) if (probs[i]! >= t) mass += probs[i]!;
      if (mass >= p.topP * sum || t < 1e-300) break;
      t /= 16;
    }
    threshold = Math.max(threshold, t < 1e-300 ? 0 : t);
  }
  const out: number[] = [];
  for (let i = 0; i < probs.length; i++) if (probs[i]! >= threshold && probs[i]! > 0) out.push(i);
  return out.sort(byProbThenId(probs, logits));
}

/** processLogits then sampleProcessed. */
export function sample(logits: Float32Array, p: SamplingParams, rand: () => number, history: TokenHistory | null = null): number {
  return sampleProcessed(processLogits(logits, p, history), p, rand);
}
