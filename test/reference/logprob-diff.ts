/** Comparing two runs' log-probabilities ([sequence][position] -> [V]), for the fidelity tests. */
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
