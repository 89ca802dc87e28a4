/**
 * The native runner (native/gs_ort.cc, built into build/gs_ort.node by `npm ci`): an ONNX
 * Runtime session driven through an IoBinding. Unlike the stock binding it can
 * - keep tensors in the session's device memory between runs (`allocate` → a buffer bound by
 *   name at a byte offset, as an input and an output of the same run: in-place KV caches), and
 * - write outputs straight into caller-owned typed arrays (no copy into a new JS buffer);
 * - bind one session's buffer in another session on the same device (`DeviceRef.owner`): the
 *   model's logits left on the device and read there by the sampler graph's session.
 * It links the libonnxruntime.so.1 that onnxruntime-node ships (same runtime, same process-wide
 * environment). Optional: where it did not build, `loadNativeOrt` says why.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { EngineError } from '../../errors.ts';
import { intraOpThreads, sessionCreateError, type Device } from '../session.ts';
import onnxProto from 'onnx-proto';
import { swapAttention, type FusedAttentionSpec } from './attention-graph.ts';
import { swapQ4Nodes, type Int4Kernel } from './q4-graph.ts';

/** ONNX TensorProto element types the runner binds. */
export const OnnxType = { FLOAT: 1, INT32: 6, INT64: 7, FLOAT16: 10 } as const;
export type OnnxTypeValue = (typeof OnnxType)[keyof typeof OnnxType];

/** Host memory: a typed array whose bytes are the tensor (float16 as Uint16Array bits). */
export type HostData = Float32Array | Uint16Array | Int32Array | BigInt64Array;
/** Device memory: a buffer from `NativeSession.allocate`, at a byte offset. */
export interface DeviceRef {
  readonly buffer: number;
  readonly byteOffset: number;
  /** The session that allocated the buffer when it is not the session that runs (same device). */
  readonly owner?: NativeSession;
}
/** One bound tensor: name, element type, shape, and where its bytes are. */
export interface Binding {
  readonly name: string;
  readonly type: OnnxTypeValue;
  readonly dims: readonly number[];
  readonly data: HostData | DeviceRef;
}

type Spec = [string, number, readonly number[], HostData | [number, number] | [number, number, object]];
/** The addon's functions (native/gs_ort.cc). */
export interface Addon {
  version(): string;
  createSession(model: string | [Uint8Array, string], device: Device, deviceId: number, intraOpThreads: number): object;
  inputNames(s: object): string[];
  outputNames(s: object): string[];
  allocate(s: object, bytes: number): number;
  free(s: object, buffer: number): void;
  hostOutputBytes(): number;
  runNanos(): number;
  run(s: object, inputs: Spec[], outputs: Spec[], prepared?: object): void;
  prepare(s: object, inputs: Spec[], outputs: Spec[]): object;
  release(s: object): void;
  /** The kernel MatMulQ4 runs here ('avx512vnni' | 'scalar'); `forceScalar` sets it first. */
  q4Kernel(forceScalar?: boolean): string;
  /** The path PagedAttention takes here ('avx512' | 'scalar'); `forceScalar` sets it first. */
  attentionKernel(forceScalar?: boolean): string;
  /** Bytes of packed weights the process's MatMulQ4 kernels hold (4.5 bits a weight with fp16-exact scales, else 5). */
  q4PackedBytes(): number;
}

const { onnx } = onnxProto;

export const NATIVE_ADDON_PATH = join(import.meta.dirname, '..', '..', '..', 'build', 'gs_ort.node');

let cached: { addon: Addon } | { error: string } | undefined;

/**
 * Bytes every native run in this process has written into host-memory outputs so far (on CUDA,
 * the bytes that crossed from the device); 0 where the addon is not loaded.
 */
export function hostOutputBytes(): number {
  const loaded = loadNativeOrt();
  return 'error' in loaded ? 0 : loaded.addon.hostOutputBytes();
}

/**
 * Milliseconds every native run in this process has spent inside ONNX Runtime so far (its run and
 * the outputs' synchronization; not the binding's own work on the call's arguments); 0 where the
 * addon is not loaded. Benches subtract it from a step's wall time to get the host's share.
 */
export function ortRunMs(): number {
  const loaded = loadNativeOrt();
  return 'error' in loaded ? 0 : loaded.addon.runNanos() / 1e6;
}

/** The addon, or why it cannot be used here (not built, or failed to load). */
export function loadNativeOrt(): { addon: Addon } | { error: string } {
  if (cached) return cached;
  if (!existsSync(NATIVE_ADDON_PATH)) {
    cached = { error: `the native runner is not built (${NATIVE_ADDON_PATH} is missing): run 'node native/build.mjs --strict' to build it and see what is missing (a C++ compiler and Node's headers)` };
  } else {
    try {
      const addon = createRequire(import.meta.url)(NATIVE_ADDON_PATH) as Partial<Addon>;
      // An addon built from older sources would read a buffer of another session as its own.
      cached = typeof addon.hostOutputBytes === 'function' && typeof addon.free === 'function' && typeof addon.prepare === 'function'
        ? { addon: addon as Addon }
        : { error: `the native runner at ${NATIVE_ADDON_PATH} was built from older sources: run 'node native/build.mjs --strict' to rebuild it` };
    } catch (e) {
      cached = { error: `the native runner failed to load: ${(e as Error).message}` };
    }
  }
  return cached;
}

