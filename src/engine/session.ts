/**
 * The only importer of onnxruntime-node: creates the inference session on the chosen
 * execution provider and turns provider failures into one clear message.
 */
import * as ort from 'onnxruntime-node';
import { EngineError } from '../errors.ts';

export type Device = 'cpu' | 'cuda';
export type OrtSession = ort.InferenceSession;
export type OrtTensor = ort.Tensor;
export const Tensor = ort.Tensor;

export interface SessionOptions {
  readonly device: Device;
  /** Threads for one operator; 0 lets ORT choose (one per core). */
  readonly intraOpThreads?: number;
}

export async function createSession(modelPath: string, opts: SessionOptions): Promise<ort.InferenceSession> {
  const providers = opts.device === 'cuda' ? [{ name: 'cuda', deviceId: 0 }] : ['cpu'];
  try {
    return await ort.InferenceSession.create(modelPath, {
      executionProviders: providers,
      graphOptimizationLevel: 'all',
      intraOpNumThreads: opts.intraOpThreads ?? 0,
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
