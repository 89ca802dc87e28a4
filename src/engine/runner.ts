/**
 * Picks the runner for an export: the stock-binding ModelRunner for the 'paged' layout (host
 * block pools, CPU), the native SlotRunner for the 'gqa' layout (KV cache resident in the
 * session's device memory). Both implement the Runner contract (src/scheduler/runner-contract.ts),
 * so the worker and the scheduler do not know which one runs.
 */
import { manifestAttention, readManifest } from './manifest.ts';
import { ModelRunner, type ModelRunnerOptions } from './model-runner.ts';
import { SlotRunner } from './slot-runner.ts';
import type { Runner } from '../scheduler/runner-contract.ts';
import type { Gemma2Config } from '../checkpoint/config.ts';
import { EngineError } from '../errors.ts';

/** A runner over a real model (its config known). */
export type ModelBackedRunner = Runner & { readonly config: Gemma2Config };

export async function loadRunner(exportDir: string, opts: ModelRunnerOptions = {}): Promise<ModelBackedRunner> {
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