export interface NativeSessionOptions {
  readonly device: Device;
  readonly deviceId?: number;
  /** Threads for one operator; 0 or absent: one per physical core (session.ts intraOpThreads()). */
  readonly intraOpThreads?: number;
  /** CPU int4 matmuls (q4-graph.ts); default `auto`. */
  readonly int4Kernel?: Int4Kernel;
  /** On the CPU: each paged layer's attention as one fused node (attention-graph.ts) where the graph allows; absent: as exported. */
  readonly fusedAttention?: FusedAttentionSpec;
}

/** Bindings made once by `NativeSession.prepare`, bound by its `run`s. */
export interface PreparedBindings {
  readonly session: NativeSession;
  readonly handle: object;
}

export class NativeSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  private released = false;

  /**
   * @param int4Swapped MatMulNBits nodes this session runs with gemma-serve's int4 kernel.
   * @param attentionFused layers whose attention this session runs as one PagedAttention node.
   */
  private constructor(private readonly addon: Addon, private readonly handle: object, readonly device: Device, readonly int4Swapped: number, readonly attentionFused: number) {
    this.inputNames = addon.inputNames(handle);
    this.outputNames = addon.outputNames(handle);
  }

  static create(modelPath: string, opts: NativeSessionOptions): NativeSession {
    const loaded = loadNativeOrt();
    if ('error' in loaded) throw new EngineError(loaded.error, 'native_runner_unavailable', 500);
    const kernel = opts.int4Kernel ?? 'auto';
    const swap = opts.device === 'cpu' && (kernel === 'gemma-serve' || (kernel === 'auto' && loaded.addon.q4Kernel() === 'avx512vnni'));
    const fuse = opts.device === 'cpu' ? opts.fusedAttention : undefined;
    let handle: object;
    let swapped = 0;
    let fused = 0;
    try {
      let model: string | [Uint8Array, string] = modelPath;
      if (swap || fuse !== undefined) {
        const proto = onnx.ModelProto.decode(readFileSync(modelPath));
        if (swap) swapped = swapQ4Nodes(proto);
        if (fuse !== undefined) fused = swapAttention(proto, fuse);
        if (swapped + fused > 0) model = [onnx.ModelProto.encode(proto).finish(), dirname(resolve(modelPath))];
      }
      handle = loaded.addon.createSession(model, opts.device, opts.deviceId ?? 0, intraOpThreads(opts.intraOpThreads));
    } catch (e) {
      throw sessionCreateError(opts.device, modelPath, e);
    }
    return new NativeSession(loaded.addon, handle, opts.device, swapped, fused);
  }

  /** A zeroed (on CPU; uninitialized on CUDA) buffer of `bytes` in the session's device memory, freed with the session. */
  allocate(bytes: number): number {
    return this.addon.allocate(this.handle, bytes);
  }

  /** Gives a buffer back before the session ends (its id is not reused). */
  free(buffer: number): void {
    this.addon.free(this.handle, buffer);
  }

  /**
   * Runs the graph synchronously: inputs read from, outputs written into the bound memory;
   * `prepared` (made by this session's `prepare`) binds its tensors beside them.
   */
  run(inputs: readonly Binding[], outputs: readonly Binding[], prepared?: PreparedBindings): void {
    if (this.released) throw new EngineError('the session was released');
    if (prepared !== undefined && prepared.session !== this) throw new EngineError('prepared bindings of another session');
    this.addon.run(this.handle, inputs.map(NativeSession.spec), outputs.map(NativeSession.spec), prepared?.handle);
  }

  /**
   * Bindings of this session's own buffers (DeviceRef without owner), checked and made into
   * tensors once, for `run` to bind run after run: what stays the same from step to step (a
   * layer's KV cache over the same slots) costs the binding nothing per run. A run refuses them
   * once one of their buffers was freed. Freed with the object (garbage collected).
   */
  prepare(inputs: readonly Binding[], outputs: readonly Binding[]): PreparedBindings {
    if (this.released) throw new EngineError('the session was released');
    return { session: this, handle: this.addon.prepare(this.handle, inputs.map(NativeSession.spec), outputs.map(NativeSession.spec)) };
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.addon.release(this.handle);
  }

  private static spec(b: Binding): Spec {
    if (ArrayBuffer.isView(b.data)) return [b.name, b.type, b.dims, b.data];
    const { buffer, byteOffset, owner } = b.data;
    return [b.name, b.type, b.dims, owner === undefined ? [buffer, byteOffset] : [buffer, byteOffset, owner.handle]];
  }
}
