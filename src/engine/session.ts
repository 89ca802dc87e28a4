/**
 * The only importer of onnxruntime-node: creates the inference session on the chosen
 * execution provider and turns provider failures into one clear message.
 */
import * as ort from 'onnxruntime-node';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { EngineError } from '../errors.ts';

export type Device = 'cpu' | 'cuda';
export type OrtSession = ort.InferenceSession;
export type OrtTensor = ort.Tensor;
export const Tensor = ort.Tensor;

export interface SessionOptions {
  readonly device: Device;
  /** Threads for one operator; 0 or absent: one per physical core (intraOpThreads()). */
  readonly intraOpThreads?: number;
}

/**
 * The intra-op thread count a session is given: `asked` when positive, else one per physical
 * core this process may use (within its CPU affinity and its cgroup's CPU quota). Always a
 * number, never ONNX Runtime's 0: with 0 it counts cores its own way, and on a 2-vCPU VM it
 * counted one, so every step ran on one core (decode ~1.6x slower at batch 8 than with 2 threads:
 * docs/BENCHMARKS.md, "ONNX Runtime's default thread count").
 */
export function intraOpThreads(asked?: number): number {
  if (asked !== undefined && asked > 0) return asked;
  return Math.max(1, Math.min(availableParallelism(), physicalCores() ?? Infinity, cgroupCpus() ?? Infinity));
}

/** The CPUs a cgroup v2 quota allows (`cpu.max`, rounded up: Kubernetes' CPU limit); null: no quota. */
function cgroupCpus(): number | null {
  try {
    const [quota, period] = readFileSync('/sys/fs/cgroup/cpu.max', 'utf8').trim().split(/\s+/);
    const q = Number(quota), p = Number(period);
    return Number.isFinite(q) && q > 0 && p > 0 ? Math.ceil(q / p) : null;
  } catch {
    return null;
  }
}

let cores: number | null | undefined;

/** Physical cores (distinct package and core ids in /proc/cpuinfo); null where it cannot say. */
function physicalCores(): number | null {
  if (cores !== undefined) return cores;
  try {
    const ids = new Set<string>();
    for (const block of readFileSync('/proc/cpuinfo', 'utf8').split(/\n\s*\n/)) {
      const pkg = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1];
      const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
      if (pkg !== undefined && core !== undefined) ids.add(`${pkg}:${core}`);
    }
    cores = ids.size > 0 ? ids.size : null;
  } catch {
    cores = null;
  }
  return cores;
}

export async function createSession(modelPath: string, opts: SessionOptions): Promise<ort.InferenceSession> {
  const providers = opts.device === 'cuda' ? [{ name: 'cuda', deviceId: 0 }] : ['cpu'];
  try {
    return await ort.InferenceSession.create(modelPath, {
      executionProviders: providers,
      graphOptimizationLevel: 'all',
      intraOpNumThreads: intraOpThreads(opts.intraOpThreads),
    });
  } catch (e) {
    throw sessionCreateError(opts.device, modelPath, e);
  }
}

/** What failing to create a session means to the user: a missing CUDA provider, or an unloadable model. */
export function sessionCreateError(device: Device, modelPath: string, e: unknown): EngineError {
  const msg = (e as Error).message;
  if (device === 'cuda') {
    return new EngineError(
      `cannot start the CUDA execution provider (${msg}). Install onnxruntime-node's CUDA binaries on this host ` +
      `(npm run install:cuda in a clone, i.e. ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js; ` +
      `CUDA 12/13 and cuDNN 9 libraries on LD_LIBRARY_PATH), or use --device cpu.`,
      'cuda_unavailable', 500, { cause: e });
  }
  return new EngineError(`cannot load ${modelPath} into ONNX Runtime: ${msg}`, 'model_load_failed', 500, { cause: e });
}
