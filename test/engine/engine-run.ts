// Test support: one greedy ignore_eos generation through a real Engine, collected; a runner's
// fp16 log-probabilities against the float64 reference.
import type { Engine } from '../../src/engine/engine.ts';
import { logSoftmax } from '../../src/engine/logprobs.ts';
import type { Runner } from '../../src/scheduler/runner-contract.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { Gemma2Reference } from '../reference/gemma2-reference.ts';
import { compareLogprobs, type LogprobDiff } from '../reference/logprob-diff.ts';

export async function greedyIds(engine: Engine, promptIds: readonly number[], maxTokens: number): Promise<{ ids: number[]; reason: string }> {
  const ids: number[] = [];
  let reason = '';
  for await (const e of engine.generate({ promptIds, maxTokens, temperature: 0, ignoreEos: true })) {
    if (e.type === 'token') ids.push(e.tokenId);
    if (e.type === 'finish') reason = e.reason;
  }
  return { ids, reason };
}

/**
 * Log-probabilities of `ids` through a runner (a 9-token prefill, then one token per step)
 * against the float64 reference on the checkpoint's weights rounded to fp16.
 */
export async function fp16ReferenceDiff(r: Runner, checkpointDir: string, ids: readonly number[]): Promise<LogprobDiff> {
const rs = new Stepper(r);
  const seq = rs.cache.newSequence();
  const got: Float64Array[] = [];
  const run = async (tokens: readonly number[]): Promise<void> => {
    rs.cache.reserve(seq, seq.numCached + tokens.length);
    const o = await rs.step([{ seq, tokenIds: tokens, logits: 'all' }]);
    for (let i = 0; i < tokens.length; i++) got.push(Float64Array.from(logSoftmax(o.logits.subarray(i * o.vocabSize, (i + 1) * o.vocabSize))));
  };
  await run(ids.slice(0, 9));
  for (const id of ids.slice(9)) await run([id]);
  await rs.free(seq);
  const ref = Gemma2Reference.fromCheckpoint(checkpointDir);
  ref.roundMatricesToF16();
  return compareLogprobs([got], [ref.logprobs(ids)]);
}
