/**
 * The contract between the exported graph and the model runner: input and output names,
 * and what each holds. Both sides import these names; the manifest records their version.
 * Two attention layouts (manifest `attention`): 'paged', here, and 'gqa', further down.
 *
 * 'paged' inputs (B rows, S new tokens per row, right-padded):
 * - `input_ids`        int64 [B, S]     new tokens (pad id where padded)
 * - `positions`        int64 [B, S]     absolute position of each new token; -1 marks padding
 * - `logit_rows`       int64 [N]        flat indices b*S + s of the rows whose logits come out
 * - `block_table.{k}`  int64 [B, M_k]   cache blocks of each row, in order (k = global|sliding);
 *                                       padded with block 0, which holds nothing visible
 * - `slot_positions.{k}` int64 [B, M_k * blockSize]  absolute position held by each slot of
 *                                       the row's gathered cache view, -1 when empty. The mask
 *                                       is built from these, so the same graph reads a linear
 *                                       cache (global) and a ring of window slots (sliding).
 * - `cache.{l}.key|value` float32 [numKvHeads, numBlocks, blockSize, headDim]: the block pool
 *                                       of layer l (passed in, never copied out); float16 in an
 *                                       export with an fp16 cache (manifest kvDtype), cast to
 *                                       float32 right after the block gather
 * Outputs:
 * - `logits`           float32 [N, V]   final soft-capped logits of the selected rows
 * - `hidden`           float32 [B*S, H] the final hidden state (after the final RMSNorm, before
 *                                       the LM head) of every position, row b*S + s (padding
 *                                       rows hold garbage); fetched only by a pass with an
 *                                       embedding row (graph io 2; the 'gqa' graph has it too)
 * - `new.{l}.key|value` float32 [B, S, numKvHeads, headDim]: the K (rotated) / V rows of the
 *                                       new tokens, which the host writes into its pool
 */
import type { LayerKind } from '../scheduler/runner-contract.ts';

/** Element type of the cache pools (`--kv-dtype`; in 'gqa', the compute dtype); a property of the exported graph. */
export type KvDtype = 'fp32' | 'fp16';
export const KV_DTYPES: readonly KvDtype[] = ['fp32', 'fp16'];
/** Bytes of one cache element. */
export const kvDtypeBytes = (d: KvDtype): number => (d === 'fp16' ? 2 : 4);

// The layer kinds name graph inputs; they are defined with the runner contract, whose block tables are per kind.
export { LAYER_KINDS, type LayerKind } from '../scheduler/runner-contract.ts';

/** 2: the `hidden` output. A version-1 export still serves generation, not embeddings. */
export const GRAPH_IO_VERSION = 2;
/** The oldest graph io an export may have and still be served. */
export const MIN_GRAPH_IO_VERSION = 1;
export const INPUT_IDS = 'input_ids';
export const POSITIONS = 'positions';
export const LOGIT_ROWS = 'logit_rows';
export const LOGITS = 'logits';
export const HIDDEN = 'hidden';
export const blockTable = (k: LayerKind): string => `block_table.${k}`;
export const slotPositions = (k: LayerKind): string => `slot_positions.${k}`;
export const cacheKey = (l: number): string => `cache.${l}.key`;
export const cacheValue = (l: number): string => `cache.${l}.value`;
export const newKey = (l: number): string => `new.${l}.key`;
export const newValue = (l: number): string => `new.${l}.value`;

/** The graph's attention layout (`export --attention`); a property of the exported graph. */
export type AttentionLayout = 'paged' | 'gqa';
export const ATTENTION_LAYOUTS: readonly AttentionLayout[] = ['paged', 'gqa'];

