/**
 * The inference thread's entry: the message protocol only. It loads the runner (the ONNX model,
 * or a scripted one) from workerData, feeds submits, aborts and close from the main thread to
 * the step loop (step-loop.ts), and posts the loop's reports back, one message per step.
 * A constrained submit is compiled first (grammar/, off the HTTP thread; cached): a refusal is
 * the generation's only event; an abort that arrives while it compiles is honoured.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { jsSoftmaxWeights } from './sampling.ts';
import { nativeSoftmaxWeights } from './native/softmax-weights.ts';
import { loadRunner } from './runner.ts';
import { ScriptedRunner } from './scripted-runner.ts';
import { StepLoop } from './step-loop.ts';
import { DeviceSampler } from './device-sampler.ts';
import { DEFAULT_MAX_NUM_BATCHED_TOKENS } from '../scheduler/scheduler.ts';
import type { Runner } from '../scheduler/runner-contract.ts';
import type { FromWorker, ToWorker, WorkerInit } from './types.ts';
import { WorkerGrammars } from './grammar/worker-grammars.ts';

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
      ? ScriptedRunner.load(init.exportDir, init.script, init.kvCacheBytes, init.prefixCaching)
      : await loadRunner(init.exportDir, { device: init.device, kvCacheBytes: init.kvCacheBytes, blockSize: init.blockSize, maxNumSeqs: init.maxNumSeqs, intraOpThreads: init.threads, int4Kernel: init.int4Kernel, attentionKernel: init.attentionKernel, prefixCaching: init.prefixCaching });
  } catch (e) {
    send({ type: 'error', id: null, message: (e as Error).message });
    return;
  }
  const maxNumBatchedTokens = Math.max(init.maxNumBatchedTokens ?? DEFAULT_MAX_NUM_BATCHED_TOKENS, init.maxNumSeqs);
  // A runner with fixed cache slots (the device-resident one) runs at most that many sequences at once.
  const maxNumSeqs = Math.min(init.maxNumSeqs, runner.maxRunning ?? Infinity);
  // The sampler's softmax through ONNX Runtime's vectorized Exp where the native runner is built.
  // The sampler graph on the model's execution provider unless the JS sampler is asked for (or the
  // native runner is not built). On the CPU in one thread, as the softmax-weights session: a second
  // intra-op pool would spin on the cores the model's pool runs on, and on the shared 2-core host
  // one thread sampled no slower than two (BENCHMARKS.md, sampling on the execution provider).
  const sampler = init.sampler === 'js' ? null : DeviceSampler.create({ device: init.device, intraOpThreads: init.device === 'cpu' ? 1 : init.threads });
  const loop = new StepLoop(runner, { maxNumSeqs, maxNumBatchedTokens }, send, nativeSoftmaxWeights() ?? jsSoftmaxWeights, sampler !== null && !('error' in sampler) ? sampler : null, init.minStepMs ?? 0);
  const grammars = new WorkerGrammars(init.exportDir, init.stopIds);
  /** Constrained submits still compiling; true once an abort for one has arrived. */
  const compiling = new Map<number, boolean>();
  port.on('message', (m: ToWorker) => {
    if (m.type === 'submit' && m.constraint === undefined) {
      loop.submit(m, null);
    } else if (m.type === 'submit' && m.constraint !== undefined) {
      compiling.set(m.id, false);
      void grammars.start(m.constraint, m.stopIds).then(
        (g) => {
          const abortedMeanwhile = compiling.get(m.id) === true;
          compiling.delete(m.id);
          if ('param' in g) loop.post({ type: 'error', id: m.id, ...g });
          else if (abortedMeanwhile) { g.dispose(); loop.post({ type: 'finish', id: m.id, reason: 'abort', promptTokens: m.promptIds.length, completionTokens: 0 }); }
          else loop.submit(m, g);
        },
        (e: unknown) => { compiling.delete(m.id); loop.post({ type: 'error', id: m.id, message: (e as Error).message }); });
    } else if (m.type === 'compile') {
      void grammars.check(m.constraint).then(
        (error) => send({ type: 'compiled', id: m.id, ...(error !== null ? { error } : {}) }),
        (e: unknown) => send({ type: 'compiled', id: m.id, error: { message: (e as Error).message, param: m.constraint.param ?? 'response_format' } }));
    } else if (m.type === 'abort') {
      if (compiling.has(m.id)) compiling.set(m.id, true);
      else loop.abort(m.id);
    } else {
      loop.close();
    }
  });
  send({ type: 'ready', maxSequenceTokens: loop.scheduler.cache.maxSequenceTokens(), maxRunning: maxNumSeqs, int4Swapped: runner.int4Swapped ?? 0, attentionFused: runner.attentionFused ?? 0, hiddenSize: runner.hiddenSize ?? null, prefixCaching: loop.scheduler.cache.prefixCaching });
  await loop.run();
  await runner.release();
  if (sampler !== null && !('error' in sampler)) sampler.release();
  grammars.dispose();
  port.close();
}

await main();
