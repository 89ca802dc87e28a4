/**
 * A small, pure ONNX graph builder over the onnx-proto protobuf classes. Builders take input
 * names and return output names; node names follow the graph path
 * (`/model/layers.0/attn/q_proj`), as onnxruntime-genai's builder does. Large initializers
 * live in an external data file (see export/weight-file.ts); small constants are inlined.
 * Outside export/ because the runtime builds small graphs with it too (native/softmax-weights.ts).
 */
import onnxProto from 'onnx-proto';
import type { onnx as P } from 'onnx-proto';

const { onnx } = onnxProto;

/** ONNX TensorProto.DataType values used here. */
export const DType = { FLOAT: 1, UINT8: 2, INT32: 6, INT64: 7, BOOL: 9, FLOAT16: 10 } as const;
export type DTypeValue = (typeof DType)[keyof typeof DType];

/** number → INT, number[] → INTS, string → STRING, {f} → FLOAT (explicit: 1.0 is a float). */
export type AttrValue = number | string | readonly number[] | { readonly f: number };
export type Dim = number | string;

/** Where an external initializer's bytes are in the data file. */
export interface ExternalRef {
  readonly location: string;
  readonly offset: number;
  readonly length: number;
}

export class GraphBuilder {
  private readonly nodes: P.INodeProto[] = [];
  private readonly initializers: P.ITensorProto[] = [];
  private readonly inputs: P.IValueInfoProto[] = [];
  private readonly outputs: P.IValueInfoProto[] = [];
  private readonly usedNames = new Set<string>();
  private readonly constCache = new Map<string, string>();

  /**
   * Adds a node; returns its output names (`numOutputs` of them, named after the node, except
   * where `outputNames` gives one: a graph output the node must produce itself, see namedOutput).
   */
  op(opType: string, name: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, numOutputs = 1, domain = '', outputNames: readonly (string | null)[] = []): string[] {
    const nodeName = this.unique(name);
    const outs = Array.from({ length: numOutputs }, (_, i) => outputNames[i] ?? `${nodeName}/output_${i}`);
    this.nodes.push({
      opType, name: nodeName, domain, input: [...inputs], output: outs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outs;
  }

  /** One-output node. */
  op1(opType: string, name: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, domain = ''): string {
    return this.op(opType, name, inputs, attrs, 1, domain)[0]!;
  }

  /** Renames a value to a graph output name by an Identity node and declares it. */
  output(value: string, name: string, dtype: DTypeValue, dims: readonly Dim[]): void {
    this.nodes.push({ opType: 'Identity', name: this.unique(`/output/${name}`), input: [value], output: [name] });
    this.outputs.push(valueInfo(name, dtype, dims));
  }

  /**
   * Declares a value a node already produces under `name` (see `op`'s outputNames) as a graph
   * output, with no Identity in between: for a kernel that updates an output in place when the
   * caller binds it to the same memory as an input (GroupQueryAttention's present KV).
   */
  namedOutput(name: string, dtype: DTypeValue, dims: readonly Dim[]): void {
    this.outputs.push(valueInfo(name, dtype, dims));
  }

  input(name: string, dtype: DTypeValue, dims: readonly Dim[]): string {
    this.inputs.push(valueInfo(name, dtype, dims));
    return name;
  }

  /** A small constant tensor, stored inline and deduplicated by value. */
  constant(values: readonly number[], dtype: typeof DType.FLOAT | typeof DType.INT64, dims: readonly number[] = [values.length]): string {
    const key = `${dtype}:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.unique(`/const/${dtype === DType.FLOAT ? 'f' : 'i'}${this.constCache.size}`);
    const raw = dtype === DType.FLOAT ? new Uint8Array(Float32Array.from(values).buffer) : new Uint8Array(BigInt64Array.from(values, (v) => BigInt(v)).buffer);
    this.initializers.push({ name, dims: [...dims], dataType: dtype, rawData: raw });
    this.constCache.set(key, name);
    return name;
  }

  /** A weight whose bytes live in the external data file. */
  externalInitializer(name: string, dtype: DTypeValue, dims: readonly number[], ref: ExternalRef): string {
    this.initializers.push({
      name, dims: [...dims], dataType: dtype, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: ref.location },
        { key: 'offset', value: String(ref.offset) },
        { key: 'length', value: String(ref.length) },
      ],
    });
    return name;
  }

  /** A weight whose shape is declared but has no data (shape-only export of big models). */
  emptyInitializer(name: string, dtype: DTypeValue, dims: readonly number[]): string {
    this.initializers.push({ name, dims: [...dims], dataType: dtype });
    return name;
  }

  /** Serializes the model (ir_version 10, opset 21 + com.microsoft 1, + version 1 of any other domain its nodes use). */
  encode(graphName: string, metadata: Record<string, string> = {}): Uint8Array {
    const others = [...new Set(this.nodes.map((n) => n.domain ?? ''))].filter((d) => d !== '' && d !== 'com.microsoft');
    const model = onnx.ModelProto.create({
      irVersion: 10,
      producerName: 'gemma-serve',
      opsetImport: [{ domain: '', version: 21 }, { domain: 'com.microsoft', version: 1 }, ...others.map((domain) => ({ domain, version: 1 }))],
      metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
      graph: {
        name: graphName, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }

  get numNodes(): number {
    return this.nodes.length;
  }

  private unique(name: string): string {
    let n = name;
    for (let i = 1; this.usedNames.has(n); i++) n = `${name}_${i}`;
    this.usedNames.add(n);
    return n;
  }
}

function attribute(name: string, v: AttrValue): P.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === 'number') return { name, type: T.INT, i: v };
  if ('f' in v) return { name, type: T.FLOAT, f: v.f };
  return { name, type: T.INTS, ints: [...(v as readonly number[])] };
}

function valueInfo(name: string, dtype: DTypeValue, dims: readonly Dim[]): P.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType: dtype, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}
