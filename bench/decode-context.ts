/**
 * Decode step time of one sequence against its context length: shows whether a step costs
 * O(context) attention only, or also a copy of the cache. The cache is filled by reserving
 * blocks and marking positions as cached (their contents do not change the step's cost), so a
 * 4096-token context does not need a 4096-token prefill on a 2-core CPU.
 *
 *   npx tsx bench/decode-context.ts EXPORT_DIR [contexts=128,1024,4096] [steps=8] [attention-kernel=auto|ort]
 * Prints one JSON line per context: median / min step milliseconds and tokens/s.
 */
import { ModelRunner } from '../src/engine/model-runner.ts';
import { Stepper } from '../src/engine/stepper.ts';
import { argmax } from '../src/engine/logprobs.ts';

const [dir, ctxArg = '128,1024,4096', stepsArg = '8', attentionKernel = 'auto'] = process.argv.slice(2);
if (!dir || (attentionKernel !== 'auto' && attentionKernel !== 'ort')) throw new Error('usage: bench/decode-context.ts EXPORT_DIR [contexts] [steps] [auto|ort]');
const contexts = ctxArg.split(',').map(Number);
const steps = Number(stepsArg);
const t0 = performance.now();
const runner = await ModelRunner.load(dir, { kvCacheTokens: Math.max(...contexts) + steps + 16, attentionKernel });
const stepper = new Stepper(runner);
console.log(JSON.stringify({ load_s: +((performance.now() - t0) / 1000).toFixed(2), attentionFused: runner.attentionFused, kvDtype: runner.kv.dtype }));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const ctx of contexts) {
  const seq = stepper.cache.newSequence();
  stepper.cache.reserve(seq, ctx);
  seq.numCached = ctx; // positions 0..ctx-1 count as cached
  let token = 2;
  const times: number[] = [];
  for (let i = 0; i < steps + 1; i++) {
    stepper.cache.reserve(seq, seq.numCached + 1);
    const s = performance.now();
    const out = await stepper.step([{ seq, tokenIds: [token], logits: 'last' }]);
    if (i > 0) times.push(performance.now() - s); // the first step warms up
    token = argmax(out.logits);
  }
  await stepper.free(seq);
  const med = median(times);
  console.log(JSON.stringify({ context: ctx, steps, median_ms: +med.toFixed(1), min_ms: +Math.min(...times).toFixed(1), tokens_per_s: +(1000 / med).toFixed(2) }));
}
await runner.release();
