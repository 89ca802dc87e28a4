/**
 * One way to run a graph whose inputs are host arrays and whose outputs are float32: through the
 * native runner (outputs written into buffers reused from run to run, no copy) where it is built,
 * else through the stock onnxruntime-node binding (each output copied into a new array).
 * The paged ModelRunner runs on it.
 */
import { NativeSession, OnnxType, loadNativeOrt, type Binding } from './native/ort-native.ts';
import type { FusedAttentionSpec } from './native/attention-graph.ts';
import type { Int4Kernel } from './native/q4-graph.ts';
import { EngineError } from '../errors.ts';
import { createSession, Tensor, type Device, type OrtSession, type OrtTensor } from './session.ts';

export interface HostInput {
  readonly name: string;
  readonly type: 'int64' | 'float32' | 'float16';
  readonly dims: readonly number[];
  /** float16 as Uint16Array bits. */
  readonly data: BigInt64Array | Float32Array | Uint16Array;
}

/** A float32 output and its shape (known before the run). */
export interface FloatOutput {
  readonly name: string;
  readonly dims: readonly number[];
}

export type Binder = 'native' | 'stock';

export interface GraphSession {
  readonly binder: Binder;
  /** Int4 matmuls run by gemma-serve's kernel instead of MatMulNBits (native/q4gemm.cc; 0 on the stock binding). */
  readonly int4Swapped: number;
  /** Layers whose attention runs as one fused node (native/attnop.cc; 0 on the stock binding). */
  readonly attentionFused: number;
  /** Runs the graph; the outputs by name, valid until the next run. */
  run(inputs: readonly HostInput[], outputs: readonly FloatOutput[]): Promise<Record<string, Float32Array>>;
  release(): Promise<void>;
}

export interface GraphSessionOptions {
  readonly device: Device;
  readonly intraOpThreads?: number;
  /** Default: native where the addon is built, else stock. */
  readonly binder?: Binder;
  /** CPU int4 matmuls on the native binder (default `auto`). */
  readonly int4Kernel?: Int4Kernel;
  /** On the native binder's CPU sessions: each layer's attention as one fused node, where the graph allows. */
  readonly fusedAttention?: FusedAttentionSpec;
}

export async function openGraphSession(modelPath: string, opts: GraphSessionOptions): Promise<GraphSession> {
  const native = loadNativeOrt();
  const binder = opts.binder ?? ('error' in native ? 'stock' : 'native');
  if (binder === 'native') return new NativeGraphSession(NativeSession.create(modelPath, opts));
  if (opts.int4Kernel === 'gemma-serve') {
    throw new EngineError(`int4 kernel 'gemma-serve' runs in the native runner, which ${'error' in native ? `is unavailable: ${native.error}` : 'this session was asked not to use'}`, 'native_runner_unavailable', 500);
  }
  return new StockGraphSession(await createSession(modelPath, opts));
}

const ONNX_TYPE = { int64: OnnxType.INT64, float32: OnnxType.FLOAT, float16: OnnxType.FLOAT16 } as const;
const count = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

class NativeGraphSession implements GraphSession {
  readonly binder = 'native';
  private readonly buffers = new Map<string, Float32Array>();

  constructor(private readonly session: NativeSession) {}

  get int4Swapped(): number {
    return this.session.int4Swapped;
  }

  get attentionFused(): number {
    return this.session.attentionFused;
  }

  async run(inputs: readonly HostInput[], outputs: readonly FloatOutput[]): Promise<Record<string, Float32Array>> {
    const result: Record<string, Float32Array> = {};
    const outBindings: Binding[] = outputs.map((o) => {
      const n = count(o.dims);
      let buf = this.buffers.get(o.name);
      if (buf === undefined || buf.length < n) {
        buf = new Float32Array(Math.max(n, 2 * (buf?.length ?? 0)));
        this.buffers.set(o.name, buf);
      }
      result[o.name] = buf.subarray(0, n);
      return { name: o.name, type: OnnxType.FLOAT, dims: o.dims, data: result[o.name]! };
    });
    this.session.run(inputs.map((i) => ({ name: i.name, type: ONNX_TYPE[i.type], dims: i.dims, data: i.data })), outBindings);
    return result;
  }

  async release(): Promise<void> {
    this.session.release();
  }
}

class StockGraphSession implements GraphSession {
  readonly binder = 'stock';
  readonly int4Swapped = 0;
  readonly attentionFused = 0;

  /** `ort`: the onnxruntime-node session (bench/op-profile.ts times its run). */
  constructor(readonly ort: OrtSession) {}

  async run(inputs: readonly HostInput[], outputs: readonly FloatOutput[]): Promise<Record<string, Float32Array>> {
    const feeds: Record<string, OrtTensor> = {};
    for (const i of inputs) feeds[i.name] = new Tensor(i.type, i.data, i.dims);
    const out = await this.ort.run(feeds, outputs.map((o) => o.name));
    return Object.fromEntries(outputs.map((o) => [o.name, out[o.name]!.data as Float32Array]));
  }

  async release(): Promise<void> {
    await this.ort.release();
  }
}
