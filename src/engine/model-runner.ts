/**
 * StepPlan → tensors → StepOutput for an export with the 'paged' attention layout (a Runner,
 * src/scheduler/runner-contract.ts). Packs the rows of each forward pass (each row: a
 * sequence's new tokens, its positions and cache blocks, which logits to return) into the
 * graph's inputs, runs the session, writes the new K/V rows into the host block pools
 * (kv-cache.ts), and hands back the requested logits. Rows of a pass may be at different
 * lengths and carry different numbers of new tokens (right-padded); a step is split into
 * passes by step-groups.ts.
 */
import { manifestHasHidden, manifestKvDtype, readManifest, MODEL_FILE } from './manifest.ts';
import * as io from './graph-io.ts';
import { KvCache } from './kv-cache.ts';
import { copyHidden, isContiguous, logitOffsets, newHiddenRows, scatterLogits, stepGroups } from './step-groups.ts';
import { blocksNeeded, slotPosition, type CacheLayout, type HiddenRows, type PlanRow, type Runner, type StepOutput, type StepPlan } from '../scheduler/runner-contract.ts';
import type { Int4Kernel } from './native/q4-graph.ts';
import { fusedAttentionSpec, type AttentionKernel } from './native/attention-graph.ts';
import { openGraphSession, type Binder, type GraphSession, type HostInput } from './graph-session.ts';
import type { Device } from './session.ts';
import type { Gemma2Config } from '../checkpoint/config.ts';
import { join } from 'node:path';
import { freemem } from 'node:os';
import { EngineError } from '../errors.ts';

export interface ModelRunnerOptions {
  readonly device?: Device;
  readonly blockSize?: number;
  /** KV cache budget in bytes (both layer kinds together); default: defaultKvCacheBytes(). */
  readonly kvCacheBytes?: number;
  /** Alternatively: room for one sequence of this many tokens (the score command). */
  readonly kvCacheTokens?: number;
  readonly intraOpThreads?: number;
  /** Sequences that run at once: caps the sliding-window pool (KvCache.layoutFromBudget). */
  readonly maxNumSeqs?: number;
  /** How the paged graph is run: the native runner (default where built) or the stock binding. */
  readonly binder?: Binder;
  /** CPU int4 matmuls: gemma-serve's kernel where it is faster (`auto`, default), ONNX Runtime's (`ort`), or gemma-serve's always. */
  readonly int4Kernel?: Int4Kernel;
  /** CPU attention on the native binder: one fused node a layer (`auto`, default) or the exported nodes (`ort`). */
  readonly attentionKernel?: AttentionKernel;
  /** A layout that supports prefix caching (CacheLayout.prefixCaching: the ring one block longer); default false. */
  readonly prefixCaching?: boolean;
}

/**
 * Default cache budget, taken after the weights are loaded: a quarter of free memory, at
 * most four full-context sequences, and never less than one full-context sequence (so the
 * context the model advertises is always servable).
 */
export function defaultKvCacheBytes(config: Gemma2Config, blockSize: number, dtype: io.KvDtype = 'fp32'): number {
  const fullSequence = (Math.ceil(config.maxPositions / blockSize) + 1) * blockSize * KvCache.bytesPerToken(config, dtype);
  return Math.max(fullSequence, Math.min(0.25 * freemem(), 4 * fullSequence));
}

export class ModelRunner implements Runner {
  /** The model's hidden size where the export has the `hidden` output (embeddings); else undefined. */
  readonly hiddenSize: number | undefined;

  private constructor(
    readonly config: Gemma2Config,
    /** The host block pools the graph reads and the runner writes. */
    readonly kv: KvCache,
    private readonly session: GraphSession,
    hasHidden: boolean,
  ) {
    this.hiddenSize = hasHidden ? config.hiddenSize : undefined;
  }

  get layout(): CacheLayout {
    return this.kv.layout;
  }

  /** Int4 matmuls run by gemma-serve's kernel (GraphSession.int4Swapped). */
  get int4Swapped(): number {
    return this.session.int4Swapped;
  }

  /** Layers whose attention runs as one fused node (GraphSession.attentionFused). */
  get attentionFused(): number {
    return this.session.attentionFused;
  }

