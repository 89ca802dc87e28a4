/**
 * The 'gqa' attention layout: com.microsoft.GroupQueryAttention over a KV buffer per sequence
 * slot (past in, present out, the same memory when the runner binds them so). RoPE is computed
 * explicitly in float32 (GQA's do_rotary = 0); GQA applies the scale, the soft-cap, the causal
 * mask and, on sliding layers, the window. See graph-io.ts for the contract and how GQA reads
 * seqlens_k / total_sequence_length.
 *
 * Shapes: B rows, S new tokens per row, N = B*S, nq/nkv heads, D head dim, L = cache_len.
 */
import type { Gemma2Config } from '../../checkpoint/config.ts';
import * as io from '../graph-io.ts';
import { castIf, linear, projectHeads, rope, ropeTables, type AttentionBlock, type GraphWeights, type RopeTables } from './gemma2-blocks.ts';
import { DType, type AttrValue, type GraphBuilder } from '../onnx-builder.ts';

/** Values computed once per step and shared by all layers. */
interface StepValues {
  readonly rope: RopeTables;
  /** Shape(input_ids) = (B, S) */
  readonly bs: string;
  /** float16 compute (else float32): Q/K/V, the attention and the cache. */
  readonly half: boolean;
}

/** Declares the layout's step inputs and values; `half`: fp16 compute. */
export function gqaAttention(g: GraphBuilder, cfg: Gemma2Config, w: GraphWeights, ids: string, positions: string, half: boolean): AttentionBlock {
  g.input(io.SEQLENS_K, DType.INT32, ['batch']);
  g.input(io.TOTAL_SEQUENCE_LENGTH, DType.INT32, [1]);
  const step: StepValues = { rope: ropeTables(g, cfg, positions), bs: g.op1('Shape', '/model/step/batch_seq', [ids]), half };
  return { half, attend: (l, x) => attention(g, cfg, w, step, l, x) };
}

/** GroupQueryAttention's attributes for layer l. */
function gqaAttributes(cfg: Gemma2Config, l: number): Record<string, AttrValue> {
  return {
    num_heads: cfg.numHeads,
    kv_num_heads: cfg.numKvHeads,
    scale: { f: Math.pow(cfg.queryPreAttnScalar, -0.5) },
    ...(cfg.attnLogitSoftcap === null ? {} : { softcap: { f: cfg.attnLogitSoftcap } }),
    // W keys counting the query's own: exactly Gemma's i - W < j <= i (see graph-io.ts).
    local_window_size: cfg.slidingLayers[l] ? cfg.slidingWindow : -1,
    do_rotary: 0,
  };
}

/** Layer l's attention over x [N, H] (compute dtype), o_proj included.   [N, H] */
function attention(g: GraphBuilder, cfg: Gemma2Config, w: GraphWeights, step: StepValues, l: number, x: string): string {
  const p = `/model/layers.${l}/attn`;
  const hf = `model.layers.${l}.self_attn.`;
  const { numHeads: nq, numKvHeads: nkv, headDim: D } = cfg;
  const T = step.half ? DType.FLOAT16 : DType.FLOAT;
  const i64 = (v: number[]): string => g.constant(v, DType.INT64);

  // [B, S, heads, D] -> [B, S, heads*D]: GQA's BSNH packing of q, k, v (head h at h*D).
  const flat = (t: string, what: string, heads: number): string => g.op1('Reshape', `${p}/${what}_flat`, [t, i64([0, 0, heads * D])]);
  // q and k rotated in float32, then back to the compute dtype.
  const rotated = (what: 'q' | 'k', heads: number): string => {
    const y = castIf(g, step.half, `${p}/${what}_float`, projectHeads(g, w, p, hf, x, step.bs, what, heads, D), DType.FLOAT);
    return flat(castIf(g, step.half, `${p}/${what}_half`, rope(g, `${p}/${what}_rope`, y, step.rope, D), DType.FLOAT16), what, heads);
  };
  const q = rotated('q', nq);
  const k = rotated('k', nkv);
  const v = flat(projectHeads(g, w, p, hf, x, step.bs, 'v', nkv, D), 'v', nkv);

  const cacheDims = ['batch', nkv, 'cache_len', D];
  g.input(io.pastKey(l), T, cacheDims);
  g.input(io.pastValue(l), T, cacheDims);
  // present K/V are GQA's own outputs (no Identity), so a runner can bind them to past's memory.
  const [context] = g.op('GroupQueryAttention', `${p}/GroupQueryAttention`,
    [q, k, v, io.pastKey(l), io.pastValue(l), io.SEQLENS_K, io.TOTAL_SEQUENCE_LENGTH],
    gqaAttributes(cfg, l), 3, 'com.microsoft', [null, io.presentKey(l), io.presentValue(l)]) as [string, string, string]; // [B, S, nq*D]
  g.namedOutput(io.presentKey(l), T, cacheDims);
  g.namedOutput(io.presentValue(l), T, cacheDims);
  const o2 = g.op1('Reshape', `${p}/context_flat`, [context, i64([-1, nq * D])]);
  return linear(g, w, `${p}/o_proj`, o2, `${hf}o_proj.weight`);
}
