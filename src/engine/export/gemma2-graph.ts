/**
 * The Gemma 2 forward pass as an ONNX graph, one function per block, following
 * shared GEMMA2.md line by line. Attention is built from explicit ops over a paged KV cache
 * that the host owns: the graph gathers each row's blocks from the layer's pool, scores the
 * new queries against them and against the new keys, and returns only the new K/V rows.
 * See graph-io.ts for the inputs and outputs.
 *
 * Shapes: B rows, S new tokens per row, N = B*S, H hidden, nq/nkv heads, g = nq/nkv,
 * D head dim, C cached slots in a row's view, V vocabulary.
 */
import type { Gemma2Config } from '../../checkpoint/config.ts';
import * as io from '../graph-io.ts';
import { DType, GraphBuilder } from './onnx-builder.ts';
import type { QuantLayout } from './quantize.ts';

/** How the graph obtains each checkpoint tensor as an initializer. */
export interface GraphWeights {
  /** Initializer name for HF tensor `hfName`; 'plus-one' stores 1 + w (RMSNorm scale). */
  tensor(g: GraphBuilder, hfName: string, transform: 'none' | 'plus-one'): string;
  /** Whether the checkpoint has this tensor (an untied `lm_head.weight`). */
  has(hfName: string): boolean;
  /**
   * Present in a quantized export: the block-quantized form of matrix `hfName` ([N, K] as HF
   * stores it), used for every projection, the LM head and the embedding lookup.
   */
  quantized?(g: GraphBuilder, hfName: string): QuantizedWeight;
}

/** Initializers of a block-quantized matrix (see quantize.ts for the format). */
export interface QuantizedWeight {
  /** uint8 [N, kBlocks, blobSize]: MatMulNBits' B. */
  readonly matmul: string;
  /**
   * uint8 [N, kBlocks * blobSize] over the same bytes (declared on first use): GatherBlockQuantized's
   * data; null when K is not a whole number of blocks.
   */
  gather(): string | null;
  /** float32 [N, kBlocks] */
  readonly scales: string;
  readonly layout: QuantLayout;
  /** MatMulNBits accuracy_level (QUANT_ACCURACY_LEVEL unless the export asked for another). */
  readonly accuracyLevel: number;
}

/**
 * MatMulNBits' accuracy_level: 4 lets the CPU kernel quantize the activations to int8 per
 * block (int8 dot products, int32 accumulation): an order of magnitude faster than level 0
 * (float32 math on the dequantized weights) at a small cost in fidelity (see the tests).
 */
export const QUANT_ACCURACY_LEVEL = 4;

/** x [M, K] times W^T for an HF weight W [N, K]: Gemm, or MatMulNBits when quantized.   [M, N] */
function linear(g: GraphBuilder, w: GraphWeights, name: string, x: string, hfName: string): string {
  if (!w.quantized) return g.op1('Gemm', name, [x, w.tensor(g, hfName, 'none')], { transB: 1 });
  const q = w.quantized(g, hfName);
  const { K, N, bits, blockSize } = q.layout;
  return g.op1('MatMulNBits', name, [x, q.matmul, q.scales], { K, N, bits, block_size: blockSize, accuracy_level: q.accuracyLevel }, 'com.microsoft');
}

const NEG = -1e9; // additive mask: finite, so a fully masked (padding) row stays NaN-free

/** Values computed once per step and shared by all layers. */
interface StepValues {
  /** cos / sin of the new tokens' angles: [B, S, 1, D] */
  readonly cos: string;
  readonly sin: string;
  /** additive masks per layer kind: cache [1, B, 1, S, C_k] and new keys [1, B, 1, S, S] */
  readonly cacheMask: Record<io.LayerKind, string>;
  readonly newMask: Record<io.LayerKind, string>;
  /** Element type of the cache pool inputs. */
  readonly kvDtype: io.KvDtype;
}

export interface GraphOptions {
  /** 'fp16': cache pool inputs are float16, cast to float32 after the block gather (default 'fp32'). */
  readonly kvDtype?: io.KvDtype;
}

