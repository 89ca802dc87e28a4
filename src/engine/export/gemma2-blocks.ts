/**
 * The pieces of the Gemma 2 graph that both attention layouts use: how weights are obtained,
 * the bias-free projections (Gemm, or MatMulNBits when quantized), the soft-cap, RoPE and the
 * per-head projections it rotates, and the interface a layout's attention block implements.
 * Shapes as in gemma2-graph.ts: B rows, S new tokens per row, N = B*S, D head dim.
 */
import type { Gemma2Config } from '../../checkpoint/config.ts';
import { DType, type GraphBuilder } from '../onnx-builder.ts';
import type { QuantLayout } from './quantize.ts';

/** How the graph obtains each checkpoint tensor as an initializer. */
export interface GraphWeights {
  /**
   * Initializer name for HF tensor `hfName`; 'plus-one' stores 1 + w (RMSNorm scale, always
   * float32). Matrices come in the compute dtype (float16 only in a gqa export with fp16 compute).
   */
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
  /** [N, kBlocks], in the compute dtype (MatMulNBits takes its scales in its input's type). */
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

/**
 * A layout's attention: `attend(l, x)` is layer l's attention over its normed hidden states
 * x [N, H], o_proj included: [N, H]. Both in the compute dtype: float16 when `half`.
 */
export interface AttentionBlock {
  readonly half: boolean;
  attend(l: number, x: string): string;
}

/** x [M, K] times W^T for an HF weight W [N, K]: Gemm, or MatMulNBits when quantized.   [M, N] */
export function linear(g: GraphBuilder, w: GraphWeights, name: string, x: string, hfName: string): string {
  if (!w.quantized) return g.op1('Gemm', name, [x, w.tensor(g, hfName, 'none')], { transB: 1 });
  const q = w.quantized(g, hfName);
  const { K, N, bits, blockSize } = q.layout;
  return g.op1('MatMulNBits', name, [x, q.matmul, q.scales], { K, N, bits, block_size: blockSize, accuracy_level: q.accuracyLevel }, 'com.microsoft');
}

export function softcap(g: GraphBuilder, name: string, x: string, cap: number): string {
  const c = g.constant([cap], DType.FLOAT, []);
  return g.op1('Mul', `${name}/Mul`, [g.op1('Tanh', `${name}/Tanh`, [g.op1('Div', `${name}/Div`, [x, c])]), c]);
}

/** RoPE tables of the new tokens, float32: cos / sin [B, S, 1, D]; the positions as float32. */
export interface RopeTables {
  /** positions as float32 [B, S] and as a column [B, S, 1] */
  readonly qpos: string;
  readonly posCol: string;
  readonly cos: string;
  readonly sin: string;
}

/** angle = pos * inv_freq (float32), not interleaved: dim j pairs with j + D/2. */
export function ropeTables(g: GraphBuilder, cfg: Gemma2Config, positions: string): RopeTables {
  const D = cfg.headDim;
  const qpos = g.op1('Cast', '/model/step/qpos', [positions], { to: DType.FLOAT }); // [B, S]
  const invFreq = Array.from({ length: D / 2 }, (_, i) => Math.fround(1 / Math.pow(cfg.ropeTheta, (2 * i) / D)));
  const posCol = g.op1('Unsqueeze', '/model/rope/pos', [qpos, g.constant([2], DType.INT64)]); // [B, S, 1]
  const angle = g.op1('Mul', '/model/rope/angle', [posCol, g.constant(invFreq, DType.FLOAT, [1, 1, D / 2])]); // [B, S, D/2]
  const full = g.op1('Concat', '/model/rope/angle_full', [angle, angle], { axis: -1 }); // [B, S, D]
  const heads = g.constant([2], DType.INT64);
  const cos = g.op1('Unsqueeze', '/model/rope/cos', [g.op1('Cos', '/model/rope/Cos', [full]), heads]); // [B, S, 1, D]
  const sin = g.op1('Unsqueeze', '/model/rope/sin', [g.op1('Sin', '/model/rope/Sin', [full]), heads]);
  return { qpos, posCol, cos, sin };
}

/** q*cos + rotate_half(q)*sin, rotate_half(x) = cat(-x2, x1), float32.   [B, S, n, D] */
export function rope(g: GraphBuilder, name: string, x: string, tables: RopeTables, D: number): string {
  const [x1, x2] = g.op('Split', `${name}/Split`, [x, g.constant([D / 2, D / 2], DType.INT64)], { axis: 3 }, 2) as [string, string];
  const rotated = g.op1('Concat', `${name}/rotate_half`, [g.op1('Neg', `${name}/Neg`, [x2]), x1], { axis: 3 });
  return g.op1('Add', `${name}/Add`, [g.op1('Mul', `${name}/cos`, [x, tables.cos]), g.op1('Mul', `${name}/sin`, [rotated, tables.sin])]);
}

/**
 * Projection `what` (q | k | v) of x [N, H] into `heads` heads, back in the step's batch
 * layout; `bs` is Shape(input_ids) = (B, S).   [B, S, heads, D]
 */
export function projectHeads(g: GraphBuilder, w: GraphWeights, p: string, hf: string, x: string, bs: string, what: 'q' | 'k' | 'v', heads: number, D: number): string {
  const y = linear(g, w, `${p}/${what}_proj`, x, `${hf}${what}_proj.weight`); // [N, heads*D]
  const shape = g.op1('Concat', `${p}/${what}_shape`, [bs, g.constant([heads, D], DType.INT64)], { axis: 0 });
  return g.op1('Reshape', `${p}/${what}_reshape`, [y, shape]);
}

/** x cast to `to` when `when` (the fp32 islands of an fp16-compute graph); else x itself, no node. */
export function castIf(g: GraphBuilder, when: boolean, name: string, x: string, to: typeof DType.FLOAT | typeof DType.FLOAT16): string {
  return when ? g.op1('Cast', name, [x], { to }) : x;
}
