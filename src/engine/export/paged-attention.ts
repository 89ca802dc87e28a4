/**
 * The 'paged' attention layout: explicit ops over a paged KV cache that the host owns. The
 * graph gathers each row's blocks from the layer's pool, scores the new queries against them
 * and against the new keys, and returns only the new K/V rows. See graph-io.ts for its inputs
 * and outputs.
 *
 * Shapes: B rows, S new tokens per row, N = B*S, nq/nkv heads, g = nq/nkv, D head dim,
 * C cached slots in a row's view.
 */
import type { Gemma2Config } from '../../checkpoint/config.ts';
import * as io from '../graph-io.ts';
import { linear, projectHeads, rope, ropeTables, softcap, type AttentionBlock, type GraphWeights, type RopeTables } from './gemma2-blocks.ts';
import { DType, type GraphBuilder } from '../onnx-builder.ts';

const NEG = -1e9; // additive mask: finite, so a fully masked (padding) row stays NaN-free

/** Values computed once per step and shared by all layers. */
interface StepValues extends RopeTables {
  /** additive masks per layer kind: cache [1, B, 1, S, C_k] and new keys [1, B, 1, S, S] */
  readonly cacheMask: Record<io.LayerKind, string>;
  readonly newMask: Record<io.LayerKind, string>;
  /** Element type of the cache pool inputs. */
  readonly kvDtype: io.KvDtype;
}

/** Declares the layout's step inputs and values; attention math in float32. */
export function pagedAttention(g: GraphBuilder, cfg: Gemma2Config, w: GraphWeights, ids: string, positions: string, kvDtype: io.KvDtype): AttentionBlock {
  for (const k of io.LAYER_KINDS) {
    g.input(io.blockTable(k), DType.INT64, ['batch', `blocks_${k}`]);
    g.input(io.slotPositions(k), DType.INT64, ['batch', `slots_${k}`]);
  }
  const tables = ropeTables(g, cfg, positions);
  const step: StepValues = { ...tables, ...masks(g, cfg, tables), kvDtype };
  return { half: false, attend: (l, x) => attention(g, cfg, w, step, l, x, ids) };
}

/** The additive masks per layer kind, from the new tokens' positions and the slots' positions. */
function masks(g: GraphBuilder, cfg: Gemma2Config, { qpos, posCol: qcol }: RopeTables): Pick<StepValues, 'cacheMask' | 'newMask'> {
  const cacheMask = {} as Record<io.LayerKind, string>;
  const newMask = {} as Record<io.LayerKind, string>;
  const krowNew = g.op1('Unsqueeze', '/model/mask/new_kpos', [qpos, g.constant([1], DType.INT64)]); // [B, 1, S]
  for (const k of io.LAYER_KINDS) {
    const window = k === 'sliding' ? cfg.slidingWindow : null;
    const slots = g.op1('Cast', `/model/mask/${k}/slots`, [io.slotPositions(k)], { to: DType.FLOAT }); // [B, C]
    const krow = g.op1('Unsqueeze', `/model/mask/${k}/kpos`, [slots, g.constant([1], DType.INT64)]); // [B, 1, C]
    cacheMask[k] = additiveMask(g, `/model/mask/${k}/cache`, qcol, krow, window);
    newMask[k] = additiveMask(g, `/model/mask/${k}/new`, qcol, krowNew, window);
  }
  return { cacheMask, newMask };
}

/**
 * Key at position j is visible from query at i iff j >= 0 (a filled slot), j <= i, and,
 * on sliding layers, j > i - W (distance < W).   q [B, S, 1], k [B, 1, C] -> [1, B, 1, S, C]
 */
function additiveMask(g: GraphBuilder, name: string, q: string, k: string, window: number | null): string {
  const zero = g.constant([0], DType.FLOAT, []);
  const dist = g.op1('Sub', `${name}/dist`, [q, k]); // [B, S, C] = i - j
  let visible = g.op1('And', `${name}/causal`, [
    g.op1('GreaterOrEqual', `${name}/filled`, [k, zero]),
    g.op1('GreaterOrEqual', `${name}/past`, [dist, zero]),
  ]);
  if (window !== null) {
    const inWindow = g.op1('Less', `${name}/in_window`, [dist, g.constant([window], DType.FLOAT, [])]);
    visible = g.op1('And', `${name}/window`, [visible, inWindow]);
  }
  const add = g.op1('Where', `${name}/where`, [visible, zero, g.constant([NEG], DType.FLOAT, [])]);
  return g.op1('Unsqueeze', `${name}/expand`, [add, g.constant([0, 2], DType.INT64)]); // [1, B, 1, S, C]
}

/**
 * Attention of the new tokens over (the row's cached slots ++ the new tokens).
 * Layout inside: [nkv, B, g*S, D] so the pool gather [nkv, B, C, D] needs no transpose.
 */