/*
 * The 'gqa' layout: com.microsoft.GroupQueryAttention over a KV buffer per sequence slot, for a
 * runner that binds each layer's past and present to one buffer, which GQA then updates in place.
 * RoPE stays explicit (from `positions`, as in the paged graph; GQA's do_rotary = 0).
 * T, the compute dtype (manifest weightDtype = kvDtype): float32, or float16 (matrices, Q/K/V,
 * attention and cache in fp16; residual stream, every RMSNorm and the final soft-cap in fp32).
 * A quantized export computes in fp16: MatMulNBits / GatherBlockQuantized with fp16 scales.
 *
 * Inputs (B rows = sequence slots, S new tokens per row; c_b = tokens already cached in row b):
 * - `input_ids`        int64 [B, S]
 * - `positions`        int64 [B, S]     c_b + s: RoPE angles only (GQA places K/V by seqlens_k,
 *                                       so the two must agree)
 * - `logit_rows`       int64 [N]        flat indices b*S + s of the rows whose logits come out
 * - `seqlens_k`        int32 [B]        c_b + S - 1
 * - `total_sequence_length` int32 [1]   max over b of c_b + S; at most cache_len
 * - `past.{l}.key|value` T [B, numKvHeads, cache_len, headDim]: row b's keys (rotated) / values
 *                                       at positions 0 .. c_b - 1; later positions are not read
 * Outputs:
 * - `logits`           float32 [N, V]   final soft-capped logits (the cap computed in fp32)
 * - `hidden`           float32 [B*S, H] as in 'paged' (the final norm computes in fp32)
 * - `present.{l}.key|value` T [B, numKvHeads, cache_len, headDim]: past's positions 0 .. c_b - 1,
 *                                       the new K (rotated) / V at c_b .. c_b + S - 1, and beyond
 *                                       that past's contents when shared, zeros otherwise. The GQA
 *                                       node's own outputs (no Identity between), so a runner can
 *                                       bind them to past's memory
 *
 * Run shapes:
 * - decode: S = 1, any B, rows at different c_b (seqlens_k[b] = c_b);
 * - prefill chunk: B = 1, S new tokens after a past of any length c_0 >= 0 (the first chunk:
 *   c_0 = 0, total_sequence_length = S).
 * GQA refuses S > 1 with B > 1 unless total_sequence_length = S (the batch's first chunks, right-
 * padded: not part of this contract), and S > 1 rows of a decode.
 *
 * GroupQueryAttention as ONNX Runtime 1.30 implements it (contrib_ops/cpu/bert/
 * group_query_attention_helper.h CheckInputs, gqa_attention_base.h, cuda/bert/group_query_attention.cc):
 * - S == total_sequence_length is a "first prompt": past is not read, every row starts at 0.
 *   Otherwise S > 1 needs B = 1 ("subsequent prompt"), else S must be 1 (token generation).
 *   Row b: total_b = seqlens_k[b] + 1, past_b = total_b - S; query s sees keys 0 .. past_b + s.
 * - present's length is max(total_sequence_length, past's cache_len): total_sequence_length <= cache_len
 *   keeps it equal to past's, which sharing one buffer needs. (Newer ORT sources also reject
 *   past_b > cache_len.)
 * - local_window_size W (sliding layers; -1 on global ones): the query at i sees keys i - W < j <= i,
 *   W keys counting itself, Gemma's window (since ORT 1.23, PR #25927 "Fix Local Attention off
 *   by 1 bug"; CUDA hands W - 1 to flash attention's window_size_left: the same W keys). On this
 *   CPU build W is exact and W +- 1 moves the fixtures' log-probabilities by ~29 (gqa-graph.test.ts).
 *   With a linear cache a sliding layer still stores every position: cache_len bounds every layer.
 * - softcap c: scores = c * tanh(scale * q.k / c), before the causal/window mask, then softmax;
 *   scale = query_pre_attn_scalar^-0.5; query head h reads kv head floor(h / (num_heads / kv_num_heads)).
 * - past_present_share_buffer: when present.{l}.key is the same memory as past.{l}.key (and the value
 *   pair likewise: CUDA enforces both or neither), GQA writes only the new rows, in place; else it
 *   zero-fills present and copies past's first past_b rows into it (the stock Node binding, which
 *   allocates outputs: correct, a full cache copy per layer per run). CUDA's flash decode path
 *   (S = 1, not a first prompt) needs the shared buffer and reads seqlens_k as the past lengths.
 * - CUDA registers float16 and bfloat16 kernels only (no float32: an fp32 gqa export is for CPU
 *   checks); it reads total_sequence_length on the host (a CPU input) and seqlens_k on the device.
 */
export const SEQLENS_K = 'seqlens_k';
export const TOTAL_SEQUENCE_LENGTH = 'total_sequence_length';
export const pastKey = (l: number): string => `past.${l}.key`;
export const pastValue = (l: number): string => `past.${l}.value`;
export const presentKey = (l: number): string => `present.${l}.key`;
export const presentValue = (l: number): string => `present.${l}.value`;
