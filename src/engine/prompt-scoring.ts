/**
 * Prompt logprobs (promptLogprobs): the log-probability of every prompt token after the first,
 * from the logits of the position before it, with the top alternatives. Rows of a sequence that
 * asked for them return logits for every new token until the whole prompt has been scored;
 * positions scored before a preemption are not scored again on recomputation.
 */
import { logSoftmax, topLogprobs } from './logprobs.ts';
import type { Generation } from './generation.ts';
import type { TokenLogprobs } from './types.ts';

/** Whether the sequence's next row should return logits for every new token. */
export function wantsPromptLogits(g: Generation): boolean {
  return g.req.promptLogprobs !== null && g.scored < g.req.promptIds.length;
}

/**
 * Scores positions [start, start + count) of a row whose logits are rows offset.. of `logits`
 * ([rows, vocabSize]). Returns the prompt's entries once they are all scored (once), else null.
 */
export function scorePromptRow(g: Generation, start: number, count: number, logits: Float32Array, offset: number, vocabSize: number): TokenLogprobs[] | null {
  const ids = g.req.promptIds;
  const k = g.req.promptLogprobs ?? 0;
  for (let s = 0; s < count; s++) {
    const pos = start + s;
    if (pos < g.scored || pos + 1 >= ids.length) continue; // already scored before a preemption; or not a prompt position
    const lp = logSoftmax(logits.subarray((offset + s) * vocabSize, (offset + s + 1) * vocabSize));
    g.promptEntries.push({ logprob: lp[ids[pos + 1]!]!, top: k > 0 ? topLogprobs(lp, k) : [] });
    g.scored = pos + 1;
  }
  if (g.scored === ids.length - 1 && start + count >= ids.length) {
    g.scored = ids.length; // sent
    return g.promptEntries;
  }
  return null;
}