export function buildGemma2Graph(cfg: Gemma2Config, weights: GraphWeights, opts: GraphOptions = {}): GraphBuilder {
  const g = new GraphBuilder();
  const ids = g.input(io.INPUT_IDS, DType.INT64, ['batch', 'seq']);
  const positions = g.input(io.POSITIONS, DType.INT64, ['batch', 'seq']);
  const logitRows = g.input(io.LOGIT_ROWS, DType.INT64, ['num_logits']);
  for (const k of io.LAYER_KINDS) {
    g.input(io.blockTable(k), DType.INT64, ['batch', `blocks_${k}`]);
    g.input(io.slotPositions(k), DType.INT64, ['batch', `slots_${k}`]);
  }
  const step = { ...stepValues(g, cfg, positions), kvDtype: opts.kvDtype ?? 'fp32' };

  // x = E[ids] * sqrt(H), sqrt(H) rounded to the runtime dtype (float32)   [N, H]
  const gathered = embedding(g, weights, ids); // [B, S, H]
  const scaled = g.op1('Mul', '/model/embed_tokens/Mul', [gathered, g.constant([Math.fround(Math.sqrt(cfg.hiddenSize))], DType.FLOAT, [])]);
  let x = g.op1('Reshape', '/model/embed_tokens/Reshape', [scaled, g.constant([-1, cfg.hiddenSize], DType.INT64)]);

  for (let l = 0; l < cfg.numLayers; l++) x = decoderLayer(g, cfg, weights, step, l, x, ids);

  // Head: select rows, final norm, tied (or untied) LM head, final soft-cap.   [N_logits, V]
  const rows = g.op1('Gather', '/model/head/GatherRows', [x, logitRows], { axis: 0 });
  const normed = rmsNorm(g, cfg, weights, '/model/norm', 'model.norm.weight', rows);
  const headName = weights.has('lm_head.weight') ? 'lm_head.weight' : 'model.embed_tokens.weight';
  let logits = linear(g, weights, '/model/lm_head/Gemm', normed, headName);
  if (cfg.finalLogitSoftcap !== null) logits = softcap(g, '/model/final_softcap', logits, cfg.finalLogitSoftcap);
  g.output(logits, io.LOGITS, DType.FLOAT, ['num_logits', cfg.vocabSize]);
  return g;
}

/** E[ids]: a Gather, or in a quantized export GatherBlockQuantized over the (tied head's) quantized table.   [B, S, H] */
function embedding(g: GraphBuilder, w: GraphWeights, ids: string): string {
  const name = 'model.embed_tokens.weight';
  const q = w.quantized?.(g, name);
  const rows = q?.gather() ?? null;
  if (q && rows !== null) {
    const { bits, blockSize } = q.layout;
    return g.op1('GatherBlockQuantized', '/model/embed_tokens/GatherBlockQuantized', [rows, ids, q.scales],
      { bits, block_size: blockSize, gather_axis: 0, quantize_axis: 1 }, 'com.microsoft');
  }
  return g.op1('Gather', '/model/embed_tokens/Gather', [w.tensor(g, name, 'none'), ids], { axis: 0 });
}

