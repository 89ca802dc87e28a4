/**
 * StepRow[] → StepLogits for an export with the 'gqa' attention layout, through the native
 * runner: the KV cache stays in the session's device memory (GPU memory under --device cuda)
 * and is updated in place by GroupQueryAttention; per step only token ids, positions, sequence
 * lengths and the selected logits cross between host and device.
 *
 * Cache layout: per layer a K and a V buffer [slots, numKvHeads, L, headDim], one slot per
 * running sequence, L = the longest sequence served. A run binds the slot range its rows use
 * as past_key/present_key (one memory: ORT's past_present_share_buffer). A decode run covers
 * the slots from the lowest to the highest of its rows; a slot in between that is not in the
 * step runs a throw-away token at its own next position (overwritten before it is ever read),
 * so nothing has to be moved. Slots are taken lowest first and given back when the scheduler
 * releases the sequence (KvCache onRelease).
 *
 * The host KvCache keeps the scheduler's block accounting (no host pools): it is sized so it
 * admits exactly what the slots hold. Sliding layers keep all L positions here (GQA masks the
 * window with local_window_size; it has no ring layout), so the hybrid cache's saving is not
 * taken on this path.
 */
import { manifestKvDtype, readManifest, MODEL_FILE } from './manifest.ts';
import * as io from './graph-io.ts';
import { KvCache, type SequenceCache } from './kv-cache.ts';
import { defaultKvCacheBytes, type ModelRunnerOptions, type StepLogits, type StepRow } from './model-runner.ts';
import { NativeSession, OnnxType, type Binding } from './native/ort-native.ts';
import type { Gemma2Config } from '../checkpoint/config.ts';
import { EngineError } from '../errors.ts';
import { join } from 'node:path';

export class SlotRunner {
  /** Sequences that can run at once (one slot each): the worker caps --max-num-seqs at this. */
  readonly maxRunning: number;
  private readonly slotOf = new Map<SequenceCache, number>();
  private readonly occupant: (SequenceCache | undefined)[];
  private readonly kv: readonly { key: number; value: number }[];
  private readonly slotBytes: number;
  private readonly cacheType: typeof OnnxType.FLOAT | typeof OnnxType.FLOAT16;
  private logits = new Float32Array(0);

  private constructor(
    readonly config: Gemma2Config,
    readonly cache: KvCache,
    private readonly session: NativeSession,
    /** Positions one slot holds (the longest sequence). */
    readonly slotLength: number,
    slots: number,
    kvDtype: io.KvDtype,
  ) {
    this.maxRunning = slots;
    this.occupant = new Array<SequenceCache | undefined>(slots).fill(undefined);
    this.cacheType = kvDtype === 'fp16' ? OnnxType.FLOAT16 : OnnxType.FLOAT;
    this.slotBytes = config.numKvHeads * slotLength * config.headDim * io.kvDtypeBytes(kvDtype);
    this.kv = Array.from({ length: config.numLayers }, () => ({
      key: session.allocate(slots * this.slotBytes),
      value: session.allocate(slots * this.slotBytes),
    }));
  }

  /** Int4 matmuls run by gemma-serve's kernel (NativeSession.int4Swapped). */
  get int4Swapped(): number {
    return this.session.int4Swapped;
  }

  /**
   * Sizes the slots: L = the context (or `kvCacheTokens`), and as many slots as the budget
   * (`kvCacheBytes`; with only `kvCacheTokens`, one slot) holds at that length, at least 1 and
   * at most `maxNumSeqs`.
   */
  static load(exportDir: string, opts: ModelRunnerOptions = {}): SlotRunner {
    const { config, manifest } = readManifest(exportDir);
    const dtype = manifestKvDtype(manifest);
    const blockSize = opts.blockSize ?? 16;
    const perToken = KvCache.bytesPerToken(config, dtype);
    const L = Math.min(config.maxPositions, opts.kvCacheTokens ?? config.maxPositions);
    const budget = opts.kvCacheBytes ?? (opts.kvCacheTokens !== undefined ? L * perToken : defaultKvCacheBytes(config, blockSize, dtype));
    const slots = Math.max(1, Math.min(opts.maxNumSeqs ?? Infinity, Math.floor(budget / (L * perToken))));
    const session = NativeSession.create(join(exportDir, MODEL_FILE), { device: opts.device ?? 'cpu', intraOpThreads: opts.intraOpThreads, int4Kernel: opts.int4Kernel });
    let runner: SlotRunner | undefined;
    const perSeq = Math.ceil(L / blockSize);
    const cache = new KvCache(config, {
      blockSize,
      numBlocks: { global: slots * perSeq + 1, sliding: slots * perSeq + 1 },
      dtype,
      allocatePools: false,
      maxSequenceTokens: L,
      onRelease: (seq) => runner?.freeSlot(seq),
    });
    try {
      runner = new SlotRunner(config, cache, session, L, slots, dtype);
    } catch (e) {
      session.release();
      throw new EngineError(`cannot allocate the KV cache (${slots} × ${L} positions): ${(e as Error).message}; lower --kv-cache-memory or --max-num-seqs`, 'kv_cache_alloc_failed', 500, { cause: e });
    }
    return runner;
  }

