/**
 * Log-probabilities from a row of logits, in float64 (the score command and `logprobs`).
 */

/** log_softmax of `row` into a Float64Array. */
export function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  const lz = max + Math.log(sum);
  const out = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = row[i]! - lz;
  return out;
}

/** Index of the largest value (lowest index on ties). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** The `k` best (id, logprob) pairs, by descending logprob; k = 0 means all. */
export function topLogprobs(lp: Float64Array, k: number): { id: number; logprob: number }[] {
  const ids = Array.from({ length: lp.length }, (_, i) => i);
  ids.sort((a, b) => lp[b]! - lp[a]! || a - b);
  return ids.slice(0, k === 0 ? lp.length : k).map((id) => ({ id, logprob: lp[id]! }));
}
