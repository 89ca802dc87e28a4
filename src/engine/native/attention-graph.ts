/**
 * gemma-serve's fused attention (native/attnop.cc, the custom operator
 * `ai.gemma_serve.PagedAttention` that the native runner registers in CPU sessions): one node per
 * layer in place of the ~40 of the paged layout's attention (rotary, masks, the block gather,
 * layout, scores, soft-cap, softmax, p·v; export/paged-attention.ts). At batch 1 those small
 * nodes cost about as much as a sixth of the weights' reading; the fused op reads keys and values
 * where they lie in the pool. The CPU session loads the export's graph with each layer's
 * attention swapped, in memory, as it does for the int4 matmuls (q4-graph.ts); the file stays as
 * exported, and the stock binding (or `attentionKernel: 'ort'`) runs it as it is.
 */
import type { onnx as P } from 'onnx-proto';
import type { Gemma2Config } from '../../checkpoint/config.ts';
import * as io from '../graph-io.ts';
import { importDomain, Q4_DOMAIN } from './q4-graph.ts';

export const ATTENTION_OP = 'PagedAttention';
const FLOAT = 1;
const FLOAT16 = 10;
const ATTR_FLOAT = 1;
const ATTR_INT = 2;

/**
 * Which attention a CPU session of the native runner runs: `auto` (gemma-serve's fused op where
 * the export allows it: the paged layout, with a float32 or float16 cache) or `ort` (the exported nodes).
 */
export type AttentionKernel = 'auto' | 'ort';
export const ATTENTION_KERNELS: readonly AttentionKernel[] = ['auto', 'ort'];

/** What the fused op needs of the model beyond the graph: per-layer attributes. */
export interface FusedAttentionSpec {
  readonly numHeads: number;
  readonly numKvHeads: number;
  /** query_pre_attn_scalar^-0.5 */
  readonly scale: number;
  /** attn_logit_softcapping, 0 for none */
  readonly softcap: number;
  /** the sliding window of each layer, 0 for a global layer */
  readonly windows: readonly number[];
}

export function fusedAttentionSpec(cfg: Gemma2Config): FusedAttentionSpec {
  return {
    numHeads: cfg.numHeads,
    numKvHeads: cfg.numKvHeads,
    scale: Math.pow(cfg.queryPreAttnScalar, -0.5),
    softcap: cfg.attnLogitSoftcap ?? 0,
    windows: cfg.slidingLayers.map((s) => (s ? cfg.slidingWindow : 0)),
  };
}

// Values of the paged graph the fused op reads or replaces, by the names the exporter gives them
// (onnx-builder.ts: a node's output is `${node}/output_${i}`).
const out = (node: string): string => `${node}/output_0`;
const ROPE_COS = out('/model/rope/cos');
const ROPE_SIN = out('/model/rope/sin');
const QPOS = out('/model/step/qpos');

/**
 * Swaps each layer's attention for one PagedAttention node, in `model` (decoded), where every
 * layer has the paged layout's nodes and a float32 or float16 cache (the op widens float16 pool
 * entries as it reads them, as the graph's Cast of the gathered cache does); returns how many layers were swapped
 * (0: the model is left as it was). The nodes only the old attention used are removed.
 */
export function swapAttention(model: P.IModelProto, spec: FusedAttentionSpec): number {
  const graph = model.graph!;
  const nodes = graph.node ?? [];
  const producer = new Map<string, P.INodeProto>();
  for (const n of nodes) for (const o of n.output ?? []) producer.set(o, n);
  const inputType = new Map((graph.input ?? []).map((i) => [i.name!, i.type?.tensorType?.elemType]));
  if (![ROPE_COS, ROPE_SIN, QPOS].every((v) => producer.has(v))) return 0;
  const fused: { node: P.INodeProto; replaces: readonly P.INodeProto[] }[] = [];
  for (let l = 0; l < spec.windows.length; l++) {
    const p = `/model/layers.${l}/attn`;
    const gather = nodes.find((n) => n.name === `${p}/k_cache_gather`);
    const kind = io.LAYER_KINDS.find((k) => gather?.input?.[1] === io.blockTable(k));
    const context = producer.get(out(`${p}/context_flat`));
    const newKey = producer.get(out(`${p}/k_rope/Add`));
    const heads = ['q', 'k', 'v'].map((w) => out(`${p}/${w}_reshape`));
    if (kind === undefined || context === undefined || newKey === undefined || !heads.every((h) => producer.has(h))) return 0;
    const pool = inputType.get(io.cacheKey(l));
    if ((pool !== FLOAT && pool !== FLOAT16) || inputType.get(io.cacheValue(l)) !== pool) return 0;
    fused.push({
      replaces: [context, newKey],
      node: {
        opType: ATTENTION_OP,
        domain: Q4_DOMAIN,
        name: `${p}/fused`,
        input: [...heads, ROPE_COS, ROPE_SIN, QPOS, io.cacheKey(l), io.cacheValue(l), io.blockTable(kind), io.slotPositions(kind)],
        output: [out(`${p}/context_flat`), out(`${p}/k_rope/Add`)],
        attribute: [
          { name: 'num_heads', type: ATTR_INT, i: spec.numHeads },
          { name: 'num_kv_heads', type: ATTR_INT, i: spec.numKvHeads },
          { name: 'scale', type: ATTR_FLOAT, f: spec.scale },
          { name: 'softcap', type: ATTR_FLOAT, f: spec.softcap },
          { name: 'window', type: ATTR_INT, i: spec.windows[l]! },
        ],
      },
    });
  }
  if (fused.length === 0) return 0;
  // The fused nodes in place of the two each replaces, then in dependency order again (its v
  // comes after the new keys it outputs), without what no output needs any more.
  const replaced = new Set(fused.flatMap((f) => f.replaces));
  const swapped = [...nodes.filter((n) => !replaced.has(n)), ...fused.map((f) => f.node)];
  graph.node = liveNodes(swapped, (graph.output ?? []).map((o) => o.name!));
  const used = new Set(graph.node.flatMap((n) => n.input ?? []));
  graph.initializer = (graph.initializer ?? []).filter((t) => used.has(t.name!));
  importDomain(model);
  return fused.length;
}

/**
 * The nodes some graph output depends on, each after the producers of its inputs (otherwise in
 * the order given).
 */
function liveNodes(nodes: readonly P.INodeProto[], outputs: readonly string[]): P.INodeProto[] {
  const producer = new Map<string, P.INodeProto>();
  for (const n of nodes) for (const o of n.output ?? []) producer.set(o, n);
  const placed = new Set<P.INodeProto>();
  const order: P.INodeProto[] = [];
  const place = (n: P.INodeProto): void => {
    if (placed.has(n)) return;
    placed.add(n);
    for (const x of n.input ?? []) {
      const from = producer.get(x);
      if (from !== undefined) place(from);
    }
    order.push(n);
  };
  for (const o of outputs) {
    const n = producer.get(o);
    if (n !== undefined) place(n);
  }
  return order;
}