  static async load(exportDir: string, opts: ModelRunnerOptions = {}): Promise<ModelRunner> {
    const { config, manifest } = readManifest(exportDir);
    const dtype = manifestKvDtype(manifest);
    const session = await openGraphSession(join(exportDir, MODEL_FILE), { device: opts.device ?? 'cpu', intraOpThreads: opts.intraOpThreads, binder: opts.binder, int4Kernel: opts.int4Kernel,
      ...(opts.attentionKernel === 'ort' ? {} : { fusedAttention: fusedAttentionSpec(config) }),
    });
    const blockSize = opts.blockSize ?? 16;
    const pc = opts.prefixCaching ?? false;
    const layout = opts.kvCacheTokens !== undefined
      ? KvCache.layout(config, blockSize, { global: Math.ceil(opts.kvCacheTokens / blockSize) + 1, sliding: Math.ceil(opts.kvCacheTokens / blockSize) + 1 }, undefined, pc)
      : KvCache.layoutFromBudget(config, blockSize, opts.kvCacheBytes ?? defaultKvCacheBytes(config, blockSize, dtype), opts.maxNumSeqs, dtype, pc);
    return new ModelRunner(config, new KvCache(config, layout, dtype), session, manifestHasHidden(manifest));
  }

  /** Runs a step: its passes (step-groups.ts), logits in plan order. The host pools keep nothing per sequence, so ends free nothing here. */
  async execute(plan: StepPlan): Promise<StepOutput> {
    const V = this.config.vocabSize;
    const groups = stepGroups(plan.rows);
    if (groups.length === 0) return { logits: new Float32Array(0), offsets: [0], vocabSize: V };
    const hidden = this.hiddenSize === undefined ? undefined : newHiddenRows(plan.rows, this.hiddenSize);
    if (hidden === undefined && plan.rows.some((r) => r.hidden !== undefined)) throw new EngineError('this export has no hidden-state output (embeddings): export the checkpoint again');
    const withHidden = hidden !== undefined ? { hidden } : {};
    if (groups.length === 1 && isContiguous(groups[0]!)) return { ...(await this.forward(plan.rows, groups[0]!, hidden)), vocabSize: V, ...withHidden };
    const offsets = logitOffsets(plan.rows);
    const logits = new Float32Array(offsets.at(-1)! * V);
    for (const g of groups) scatterLogits(g, (await this.forward(g.map((i) => plan.rows[i]!), g, hidden)).logits, offsets, V, logits);
    return { logits, offsets, vocabSize: V, ...withHidden };
  }

