/**
 * The inference thread's entry: the message protocol only. It loads the runner (the ONNX model,
 * or a scripted one) from workerData, feeds submits, aborts and close from the main thread to
 * the step loop (step-loop.ts), and posts the loop's reports back, one message per step.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { jsSoftmaxWeights } from './sampling.ts';
import { nativeSoftmaxWeights } from './native/softmax-weights.ts';
import { loadRunner } from './runner.ts';
import { ScriptedRunner } from './scripted-runner.ts';
import { StepLoop } from './step-loop.ts';
import { DEFAULT_MAX_NUM_BATCHED_TOKENS } from '../scheduler/scheduler.ts';
import type { Runner } from '../scheduler/runner-contract.ts';
import type { FromWorker, ToWorker, WorkerInit } from './types.ts';

/** For importers of the boundary types from here before they moved to types.ts (src/server/routes/completions.ts). */
export type { TokenLogprobs } from './types.ts';

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('worker.ts must run in a worker thread');
  const init = workerData as WorkerInit;
  const send = (m: FromWorker): void => port.postMessage(m);
  let runner: Runner;
  try {
    runner = init.script !== undefined
      ? ScriptedRunner.load(init.exportDir, init.script, init.kvCacheBytes)
      : await loadRunner(init.exportDir, { device: init.device, kvCacheBytes: init.kvCacheBytes, blockSize: init.blockSize, maxNumSeqs: init.maxNumSeqs, intraOpThreads: init.threads, int4Kernel: init.int4Kernel });
  } catch (e) {
    send({ type: 'error', id: null, message: (e as Error).message });
    return;
  }
  const maxNumBatchedTokens = Math.max(init.maxNumBatchedTokens ?? DEFAULT_MAX_NUM_BATCHED_TOKENS, init.maxNumSeqs);
  // A runner with fixed cache slots (the device-resident one) runs at most that many sequences at once.
  const maxNumSeqs = Math.min(init.maxNumSeqs, runner.maxRunning ?? Infinity);
  // The sampler's softmax through ONNX Runtime's vectorized Exp where the native runner is built.
  const loop = new StepLoop(runner, { maxNumSeqs, maxNumBatchedTokens }, send, nativeSoftmaxWeights() ?? jsSoftmaxWeights);
  port.on('message', (m: ToWorker) => {
    if (m.type === 'submit') loop.submit(m);
    else if (m.type === 'abort') loop.abort(m.id);
    else loop.close();
  });
  send({ type: 'ready', maxSequenceTokens: loop.scheduler.cache.maxSequenceTokens(), maxRunning: maxNumSeqs, int4Swapped: runner.int4Swapped ?? 0 });
  await loop.run();
  await runner.release();
  port.close();
}

await main();
