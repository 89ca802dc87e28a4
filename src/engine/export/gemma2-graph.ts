/**
 * The Gemma 2 forward pass as an ONNX graph, one function per block, following
 * shared GEMMA2.md line by line. The attention block comes from the export's layout:
 * 'paged' (paged-attention.ts: explicit ops over host-owned block pools) or 'gqa'
 * (gqa-attention.ts: GroupQueryAttention over a per-slot cache). See graph-io.ts for the
 * inputs and outputs of each.
 *
 * Compute dtype: float32; in a gqa export with fp16 compute the matrices, Q/K/V, the attention
 * and the cache are float16 while the residual stream, every RMSNorm and the final soft-cap stay
 * float32 (Gemma 2's activations overflow fp16): casts at the borders of those fp32 islands.
 *
 * Shapes: B rows, S new tokens per row, N = B*S, H hidden, V vocabulary.
 */
import type { Gemma2Config } from '../../checkpoint/config.ts';
import * as io from '../graph-io.ts';
import { castIf, linear, softcap, type AttentionBlock, type GraphWeights } from './gemma2-blocks.ts';
import { gqaAttention } from './gqa-attention.ts';
import { DType, GraphBuilder } from '../onnx-builder.ts';
import { pagedAttention } from './paged-attention.ts';

export interface GraphOptions {
  /** Default 'paged'. */
  readonly attention?: io.AttentionLayout;
  /**
   * paged: the cache pools' element type ('fp16': float16 pools cast to float32 after the block
   * gather). gqa: the compute dtype, which is also the cache's. Default 'fp32'.
   */
  readonly kvDtype?: io.KvDtype;
}

/** Whether a graph of these options computes in float16: a gqa graph whose cache is fp16. */
export function computesInHalf(opts: GraphOptions): boolean {
  return opts.attention === 'gqa' && opts.kvDtype === 'fp16';
}

export function buildGemma2Graph(cfg: Gemma2Config, weights: GraphWeights, opts: GraphOptions = {}): GraphBuilder {
  const g = new GraphBuilder();
  const ids = g.input(io.INPUT_IDS, DType.INT64, ['batch', 'seq']);
  const positions = g.input(io.POSITIONS, DType.INT64, ['batch', 'seq']);
  const logitRows = g.input(io.LOGIT_ROWS, DType.INT64, ['num_logits']);
  const kvDtype = opts.kvDtype ?? 'fp32';
  const attn = opts.attention === 'gqa'
    ? gqaAttention(g, cfg, weights, ids, positions, computesInHalf(opts))
    : pagedAttention(g, cfg, weights, ids, positions, kvDtype);

  // x = E[ids] * sqrt(H), sqrt(H) rounded to the runtime dtype (float32)   [N, H]
  const gathered = castIf(g, attn.half, '/model/embed_tokens/Cast', embedding(g, weights, ids), DType.FLOAT); // [B, S, H]
  const scaled = g.op1('Mul', '/model/embed_tokens/Mul', [gathered, g.constant([Math.fround(Math.sqrt(cfg.hiddenSize))], DType.FLOAT, [])]);
  let x = g.op1('Reshape', '/model/embed_tokens/Reshape', [scaled, g.constant([-1, cfg.hiddenSize], DType.INT64)]);

  for (let l = 0; l < cfg.numLayers; l++) x = decoderLayer(g, cfg, weights, attn, l, x);

  // Final norm over every position (the hidden states embeddings pool, a graph output), then
  // the head: select rows, tied (or untied) LM head, final soft-cap.   [N_logits, V]
  // The norm's own output (no Identity copy); ORT writes it only into memory a run binds.
  const hidden = rmsNorm(g, cfg, weights, '/model/norm', 'model.norm.weight', x, io.HIDDEN); // [N, H] float32
  g.namedOutput(io.HIDDEN, DType.FLOAT, ['num_tokens', cfg.hiddenSize]);
  const rows = g.op1('Gather', '/model/head/GatherRows', [hidden, logitRows], { axis: 0 });
  const normed = castIf(g, attn.half, '/model/norm/Cast', rows, DType.FLOAT16);
  const headName = weights.has('lm_head.weight') ? 'lm_head.weight' : 'model.embed_tokens.weight';
  let logits = castIf(g, attn.half, '/model/lm_head/Cast', linear(g, weights, '/model/lm_head/Gemm', normed, headName), DType.FLOAT);
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

/**
 * h = x + post_attn_norm(attn(input_norm(x))); x = h + post_ff_norm(mlp(pre_ff_norm(h))).
 * x, h and the norms in float32; attention and MLP in the compute dtype.
 */
function decoderLayer(g: GraphBuilder, cfg: Gemma2Config, w: GraphWeights, attn: AttentionBlock, l: number, x: string): string {
  const p = `/model/layers.${l}`;
  const hf = `model.layers.${l}.`;
  const half = (name: string, t: string): string => castIf(g, attn.half, `${p}/${name}/Cast`, t, DType.FLOAT16);
  const float = (name: string, t: string): string => castIf(g, attn.half, `${p}/${name}/Cast`, t, DType.FLOAT);
  const a = half('input_layernorm', rmsNorm(g, cfg, w, `${p}/input_layernorm`, `${hf}input_layernorm.weight`, x));
  const o = float('attn', attn.attend(l, a));
  const h = g.op1('Add', `${p}/attn_residual`, [x, rmsNorm(g, cfg, w, `${p}/post_attention_layernorm`, `${hf}post_attention_layernorm.weight`, o)]);
  const m = float('mlp', mlp(g, w, p, hf, half('pre_feedforward_layernorm', rmsNorm(g, cfg, w, `${p}/pre_feedforward_layernorm`, `${hf}pre_feedforward_layernorm.weight`, h))));
  return g.op1('Add', `${p}/mlp_residual`, [h, rmsNorm(g, cfg, w, `${p}/post_feedforward_layernorm`, `${hf}post_feedforward_layernorm.weight`, m)]);
}

/** x * rsqrt(mean(x^2) + eps) * (1 + w), in float32; `outputName`: a graph output it produces itself.   [N, H] -> [N, H] */
function rmsNorm(g: GraphBuilder, cfg: Gemma2Config, w: GraphWeights, name: string, hfName: string, x: string, outputName: string | null = null): string {
  const scale = w.tensor(g, hfName, 'plus-one');
  return g.op('SimplifiedLayerNormalization', name, [x, scale], { axis: -1, epsilon: { f: cfg.rmsNormEps }, stash_type: 1 }, 1, '', [outputName])[0]!;
}

/** down(gelu_tanh(gate(x)) * up(x)).   [N, H] -> [N, H] */
function mlp(g: GraphBuilder, w: GraphWeights, p: string, hf: string, x: string): string {
  const gate = linear(g, w, `${p}/mlp/gate_proj`, x, `${hf}mlp.gate_proj.weight`); // [N, I]
  const up = linear(g, w, `${p}/mlp/up_proj`, x, `${hf}mlp.up_proj.weight`);
  const act = g.op1('Gelu', `${p}/mlp/act`, [gate], { approximate: 'tanh' });
  const prod = g.op1('Mul', `${p}/mlp/mul`, [act, up]);
  return linear(g, w, `${p}/mlp/down_proj`, prod, `${hf}mlp.down_proj.weight`);
}
