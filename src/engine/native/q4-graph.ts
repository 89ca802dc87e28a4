/**
 * gemma-serve's int4 matmul kernel (native/q4gemm.cc, the custom operator
 * `ai.gemma_serve.MatMulQ4` that the native runner registers in CPU sessions) takes the inputs
 * and attributes of ONNX Runtime's `com.microsoft.MatMulNBits` for the case every int4 export
 * has: bits 4, block 32, float32 activations and scales, no zero points, accuracy_level 4 (int8
 * activations per block, the same arithmetic). On an AVX-512 VNNI CPU it is faster at batch
 * sizes above 1 (prefill most of all: `bench/q4-kernel.ts`), so the CPU session loads the export's
 * graph with those nodes swapped, in memory; the graph file and its weights stay as exported.
 */
import type { onnx as P } from 'onnx-proto';

export const Q4_DOMAIN = 'ai.gemma_serve';
export const Q4_OP = 'MatMulQ4';
const FLOAT = 1;

/**
 * Which kernel runs int4 matmuls on the CPU: `auto` (gemma-serve's where the CPU has AVX-512
 * VNNI, else ONNX Runtime's), `ort` (MatMulNBits), or `gemma-serve` (always; on a CPU without
 * AVX-512 VNNI that is its plain C++ reference kernel: slow, for checking it).
 */
export type Int4Kernel = 'auto' | 'ort' | 'gemma-serve';
export const INT4_KERNELS: readonly Int4Kernel[] = ['auto', 'ort', 'gemma-serve'];

const intAttr = (node: P.INodeProto, name: string): number | undefined => {
  const a = node.attribute?.find((x) => x.name === name);
  return a?.i === undefined || a.i === null ? undefined : Number(a.i);
};

/** Whether MatMulQ4 computes exactly what this MatMulNBits node does. */
function swappable(node: P.INodeProto, floatInitializers: ReadonlySet<string>): boolean {
  if (node.opType !== 'MatMulNBits' || node.domain !== 'com.microsoft') return false;
  // A, B, scales; zero_points, g_idx and bias absent (or given as empty names)
  const inputs = node.input ?? [];
  if (inputs.length < 3 || inputs.slice(3).some((x) => x !== '') || !floatInitializers.has(inputs[2]!)) return false;
  return intAttr(node, 'bits') === 4 && intAttr(node, 'block_size') === 32 && (intAttr(node, 'accuracy_level') ?? 0) === 4
    && intAttr(node, 'K') !== undefined && intAttr(node, 'N') !== undefined;
}

/** Runs the eligible MatMulNBits nodes of `model` (decoded) by MatMulQ4, in place; how many. */
export function swapQ4Nodes(model: P.IModelProto): number {
  const graph = model.graph!;
  const floatInitializers = new Set((graph.initializer ?? []).filter((t) => t.dataType === FLOAT).map((t) => t.name!));
  let swapped = 0;
  for (const node of graph.node ?? []) {
    if (!swappable(node, floatInitializers)) continue;
    node.opType = Q4_OP;
    node.domain = Q4_DOMAIN;
    node.input = node.input!.slice(0, 3);
    swapped++;
  }
  if (swapped > 0) importDomain(model);
  return swapped;
}

/** Declares gemma-serve's operator domain in `model`'s opset imports (once). */
export function importDomain(model: P.IModelProto): void {
  if (!(model.opsetImport ?? []).some((o) => o.domain === Q4_DOMAIN)) {
    model.opsetImport = [...(model.opsetImport ?? []), { domain: Q4_DOMAIN, version: 1 }];
  }
}
