/**
 * The contract between the exported graph and the model runner: input and output names,
 * and what each holds. Both sides import these names; the manifest records their version.
 *
 * Inputs (B rows, S new tokens per row, right-padded):
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
 * - `new.{l}.key|value` float32 [B, S, numKvHeads, headDim]: the K (rotated) / V rows of the
 *                                       new tokens, which the host writes into its pool
 */
/** Element type of the cache pools (`--kv-dtype`); a property of the exported graph. */
export type KvDtype = 'fp32' | 'fp16';
export const KV_DTYPES: readonly KvDtype[] = ['fp32', 'fp16'];
/** Bytes of one cache element. */
export const kvDtypeBytes = (d: KvDtype): number => (d === 'fp16' ? 2 : 4);

export type LayerKind = 'global' | 'sliding';
export const LAYER_KINDS: readonly LayerKind[] = ['global', 'sliding'];

export const GRAPH_IO_VERSION = 1;
export const INPUT_IDS = 'input_ids';
export const POSITIONS = 'positions';
export const LOGIT_ROWS = 'logit_rows';
export const LOGITS = 'logits';
export const blockTable = (k: LayerKind): string => `block_table.${k}`;
export const slotPositions = (k: LayerKind): string => `slot_positions.${k}`;
export const cacheKey = (l: number): string => `cache.${l}.key`;
export const cacheValue = (l: number): string => `cache.${l}.value`;
export const newKey = (l: number): string => `new.${l}.key`;
export const newValue = (l: number): string => `new.${l}.value`;
