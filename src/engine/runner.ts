/**
 * Picks the runner for an export: the stock-binding ModelRunner for the 'paged' layout (host
 * block pools, CPU), the native SlotRunner for the 'gqa' layout (KV cache resident in the
 * session's device memory). Both turn StepRow[] into StepLogits over the same KvCache
 * accounting, so the worker and the scheduler do not know which one runs.
 */
import { manifestAttention, readManifest } from './manifest.ts';
import { ModelRunner, type ModelRunnerOptions } from './model-runner.ts';
import { SlotRunner } from './slot-runner.ts';
import { EngineError } from '../errors.ts';

/** What the worker drives (a model runner or a scripted one). `maxRunning`: sequences it can hold at once, where it has such a limit. */
export type StepRunner = Pick<ModelRunner, 'cache' | 'step' | 'release'> & { readonly maxRunning?: number; readonly int4Swapped?: number };
/** A runner over a real model. */
export type Runner = StepRunner & Pick<ModelRunner, 'config'>;

export async function loadRunner(exportDir: string, opts: ModelRunnerOptions = {}): Promise<Runner> {
  const attention = manifestAttention(readManifest(exportDir).manifest);
  if (attention === 'gqa') return SlotRunner.load(exportDir, opts);
  if (opts.device === 'cuda') {
    throw new EngineError(
      `${exportDir} is a 'paged' export, whose KV cache lives on the host and would cross the bus twice every step; ` +
      `for --device cuda serve the checkpoint itself (it is exported for CUDA on first use) or an export made with ` +
      `'gemma-serve export --attention gqa --dtype fp16'`, 'export_not_for_cuda', 400);
  }
  return ModelRunner.load(exportDir, opts);
}
