/**
 * Sampling the next token of a step's row that reached its sequence's last known token:
 * min_tokens masking of the stop ids, the logits processors and the sampler (sampling.ts,
 * greedy at temperature 0), and the token's logprobs when asked. The scheduler appends the
 * token (Scheduler.update); whether it ends the sequence is the step loop's call.
 */
import { logSoftmax, topLogprobs } from './logprobs.ts';
import { processLogits, sampleProcessed, type SoftmaxWeights } from './sampling.ts';
import type { Generation } from './generation.ts';
import type { TokenLogprobs } from './types.ts';

export interface SampledToken {
  readonly tokenId: number;
  /** Absent when not asked, or when the token is a stop id (it is never sent). */
  readonly logprobs?: TokenLogprobs;
}

/**
 * Samples from `row` ([vocabSize] logits, masked in place) for a sequence that has generated
 * `numOutput` tokens. `rand`: the sequence's generator, or the uniform the sampler graph already
 * drew for this row (a row it hands back, device-sampler.ts).
 */
export function sampleRow(g: Generation, numOutput: number, row: Float32Array, weightsOf: SoftmaxWeights, rand: () => number = g.rand): SampledToken {
  const r = g.req;
  if (numOutput < r.minTokens) for (const id of r.stopIds) if (id >= 0 && id < row.length) row[id] = -Infinity;
  const logits = processLogits(row, r.sampling, g.history);
  const tokenId = sampleProcessed(logits, r.sampling, rand, weightsOf);
  g.history.add(tokenId);
  if (r.logprobs === null || g.stop.has(tokenId)) return { tokenId };
  const lp = logSoftmax(logits);
  return { tokenId, logprobs: { logprob: lp[tokenId]!, top: r.logprobs > 0 ? topLogprobs(lp, r.logprobs) : [] } };
}