  /** Runs one forward pass. The caller has reserved cache room for every row's new tokens. */
  async step(rows: readonly StepRow[]): Promise<StepLogits> {
    if (rows.length === 0) throw new EngineError('empty step');
    const V = this.config.vocabSize;
    const offsets = [0];
    for (const r of rows) {
      const n = r.tokenIds.length;
      if (n === 0) throw new EngineError('a step row without tokens');
      if (r.seq.numCached + n > this.slotLength) throw new EngineError(`position ${r.seq.numCached + n} exceeds the cache slot (${this.slotLength})`);
      if (r.seq.blocks.global.length < this.cache.blocksNeeded('global', r.seq.numCached + n)) throw new EngineError('cache room was not reserved for a step row');
      this.takeSlot(r.seq);
      offsets.push(offsets.at(-1)! + (r.logits === 'all' ? n : 1));
    }
    if (this.logits.length < offsets.at(-1)! * V) this.logits = new Float32Array(offsets.at(-1)! * V);
    // Maximal runs of single-token rows go together; a multi-token row (a prefill chunk) runs alone.
    for (let i = 0; i < rows.length;) {
      let j = i + 1;
      if (rows[i]!.tokenIds.length === 1) while (j < rows.length && rows[j]!.tokenIds.length === 1) j++;
      const out = this.logits.subarray(offsets[i]! * V, offsets[j]! * V);
      if (j - i === 1 && rows[i]!.tokenIds.length > 1) this.runChunk(rows[i]!, out);
      else this.runDecode(rows.slice(i, j), out);
      i = j;
    }
    for (const r of rows) r.seq.numCached += r.tokenIds.length;
    return { logits: this.logits.subarray(0, offsets.at(-1)! * V), offsets, vocabSize: V };
  }

  /** One row, n new tokens after its cached ones. */
  private runChunk(r: StepRow, out: Float32Array): void {
    const n = r.tokenIds.length;
    const p = r.seq.numCached;
    const ids = BigInt64Array.from(r.tokenIds as ArrayLike<number>, (t) => BigInt(t));
    const positions = BigInt64Array.from({ length: n }, (_, s) => BigInt(p + s));
    const logitRows = r.logits === 'all' ? BigInt64Array.from({ length: n }, (_, s) => BigInt(s)) : BigInt64Array.of(BigInt(n - 1));
    this.run(this.slotOf.get(r.seq)!, 1, n, ids, positions, logitRows, Int32Array.of(p + n - 1), out);
  }

  /** Single-token rows: one run over the slot range they span. */
  private runDecode(rows: readonly StepRow[], out: Float32Array): void {
    const slots = rows.map((r) => this.slotOf.get(r.seq)!);
    const lo = Math.min(...slots);
    const B = Math.max(...slots) - lo + 1;
    const ids = new BigInt64Array(B).fill(BigInt(this.config.padTokenId));
    const positions = new BigInt64Array(B);
    const seqlens = new Int32Array(B);
    for (let b = 0; b < B; b++) {
      // A slot not in this step: a throw-away token at its own next position (never read before it is
      // overwritten). A running sequence never holds more than L - 1 positions (prompt + max_tokens <= L,
      // and the last sampled token is not fed), so the position is inside the slot.
      const p = Math.min(this.occupant[lo + b]?.numCached ?? 0, this.slotLength - 1);
      positions[b] = BigInt(p);
      seqlens[b] = p;
    }
    rows.forEach((r, i) => {
      const b = slots[i]! - lo;
      ids[b] = BigInt(r.tokenIds[0]!);
      positions[b] = BigInt(r.seq.numCached);
      seqlens[b] = r.seq.numCached;
    });
    const logitRows = BigInt64Array.from(slots, (s) => BigInt(s - lo));
    this.run(lo, B, 1, ids, positions, logitRows, seqlens, out);
  }

  private run(firstSlot: number, B: number, S: number, ids: BigInt64Array, positions: BigInt64Array, logitRows: BigInt64Array, seqlens: Int32Array, out: Float32Array): void {
    const total = Math.max(...seqlens) + 1;
    const inputs: Binding[] = [
      { name: io.INPUT_IDS, type: OnnxType.INT64, dims: [B, S], data: ids },
      { name: io.POSITIONS, type: OnnxType.INT64, dims: [B, S], data: positions },
      { name: io.LOGIT_ROWS, type: OnnxType.INT64, dims: [logitRows.length], data: logitRows },
      { name: io.SEQLENS_K, type: OnnxType.INT32, dims: [B], data: seqlens },
      { name: io.TOTAL_SEQUENCE_LENGTH, type: OnnxType.INT32, dims: [1], data: Int32Array.of(total) },
    ];
    const outputs: Binding[] = [{ name: io.LOGITS, type: OnnxType.FLOAT, dims: [logitRows.length, this.config.vocabSize], data: out }];
    const dims = [B, this.config.numKvHeads, this.slotLength, this.config.headDim];
    const byteOffset = firstSlot * this.slotBytes;
    this.kv.forEach(({ key, value }, l) => {
      inputs.push({ name: io.pastKey(l), type: this.cacheType, dims, data: { buffer: key, byteOffset } });
      inputs.push({ name: io.pastValue(l), type: this.cacheType, dims, data: { buffer: value, byteOffset } });
      outputs.push({ name: io.presentKey(l), type: this.cacheType, dims, data: { buffer: key, byteOffset } });
      outputs.push({ name: io.presentValue(l), type: this.cacheType, dims, data: { buffer: value, byteOffset } });
    });
    this.session.run(inputs, outputs);
  }

  private takeSlot(seq: SequenceCache): void {
    if (this.slotOf.has(seq)) return;
    const free = this.occupant.indexOf(undefined);
    if (free < 0) throw new EngineError(`more running sequences than cache slots (${this.maxRunning})`);
    this.occupant[free] = seq;
    this.slotOf.set(seq, free);
  }

  private freeSlot(seq: SequenceCache): void {
    const slot = this.slotOf.get(seq);
    if (slot === undefined) return;
    this.occupant[slot] = undefined;
    this.slotOf.delete(seq);
  }

  async release(): Promise<void> {
    this.session.release();
  }
}