/** Per-step values: RoPE tables for the new tokens and the additive masks per layer kind. */
function stepValues(g: GraphBuilder, cfg: Gemma2Config, positions: string): Omit<StepValues, 'kvDtype'> {
  const D = cfg.headDim;
  const qpos = g.op1('Cast', '/model/step/qpos', [positions], { to: DType.FLOAT }); // [B, S]

  // RoPE: angle = pos * inv_freq (float32), not interleaved: dim j pairs with j + D/2.
  const invFreq = Array.from({ length: D / 2 }, (_, i) => Math.fround(1 / Math.pow(cfg.ropeTheta, (2 * i) / D)));
  const posCol = g.op1('Unsqueeze', '/model/rope/pos', [qpos, g.constant([2], DType.INT64)]); // [B, S, 1]
  const angle = g.op1('Mul', '/model/rope/angle', [posCol, g.constant(invFreq, DType.FLOAT, [1, 1, D / 2])]); // [B, S, D/2]
  const full = g.op1('Concat', '/model/rope/angle_full', [angle, angle], { axis: -1 }); // [B, S, D]
  const heads = g.constant([2], DType.INT64);
  const cos = g.op1('Unsqueeze', '/model/rope/cos', [g.op1('Cos', '/model/rope/Cos', [full]), heads]); // [B, S, 1, D]
  const sin = g.op1('Unsqueeze', '/model/rope/sin', [g.op1('Sin', '/model/rope/Sin', [full]), heads]);

  const qcol = posCol; // [B, S, 1]
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
  return { cos, sin, cacheMask, newMask };
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

/** h = x + post_attn_norm(attn(input_norm(x))); x = h + post_ff_norm(mlp(pre_ff_norm(h))). */
function decoderLayer(g: GraphBuilder, cfg: Gemma2Config, w: GraphWeights, step: StepValues, l: number, x: string, ids: string): string {
  const p = `/model/layers.${l}`;
  const hf = `model.layers.${l}.`;
  const a = rmsNorm(g, cfg, w, `${p}/input_layernorm`, `${hf}input_layernorm.weight`, x);
  const attn = attention(g, cfg, w, step, l, a, ids);
  const h = g.op1('Add', `${p}/attn_residual`, [x, rmsNorm(g, cfg, w, `${p}/post_attention_layernorm`, `${hf}post_attention_layernorm.weight`, attn)]);
  const m = mlp(g, w, p, hf, rmsNorm(g, cfg, w, `${p}/pre_feedforward_layernorm`, `${hf}pre_feedforward_layernorm.weight`, h));
  return g.op1('Add', `${p}/mlp_residual`, [h, rmsNorm(g, cfg, w, `${p}/post_feedforward_layernorm`, `${hf}post_feedforward_layernorm.weight`, m)]);
}

/** x * rsqrt(mean(x^2) + eps) * (1 + w), in float32.   [N, H] -> [N, H] */
function rmsNorm(g: GraphBuilder, cfg: Gemma2Config, w: GraphWeights, name: string, hfName: string, x: string): string {
  const scale = w.tensor(g, hfName, 'plus-one');
  return g.op1('SimplifiedLayerNormalization', name, [x, scale], { axis: -1, epsilon: { f: cfg.rmsNormEps }, stash_type: 1 });
}

/** down(gelu_tanh(gate(x)) * up(x)).   [N, H] -> [N, H] */
function mlp(g: GraphBuilder, w: GraphWeights, p: string, hf: string, x: string): string {
  const gate = linear(g, w, `${p}/mlp/gate_proj`, x, `${hf}mlp.gate_proj.weight`); // [N, I]
  const up = linear(g, w, `${p}/mlp/up_proj`, x, `${hf}mlp.up_proj.weight`);
  const act = g.op1('Gelu', `${p}/mlp/act`, [gate], { approximate: 'tanh' });
  const prod = g.op1('Mul', `${p}/mlp/mul`, [act, up]);
  return linear(g, w, `${p}/mlp/down_proj`, prod, `${hf}mlp.down_proj.weight`);
}

function softcap(g: GraphBuilder, name: string, x: string, cap: number): string {
  const c = g.constant([cap], DType.FLOAT, []);
  return g.op1('Mul', `${name}/Mul`, [g.op1('Tanh', `${name}/Tanh`, [g.op1('Div', `${name}/Div`, [x, c])]), c]);
}

/** q*cos + rotate_half(q)*sin, rotate_half(x) = cat(-x2, x1).   [B, S, n, D] */
function rope(g: GraphBuilder, name: string, x: string, step: StepValues, D: number): string {
  const [x1, x2] = g.op('Split', `${name}/Split`, [x, g.constant([D / 2, D / 2], DType.INT64)], { axis: 3 }, 2) as [string, string];
  const rotated = g.op1('Concat', `${name}/rotate_half`, [g.op1('Neg', `${name}/Neg`, [x2]), x1], { axis: 3 });
  return g.op1('Add', `${name}/Add`, [g.op1('Mul', `${name}/cos`, [x, step.cos]), g.op1('Mul', `${name}/sin`, [rotated, step.sin])]);
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
  const proj = (what: 'q' | 'k' | 'v', heads: number): string => {
    const y = linear(g, w, `${p}/${what}_proj`, x, `${hf}${what}_proj.weight`); // [N, heads*D]
    const shape = g.op1('Concat', `${p}/${what}_shape`, [bs, i64([heads, D])], { axis: 0 });
    return g.op1('Reshape', `${p}/${what}_reshape`, [y, shape]); // [B, S, heads, D]
  };
  const q = rope(g, `${p}/q_rope`, proj('q', nq), step, D);
  const k = rope(g, `${p}/k_rope`, proj('k', nkv), step, D);
  const v = proj('v', nkv);
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
