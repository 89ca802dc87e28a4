/**
 * StepPlan → tensors → StepResult. Packs the rows of one forward pass (each row: a sequence,
 * the new tokens to run, which logits to return) into the graph's inputs, runs the session,
 * writes the new K/V rows into the paged cache, and hands back the requested logits.
 * Rows may be at different lengths and carry different numbers of new tokens (right-padded).
 */
import { manifestKvDtype, readManifest, MODEL_FILE } from './manifest.ts';
import * as io from './graph-io.ts';
import { KvCache, type SequenceCache } from './kv-cache.ts';
import type { Int4Kernel } from './native/q4-graph.ts';
import { openGraphSession, type Binder, type GraphSession, type HostInput } from './graph-session.ts';
import type { Device } from './session.ts';
import type { Gemma2Config } from '../checkpoint/config.ts';
import { join } from 'node:path';
import { freemem } from 'node:os';
import { EngineError } from '../errors.ts';

/** One row of a step: run `tokenIds` at positions seq.numCached.. and keep their K/V. */
export interface StepRow {
  readonly seq: SequenceCache;
  readonly tokenIds: ArrayLike<number>;
  /** Return logits for every new token, or only the last. */
  readonly logits: 'all' | 'last';
  /** False when the caller will not sample from this row (a prefill chunk that is not the last). */
  readonly sample?: boolean;
}

/** Logits of a step: row r's returned positions are rows [offsets[r], offsets[r+1]) of `logits`. */
export interface StepLogits {
  /** [numRows, vocabSize] */
  readonly logits: Float32Array;
  readonly offsets: readonly number[];
  readonly vocabSize: number;
}

export interface ModelRunnerOptions {
  readonly device?: Device;
  readonly blockSize?: number;
  /** KV cache budget in bytes (both layer kinds together); default: defaultKvCacheBytes(). */
  readonly kvCacheBytes?: number;
  /** Alternatively: room for one sequence of this many tokens (the score command). */
  readonly kvCacheTokens?: number;
  readonly intraOpThreads?: number;
  /** Sequences that run at once: caps the sliding-window pool (KvCache.fromBudget). */
  readonly maxNumSeqs?: number;
  /** How the paged graph is run: the native runner (default where built) or the stock binding. */
  readonly binder?: Binder;
  /** CPU int4 matmuls: gemma-serve's kernel where it is faster (`auto`, default), ONNX Runtime's (`ort`), or gemma-serve's always. */
  readonly int4Kernel?: Int4Kernel;
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

export class ModelRunner {
  private constructor(
    readonly config: Gemma2Config,
    readonly cache: KvCache,
    private readonly session: GraphSession,
  ) {}

  /** Int4 matmuls run by gemma-serve's kernel (GraphSession.int4Swapped). */
  get int4Swapped(): number {
    return this.session.int4Swapped;
  }

  static async load(exportDir: string, opts: ModelRunnerOptions = {}): Promise<ModelRunner> {
    const { config, manifest } = readManifest(exportDir);
    const dtype = manifestKvDtype(manifest);
    const session = await openGraphSession(join(exportDir, MODEL_FILE), { device: opts.device ?? 'cpu', intraOpThreads: opts.intraOpThreads, binder: opts.binder, int4Kernel: opts.int4Kernel });
    const blockSize = opts.blockSize ?? 16;
    const cache = opts.kvCacheTokens !== undefined
      ? new KvCache(config, { blockSize, numBlocks: { global: Math.ceil(opts.kvCacheTokens / blockSize) + 1, sliding: Math.ceil(opts.kvCacheTokens / blockSize) + 1 }, dtype })
      : KvCache.fromBudget(config, blockSize, opts.kvCacheBytes ?? defaultKvCacheBytes(config, blockSize, dtype), opts.maxNumSeqs, dtype);
    return new ModelRunner(config, cache, session);
  }

  /** Runs one forward pass. The caller has reserved cache room for every row's new tokens. */
  async step(rows: readonly StepRow[]): Promise<StepLogits> {
    const B = rows.length;
    if (B === 0) throw new EngineError('empty step');
    const S = Math.max(...rows.map((r) => r.tokenIds.length));
    const c = this.cache;
    const ids = new BigInt64Array(B * S).fill(BigInt(this.config.padTokenId));
    const positions = new BigInt64Array(B * S).fill(-1n);
    const logitRows: bigint[] = [];
    const offsets = [0];
    rows.forEach((r, b) => {
      const n = r.tokenIds.length;
      for (let s = 0; s < n; s++) {
        ids[b * S + s] = BigInt(r.tokenIds[s]!);
        positions[b * S + s] = BigInt(r.seq.numCached + s);
      }
      if (r.seq.numCached + n > this.config.maxPositions) throw new EngineError(`position ${r.seq.numCached + n} exceeds the context (${this.config.maxPositions})`);
      for (const k of io.LAYER_KINDS) {
        if (r.seq.blocks[k].length < c.blocksNeeded(k, r.seq.numCached + n)) throw new EngineError('cache room was not reserved for a step row');
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
      const M = Math.max(1, ...rows.map((r) => r.seq.blocks[k].length));
      const table = new BigInt64Array(B * M); // padding: null block 0
      const slots = new BigInt64Array(B * M * c.blockSize).fill(-1n);
      rows.forEach((r, b) => {
        r.seq.blocks[k].forEach((blk, j) => { table[b * M + j] = BigInt(blk); });
        const width = r.seq.blocks[k].length * c.blockSize;
        for (let i = 0; i < width; i++) slots[b * M * c.blockSize + i] = BigInt(c.slotPosition(k, r.seq.numCached, i));
      });
      inputs.push({ name: io.blockTable(k), type: 'int64', dims: [B, M], data: table });
      inputs.push({ name: io.slotPositions(k), type: 'int64', dims: [B, M * c.blockSize], data: slots });
    }
    const { numKvHeads: nkv, headDim: D } = this.config;
    c.pools.forEach(([kp, vp], l) => {
      const dims = [nkv, c.numBlocks[c.layerKinds[l]!], c.blockSize, D];
      // An fp16 pool is a Uint16Array of float16 bits, which ORT takes as 'float16' data.
      inputs.push({ name: io.cacheKey(l), type: kp instanceof Float32Array ? 'float32' : 'float16', dims, data: kp });
      inputs.push({ name: io.cacheValue(l), type: vp instanceof Float32Array ? 'float32' : 'float16', dims, data: vp });
    });
    const outputs = [{ name: io.LOGITS, dims: [logitRows.length, this.config.vocabSize] }];
    for (let l = 0; l < this.config.numLayers; l++) outputs.push({ name: io.newKey(l), dims: [B, S, nkv, D] }, { name: io.newValue(l), dims: [B, S, nkv, D] });

    const out = await this.session.run(inputs, outputs);

    for (let l = 0; l < this.config.numLayers; l++) {
      const keys = out[io.newKey(l)]!; // [B, S, nkv, D]
      const values = out[io.newValue(l)]!;
      rows.forEach((r, b) => {
        for (let s = 0; s < r.tokenIds.length; s++) c.write(l, r.seq, r.seq.numCached + s, keys, values, (b * S + s) * nkv * D);
      });
    }
    for (const r of rows) r.seq.numCached += r.tokenIds.length;
    return { logits: out[io.LOGITS]!, offsets, vocabSize: this.config.vocabSize };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