function attention(g: GraphBuilder, cfg: Gemma2Config, w: GraphWeights, step: StepValues, l: number, x: string, ids: string): string {
  const p = `/model/layers.${l}/attn`;
  const hf = `model.layers.${l}.self_attn.`;
  const kind: io.LayerKind = cfg.slidingLayers[l] ? 'sliding' : 'global';
  const { numHeads: nq, numKvHeads: nkv, headDim: D } = cfg;
  const grp = nq / nkv;
  const i64 = (v: number[]): string => g.constant(v, DType.INT64);

  // Shape [B, S] of this step, to restore the batch layout from N rows.
  const bs = g.op1('Shape', `${p}/batch_seq`, [ids]); // [2] = (B, S)
  const q = rope(g, `${p}/q_rope`, projectHeads(g, w, p, hf, x, bs, 'q', nq, D), step, D);
  const k = rope(g, `${p}/k_rope`, projectHeads(g, w, p, hf, x, bs, 'k', nkv, D), step, D);
  const v = projectHeads(g, w, p, hf, x, bs, 'v', nkv, D);
  g.output(k, io.newKey(l), DType.FLOAT, ['batch', 'seq', nkv, D]);
  g.output(v, io.newValue(l), DType.FLOAT, ['batch', 'seq', nkv, D]);

  // q: [B, S, nq, D] -> [B, S, nkv, g, D] -> [nkv, B, g, S, D] -> [nkv, B, g*S, D]
  const q5 = g.op1('Reshape', `${p}/q_group`, [q, g.op1('Concat', `${p}/q_group_shape`, [bs, i64([nkv, grp, D])], { axis: 0 })]);
  const qt = g.op1('Transpose', `${p}/q_transpose`, [q5], { perm: [2, 0, 3, 1, 4] });
  const qf = g.op1('Reshape', `${p}/q_flat`, [qt, i64([nkv, 0, -1, D])]);
  // new keys / values: [B, S, nkv, D] -> [nkv, B, S, D]
  const kn = g.op1('Transpose', `${p}/k_new`, [k], { perm: [2, 0, 1, 3] });
  const vn = g.op1('Transpose', `${p}/v_new`, [v], { perm: [2, 0, 1, 3] });
  // cached: pool [nkv, NB, bs, D] gathered by block table [B, M] -> [nkv, B, M, bs, D] -> [nkv, B, C, D]
  // An fp16 pool is cast to float32 right after the gather: only the row's blocks, and the math stays fp32.
  const fp16 = step.kvDtype === 'fp16';
  const gatherPool = (pool: string, what: string): string => {
    let gathered = g.op1('Gather', `${p}/${what}_cache_gather`, [pool, io.blockTable(kind)], { axis: 1 });
    if (fp16) gathered = g.op1('Cast', `${p}/${what}_cache_cast`, [gathered], { to: DType.FLOAT });
    return g.op1('Reshape', `${p}/${what}_cache_view`, [gathered, i64([nkv, 0, -1, D])]);
  };
  const kc = gatherPool(io.cacheKey(l), 'k');
  const vc = gatherPool(io.cacheValue(l), 'v');
  const poolType = fp16 ? DType.FLOAT16 : DType.FLOAT;
  g.input(io.cacheKey(l), poolType, [nkv, 'num_blocks', 'block_size', D]);
  g.input(io.cacheValue(l), poolType, [nkv, 'num_blocks', 'block_size', D]);

  // Dims of this step: B, S, and C (the cache view's width).
  const dimB = g.op1('Slice', `${p}/dim_b`, [bs, i64([0]), i64([1])]);
  const dimS = g.op1('Slice', `${p}/dim_s`, [bs, i64([1]), i64([2])]);
  const dimC = g.op1('Slice', `${p}/dim_c`, [g.op1('Shape', `${p}/cache_shape`, [kc]), i64([2]), i64([3])]);

  // scores = (q . k^T) * query_pre_attn_scalar^-0.5, soft-capped before the mask.
  const alpha = { f: Math.pow(cfg.queryPreAttnScalar, -0.5) };
  const score = (keys: string, what: string, mask: string, width: string): string => {
    let s = g.op1('FusedMatMul', `${p}/${what}_scores`, [qf, keys], { transB: 1, alpha }, 'com.microsoft'); // [nkv, B, g*S, C]
    if (cfg.attnLogitSoftcap !== null) s = softcap(g, `${p}/${what}_softcap`, s, cfg.attnLogitSoftcap);
    const shape5 = g.op1('Concat', `${p}/${what}_shape_5d`, [i64([nkv]), dimB, i64([grp]), dimS, width], { axis: 0 });
    const s5 = g.op1('Reshape', `${p}/${what}_scores_5d`, [s, shape5]); // [nkv, B, g, S, C]
    return g.op1('Add', `${p}/${what}_masked`, [s5, mask]);
  };
  const sc = score(kc, 'cache', step.cacheMask[kind], dimC);
  const sn = score(kn, 'new', step.newMask[kind], dimS);
  const probs = g.op1('Softmax', `${p}/softmax`, [g.op1('Concat', `${p}/scores`, [sc, sn], { axis: -1 })], { axis: -1 });
  const splitSizes = g.op1('Concat', `${p}/split_sizes`, [dimC, dimS], { axis: 0 });
  const [pc, pn] = g.op('Split', `${p}/probs_split`, [probs, splitSizes], { axis: -1 }, 2) as [string, string];
  const flat = (t: string, what: string, width: string): string => // [nkv, B, g*S, C|S]
    g.op1('Reshape', `${p}/${what}_flat`, [t, g.op1('Concat', `${p}/${what}_flat_shape`, [i64([nkv, 0, -1]), width], { axis: 0 })]);
  const out = g.op1('Add', `${p}/context`, [
    g.op1('MatMul', `${p}/cache_values`, [flat(pc, 'probs_cache', dimC), vc]),
    g.op1('MatMul', `${p}/new_values`, [flat(pn, 'probs_new', dimS), vn]),
  ]); // [nkv, B, g*S, D]
  // [nkv, B, g, S, D] -> [B, S, nkv, g, D] -> [N, nq*D]  (head h = kv*g + j)
  const o5 = g.op1('Reshape', `${p}/context_5d`, [out, i64([nkv, 0, grp, -1, D])]);
  const ot = g.op1('Transpose', `${p}/context_transpose`, [o5], { perm: [1, 3, 0, 2, 4] });
  const o2 = g.op1('Reshape', `${p}/context_flat`, [ot, i64([-1, nq * D])]);
  return linear(g, w, `${p}/o_proj`, o2, `${hf}o_proj.weight`);
}
