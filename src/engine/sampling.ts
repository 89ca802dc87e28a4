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
}

export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 1, topP: 1, topK: 0, minP: 0, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1, logitBias: [],
};

/** Token history of one sequence: ids seen in prompt + output, and output counts. */
export class TokenHistory {
  readonly seen = new Set<number>();
  readonly outputCounts = new Map<number, number>();
  constructor(promptIds: Iterable<number>) { for (const id of promptIds) this.seen.add(id); }
  add(id: number): void {
    this.seen.add(id);
    this.outputCounts.set(id, (this.outputCounts.get(id) ?? 0) + 1);
  }
}

/** The processed logits (a copy when anything applies, else `logits` itself). */
export function processLogits(logits: Float32Array, p: SamplingParams, history: TokenHistory | null): Float32Array {
  const rep = p.repetitionPenalty !== 1;
  const pen = p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
  if (!(rep && history) && !(pen && history) && p.logitBias.length === 0) return logits;
  const out = new Float32Array(logits);
  if (history !== null) {
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

/** One draw from already processed logits. */
export function sampleProcessed(logits: Float32Array, p: SamplingParams, rand: () => number): number {
  if (p.temperature <= 0) return argmax(logits);
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp((logits[i]! - max) / p.temperature);
    probs[i] = e;
    sum += e;
  }
  const order = Array.from(probs.keys()).sort((a, b) => probs[b]! - probs[a]! || a - b);
  let keep = order.length;
  if (p.topK > 0) keep = Math.min(keep, p.topK);
  if (p.topP < 1) {
    let kept = 0;
    for (let i = 0; i < keep; i++) kept += probs[order[i]!]!;
    let acc = 0;
    for (let i = 0; i < keep; i++) {
      acc += probs[order[i]!]! / kept;
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

/** processLogits then sampleProcessed. */
export function sample(logits: Float32Array, p: SamplingParams, rand: () => number, history: TokenHistory | null = null): number {
  return sampleProcessed(processLogits(logits, p, history), p, rand);
}
