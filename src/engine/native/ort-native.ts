/**
 * The native runner (native/gs_ort.cc, built into build/gs_ort.node by `npm ci`): an ONNX
 * Runtime session driven through an IoBinding. Unlike the stock binding it can
 * - keep tensors in the session's device memory between runs (`allocate` → a buffer bound by
 *   name at a byte offset, as an input and an output of the same run: in-place KV caches), and
 * - write outputs straight into caller-owned typed arrays (no copy into a new JS buffer).
 * It links the libonnxruntime.so.1 that onnxruntime-node ships (same runtime, same process-wide
 * environment). Optional: where it did not build, `loadNativeOrt` says why.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { EngineError } from '../../errors.ts';
import { sessionCreateError, type Device } from '../session.ts';

/** ONNX TensorProto element types the runner binds. */
export const OnnxType = { FLOAT: 1, INT32: 6, INT64: 7, FLOAT16: 10 } as const;
export type OnnxTypeValue = (typeof OnnxType)[keyof typeof OnnxType];

/** Host memory: a typed array whose bytes are the tensor (float16 as Uint16Array bits). */
export type HostData = Float32Array | Uint16Array | Int32Array | BigInt64Array;
/** Device memory: a buffer from `NativeSession.allocate`, at a byte offset. */
export interface DeviceRef {
  readonly buffer: number;
  readonly byteOffset: number;
}
/** One bound tensor: name, element type, shape, and where its bytes are. */
export interface Binding {
  readonly name: string;
  readonly type: OnnxTypeValue;
  readonly dims: readonly number[];
  readonly data: HostData | DeviceRef;
}

type Spec = [string, number, readonly number[], HostData | [number, number]];
interface Addon {
  version(): string;
  createSession(path: string, device: Device, deviceId: number, intraOpThreads: number): object;
  inputNames(s: object): string[];
  outputNames(s: object): string[];
  allocate(s: object, bytes: number): number;
  run(s: object, inputs: Spec[], outputs: Spec[]): void;
  release(s: object): void;
}

export const NATIVE_ADDON_PATH = join(import.meta.dirname, '..', '..', '..', 'build', 'gs_ort.node');

let cached: { addon: Addon } | { error: string } | undefined;

/** The addon, or why it cannot be used here (not built, or failed to load). */
export function loadNativeOrt(): { addon: Addon } | { error: string } {
  if (cached) return cached;
  if (!existsSync(NATIVE_ADDON_PATH)) {
    cached = { error: `the native runner is not built (${NATIVE_ADDON_PATH} is missing): run 'node native/build.mjs --strict' to build it and see what is missing (a C++ compiler and Node's headers)` };
  } else {
    try {
      cached = { addon: createRequire(import.meta.url)(NATIVE_ADDON_PATH) as Addon };
    } catch (e) {
      cached = { error: `the native runner failed to load: ${(e as Error).message}` };
    }
  }
  return cached;
}

export interface NativeSessionOptions {
  readonly device: Device;
  readonly deviceId?: number;
  /** Threads for one operator; 0 lets ORT choose. */
  readonly intraOpThreads?: number;
}

export class NativeSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  private released = false;

  private constructor(private readonly addon: Addon, private readonly handle: object, readonly device: Device) {
    this.inputNames = addon.inputNames(handle);
    this.outputNames = addon.outputNames(handle);
  }

  static create(modelPath: string, opts: NativeSessionOptions): NativeSession {
    const loaded = loadNativeOrt();
    if ('error' in loaded) throw new EngineError(loaded.error, 'native_runner_unavailable', 500);
    let handle: object;
    try {
      handle = loaded.addon.createSession(modelPath, opts.device, opts.deviceId ?? 0, opts.intraOpThreads ?? 0);
    } catch (e) {
      throw sessionCreateError(opts.device, modelPath, e);
    }
    return new NativeSession(loaded.addon, handle, opts.device);
  }

  /** A zeroed (on CPU; uninitialized on CUDA) buffer of `bytes` in the session's device memory, freed with the session. */
  allocate(bytes: number): number {
    return this.addon.allocate(this.handle, bytes);
  }

  /** Runs the graph synchronously: inputs read from, outputs written into the bound memory. */
  run(inputs: readonly Binding[], outputs: readonly Binding[]): void {
    if (this.released) throw new EngineError('the session was released');
    this.addon.run(this.handle, inputs.map(toSpec), outputs.map(toSpec));
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.addon.release(this.handle);
  }
}

function toSpec(b: Binding): Spec {
  const data = ArrayBuffer.isView(b.data) ? b.data : [(b.data as DeviceRef).buffer, (b.data as DeviceRef).byteOffset] as [number, number];
  return [b.name, b.type, b.dims, data];
}