  /**
   * One forward pass over `rows` (plan rows `planIndex`); cache room for every row's new tokens
   * is reserved. The hidden states its rows ask for are copied into `hidden`.
   */
  private async forward(rows: readonly PlanRow[], planIndex: readonly number[], hidden: HiddenRows | undefined): Promise<{ logits: Float32Array; offsets: number[] }> {
    const B = rows.length;
    if (B === 0) throw new EngineError('empty step');
    const S = Math.max(...rows.map((r) => r.tokenIds.length));
    const c = this.kv;
    const { blockSize } = c.layout;
    const ids = new BigInt64Array(B * S).fill(BigInt(this.config.padTokenId));
    const positions = new BigInt64Array(B * S).fill(-1n);
    const logitRows: bigint[] = [];
    const offsets = [0];
    rows.forEach((r, b) => {
      const n = r.tokenIds.length;
      for (let s = 0; s < n; s++) {
        ids[b * S + s] = BigInt(r.tokenIds[s]!);
        positions[b * S + s] = BigInt(r.start + s);
      }
      if (r.start + n > this.config.maxPositions) throw new EngineError(`position ${r.start + n} exceeds the context (${this.config.maxPositions})`);
      for (const k of io.LAYER_KINDS) {
        if (r.blocks[k].length < blocksNeeded(c.layout, k, r.start + n)) throw new EngineError('cache room was not reserved for a step row');
      }
      for (let s = r.logits === 'all' ? 0 : n - 1; s < n; s++) logitRows.push(BigInt(b * S + s));
      offsets.push(logitRows.length);
    });
    const inputs: HostInput[] = [
      { name: io.INPUT_IDS, type: 'int64', dims: [B, S], data: ids },
      { name: io.POSITIONS, type: 'int64', dims: [B, S], data: positions },
      { name: io.LOGIT_ROWS, type: 'int64', dims: [logitRows.length], data: BigInt64Array.from(logitRows) },
    ];
    for (const k of io.LAYER_KINDS) {
      const { table, slots, width } = cacheView(c.layout, k, rows);
      inputs.push({ name: io.blockTable(k), type: 'int64', dims: [B, width], data: table });
      inputs.push({ name: io.slotPositions(k), type: 'int64', dims: [B, width * blockSize], data: slots });
    }
    const { numKvHeads: nkv, headDim: D } = this.config;
    c.pools.forEach(([kp, vp], l) => {
      const dims = [nkv, c.layout.numBlocks[c.layerKinds[l]!], blockSize, D];
      // An fp16 pool is a Uint16Array of float16 bits, which ORT takes as 'float16' data.
      inputs.push({ name: io.cacheKey(l), type: kp instanceof Float32Array ? 'float32' : 'float16', dims, data: kp });
      inputs.push({ name: io.cacheValue(l), type: vp instanceof Float32Array ? 'float32' : 'float16', dims, data: vp });
    });
    const outputs = [{ name: io.LOGITS, dims: [logitRows.length, this.config.vocabSize] }];
    for (let l = 0; l < this.config.numLayers; l++) outputs.push({ name: io.newKey(l), dims: [B, S, nkv, D] }, { name: io.newValue(l), dims: [B, S, nkv, D] });
    // The hidden states of every position cross only in a pass with an embedding row.
    const wantsHidden = hidden !== undefined && rows.some((r) => r.hidden !== undefined);
    if (wantsHidden) outputs.push({ name: io.HIDDEN, dims: [B * S, this.config.hiddenSize] });

    const out = await this.session.run(inputs, outputs);
    if (wantsHidden) rows.forEach((r, b) => copyHidden(r, planIndex[b]!, out[io.HIDDEN]!, b * S, hidden));

    for (let l = 0; l < this.config.numLayers; l++) {
      const keys = out[io.newKey(l)]!; // [B, S, nkv, D]
      const values = out[io.newValue(l)]!;
      rows.forEach((r, b) => {
        for (let s = 0; s < r.tokenIds.length; s++) c.write(l, r.blocks, r.start + s, keys, values, (b * S + s) * nkv * D);
      });
    }
    return { logits: out[io.LOGITS]!, offsets };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * The cached part of the rows' views of `kind` as the graph reads it: block table [B, width]
 * (padding: null block 0) and each slot's absolute position [B, width * blockSize] (-1: empty).
 * A row's view is its blocks of `kind` (a ring as it was before the step replaced blocks in it:
 * PlanRow.slidingView), cut after the last block holding a position before the step: the blocks
 * that only receive the step's own tokens are empty while it runs (the host writes the new K/V
 * after it), and the graph scores every slot it is given, so a whole prompt's prefill would
 * otherwise score as many empty slots as it has tokens (double the attention's work).
 */
export function cacheView(layout: CacheLayout, kind: io.LayerKind, rows: readonly PlanRow[]): { table: BigInt64Array; slots: BigInt64Array; width: number } {
  const { blockSize } = layout;
  const views = rows.map((r) => {
    const blocks = kind === 'sliding' ? r.slidingView ?? r.blocks.sliding : r.blocks.global;
    let filled = blocks.length * blockSize;
    while (filled > 0 && slotPosition(layout, kind, r.start, filled - 1) < 0) filled--;
    return blocks.slice(0, Math.ceil(filled / blockSize));
  });
  const width = Math.max(1, ...views.map((v) => v.length));
  const table = new BigInt64Array(rows.length * width);
  const slots = new BigInt64Array(rows.length * width * blockSize).fill(-1n);
  views.forEach((view, b) => {
    view.forEach((blk, j) => { table[b * width + j] = BigInt(blk); });
    for (let i = 0; i < view.length * blockSize; i++) slots[b * width * blockSize + i] = BigInt(slotPosition(layout, kind, rows[b]!.start, i));
  });
  return { table, slots, width };
}
