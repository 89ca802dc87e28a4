/** Comparing two runs' log-probabilities ([sequence][position] -> [V]), for the fidelity tests. */
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { argmax } from '../../src/engine/logprobs.ts';

export interface LogprobDiff {
  readonly maxDiff: number;
  readonly meanDiff: number;
  readonly agree: number;
  readonly positions: number;
}

/** max / mean |Δ logprob| over every position and vocabulary entry, and top-1 agreement. */
export function compareLogprobs(got: readonly Float64Array[][], base: readonly Float64Array[][]): LogprobDiff {
  let maxDiff = 0, sumDiff = 0, count = 0, agree = 0, positions = 0;
  got.forEach((rows, s) => rows.forEach((lp, i) => {
    const ref = base[s]![i]!;
    for (let v = 0; v < lp.length; v++) {
      const d = Math.abs(lp[v]! - ref[v]!);
      maxDiff = Math.max(maxDiff, d);
      sumDiff += d;
      count++;
    }
    if (argmax(lp) === argmax(ref)) agree++;
    positions++;
  }));
  return { maxDiff, meanDiff: sumDiff / count, agree, positions };
}

export const describeDiff = (c: LogprobDiff): string =>
  `max |Δ logprob| ${c.maxDiff.toPrecision(3)}, mean |Δ logprob| ${c.meanDiff.toPrecision(3)}, top-1 agreement ${c.agree}/${c.positions} = ${(100 * c.agree / c.positions).toFixed(1)}%`;

/**
 * A random model with Hugging Face's initialization (matrices N(0, 0.02), as make-random
 * writes them; hidden 256) written to `dir`, and seeded token sequences of the given lengths:
 * the model the fidelity bounds are asserted on (the golden fixtures are far more sensitive).
 */
export function hfInitModel(dir: string, lengths: readonly number[]): { readonly checkpointDir: string; readonly sequences: number[][] } {
  const { config } = makeRandomCheckpoint({
    shape: 'tiny', seed: 1, dtype: 'f32', out: dir,
    set: { max_position_embeddings: '256', hidden_size: '256', intermediate_size: '1024', head_dim: '64', query_pre_attn_scalar: '64' },
  });
  let a = 7;
  const next = (): number => 3 + ((a = (Math.imul(a, 1664525) + 1013904223) >>> 0) % (config.vocabSize - 3));
  return { checkpointDir: dir, sequences: lengths.map((n) => Array.from({ length: n }, next)) };
}
