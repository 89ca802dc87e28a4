/**
 * `gemma-serve score --model DIR --ids 2,651,1234 [--top K]`: for every input position, the
 * log-probabilities of the next token as JSON. DIR may be a checkpoint (exported on the fly
 * and cached) or an exported model; with --ids no tokenizer is needed. This is how an export
 * is compared with Hugging Face, and how the numerics are checked.
 */
import { resolveModel, defaultDataDir } from '../engine/resolve-model.ts';
import { loadRunner } from '../engine/runner.ts';
import { Stepper } from '../engine/stepper.ts';
import { logSoftmax, topLogprobs } from '../engine/logprobs.ts';
import { UsageError, parseFlags } from './usage.ts';
import { InvalidRequestError } from '../errors.ts';

export async function score(argv: string[]): Promise<number> {
  const values = parseFlags('score', argv, {
    model: { type: 'string' },
    ids: { type: 'string' },
    top: { type: 'string', default: '5' },
    device: { type: 'string', default: 'cpu' },
  });
  if (values.model === undefined) throw new UsageError('score: --model is required');
  if (values.ids === undefined) throw new UsageError('score: --ids is required (comma-separated token ids)');
  const ids = values.ids.split(',').map((s) => Number(s.trim()));
  if (ids.length === 0 || ids.some((v) => !Number.isInteger(v) || v < 0)) throw new UsageError('score: --ids must be comma-separated non-negative integers');
  const top = Number(values.top);
  if (!Number.isInteger(top) || top < 0) throw new UsageError('score: --top must be a non-negative integer (0 = whole vocabulary)');
  if (values.device !== 'cpu' && values.device !== 'cuda') throw new UsageError('score: --device must be cpu or cuda');

  const dir = await resolveModel(values.model, defaultDataDir(), undefined, values.device);
  const runner = await loadRunner(dir, { device: values.device, kvCacheTokens: ids.length });
  try {
    const { vocabSize, maxPositions } = runner.config;
    const bad = ids.find((v) => v >= vocabSize);
    if (bad !== undefined) throw new InvalidRequestError(`token id ${bad} is outside the vocabulary (size ${vocabSize})`, 'ids');
    if (ids.length > maxPositions) throw new InvalidRequestError(`${ids.length} ids exceed the model's context of ${maxPositions} tokens`, 'ids');
    const stepper = new Stepper(runner);
    const seq = stepper.cache.newSequence();
    const positions: { top: { id: number; logprob: number }[] }[] = [];
    // Prefill in chunks so long inputs do not need one huge activation.
    const chunk = 512;
    for (let start = 0; start < ids.length; start += chunk) {
      const part = ids.slice(start, start + chunk);
      if (!stepper.cache.reserve(seq, start + part.length)) throw new InvalidRequestError('the input does not fit the KV cache', 'ids');
      const out = await stepper.step([{ seq, tokenIds: part, logits: 'all' }]);
      for (let i = 0; i < part.length; i++) {
        const lp = logSoftmax(out.logits.subarray(i * vocabSize, (i + 1) * vocabSize));
        positions.push({ top: topLogprobs(lp, top) });
      }
    }
    process.stdout.write(`${JSON.stringify({ input_ids: ids, positions })}\n`);
    return 0;
  } finally {
    await runner.release();
  }
}
