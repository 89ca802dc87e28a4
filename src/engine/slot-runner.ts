/**
 * StepPlan → StepOutput (a Runner, src/scheduler/runner-contract.ts) for an export with the
 * 'gqa' attention layout, through the native runner: the KV cache stays in the session's device memory (GPU memory under --device cuda)
 * and is updated in place by GroupQueryAttention; per step only token ids, positions, sequence
 * lengths and the selected logits cross between host and device. When the step loop's sampler
 * reads logits in place (keepLogitsOnDevice), not even those: each pass writes its logits rows
 * into a buffer in the session's device memory, one after the other (StepOutput.device maps the
 * plan's rows onto them), and only what the sampler returns comes back.
 *
 * Cache layout: per layer a K and a V buffer [slots, numKvHeads, L, headDim], one slot per
 * running sequence, L = the longest sequence served. A run binds the slot range its rows use
 * as past_key/present_key (one memory: ORT's past_present_share_buffer). A decode run covers
 * the slots from the lowest to the highest of its rows; a slot in between that is not in the
 * step runs a throw-away token at its own next position (overwritten before it is ever read),
 * so nothing has to be moved. Slots are taken lowest first (a sequence's first row) and given
 * back when a plan says the sequence finished or was preempted.
 *
 * The plan's block tables are not read: the layout this runner reports (one slot's worth of
 * blocks per slot, capped at L positions per sequence) only makes the scheduler's accounting
 * admit exactly what the slots hold. Sliding layers keep all L positions here (GQA masks the
 * window with local_window_size; it has no ring layout), so the hybrid cache's saving is not
 * taken on this path.
 */
import { manifestHasHidden, manifestKvDtype, readManifest, MODEL_FILE } from './manifest.ts';
import * as io from './graph-io.ts';
import { KvCache } from './kv-cache.ts';
import { defaultKvCacheBytes, type ModelRunnerOptions } from './model-runner.ts';
import { copyHidden, isContiguous, logitOffsets, newHiddenRows, scatterLogits, stepGroups } from './step-groups.ts';
import { blocksNeeded, type CacheLayout, type DeviceLogits, type HiddenRows, type PlanRow, type Runner, type StepOutput, type StepPlan } from '../scheduler/runner-contract.ts';
import { NativeSession, OnnxType, type Binding, type DeviceRef, type PreparedBindings } from './native/ort-native.ts';
import { reusable } from './reusable.ts';
import type { Gemma2Config } from '../checkpoint/config.ts';
import { EngineError } from '../errors.ts';
import { join } from 'node:path';

/** Slot ranges whose KV bindings a SlotRunner keeps prepared (a steady decode uses one). */
const PREPARED_KEPT = 16;

export class SlotRunner implements Runner {
  /** Sequences that can run at once (one slot each): the worker caps --max-num-seqs at this. */
  readonly maxRunning: number;
  /** Sequence id → its slot. */
  private readonly slotOf = new Map<number, number>();
  /** Per slot: the sequence holding it (its id), if any. */
  private readonly occupant: (number | undefined)[];
  /** Per slot: positions stored. */
  private readonly stored: number[];
  private scratch = new Float32Array(0);
  private readonly kv: readonly { key: number; value: number }[];
  private readonly slotBytes: number;
  private readonly cacheType: typeof OnnxType.FLOAT | typeof OnnxType.FLOAT16;
  private logits = new Float32Array(0);
  /** Where logits stay on the device (keepLogitsOnDevice): the buffer and the rows it holds; else null. */
  private deviceLogits: { buffer: number; rows: number } | null = null;
  /** Where each plan logits row of a device step went (StepOutput.device.rowIndex), reused. */
  private rowIndex = new Int32Array(0);
  /** The `hidden` output of a pass with an embedding row, reused. */
  private passHidden = new Float32Array(0);
  /** A run's small inputs, reused from step to step (bound with their shapes: longer arrays are fine). */
  private readonly ids = reusable((n) => new BigInt64Array(n));
  private readonly positions = reusable((n) => new BigInt64Array(n));
  private readonly seqlens = reusable((n) => new Int32Array(n));
  private readonly logitRows = reusable((n) => new BigInt64Array(n));
  private readonly slots = reusable((n) => new Int32Array(n));
  private readonly totalLength = new Int32Array(1);
  /**
   * The KV caches' bindings of a run over `B` slots from `firstSlot` (key firstSlot * 2^16 + B),
   * made once (NativeSession.prepare): a decode step over the same slots binds them at no cost.
   * At most PREPARED_KEPT, the oldest dropped.
   */
  private readonly preparedKv = new Map<number, PreparedBindings>();
  /** The model's hidden size where the export has the `hidden` output (embeddings); else undefined. */
  readonly hiddenSize: number | undefined;

  private constructor(
    readonly config: Gemma2Config,
    readonly layout: CacheLayout,
    private readonly session: NativeSession,
    /** Positions one slot holds (the longest sequence). */
    readonly slotLength: number,
    slots: number,
    kvDtype: io.KvDtype,
    hasHidden: boolean,
  ) {
    this.hiddenSize = hasHidden ? config.hiddenSize : undefined;
    this.maxRunning = slots;
    this.occupant = new Array<number | undefined>(slots).fill(undefined);
    this.stored = new Array<number>(slots).fill(0);
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
    const perSeq = Math.ceil(L / blockSize);
    const layout = KvCache.layout(config, blockSize, { global: slots * perSeq + 1, sliding: slots * perSeq + 1 }, L);
    try {
      return new SlotRunner(config, layout, session, L, slots, dtype, manifestHasHidden(manifest));
    } catch (e) {
      session.release();
      throw new EngineError(`cannot allocate the KV cache (${slots} × ${L} positions): ${(e as Error).message}; lower --kv-cache-memory or --max-num-seqs`, 'kv_cache_alloc_failed', 500, { cause: e });
    }
  }

  keepLogitsOnDevice(device: string): boolean {
    if (device !== this.session.device) return false;
    this.deviceLogits ??= { buffer: -1, rows: 0 };
    return true;
  }

  /** Runs a step: frees the slots of ended and preempted sequences, then its passes (step-groups.ts), logits in plan order. */
  async execute(plan: StepPlan): Promise<StepOutput> {
    for (const id of plan.finishedSeqIds) this.freeSlot(id);
    for (const id of plan.preemptedSeqIds) this.freeSlot(id);
    const V = this.config.vocabSize;
    const { rows } = plan;
    for (const r of rows) {
      const n = r.tokenIds.length;
      if (n === 0) throw new EngineError('a step row without tokens');
      if (r.start + n > this.slotLength) throw new EngineError(`position ${r.start + n} exceeds the cache slot (${this.slotLength})`);
      if (r.blocks.global.length < blocksNeeded(this.layout, 'global', r.start + n)) throw new EngineError('cache room was not reserved for a step row');
      this.takeSlot(r.seqId);
    }
    const hidden = this.hiddenSize === undefined ? undefined : newHiddenRows(rows, this.hiddenSize);
    if (hidden === undefined && rows.some((r) => r.hidden !== undefined)) throw new EngineError('this export has no hidden-state output (embeddings): export the checkpoint again');
    const offsets = logitOffsets(rows);
    if (this.deviceLogits !== null) return this.executeOnDevice(rows, offsets, hidden);
    if (this.logits.length < offsets.at(-1)! * V) this.logits = new Float32Array(offsets.at(-1)! * V);
    for (const g of stepGroups(rows)) {
      // A pass whose rows are consecutive in the plan writes its logits in place; else through scratch.
      const direct = isContiguous(g);
      const size = (offsets[g.at(-1)! + 1]! - offsets[g[0]!]!) * V;
      if (!direct && this.scratch.length < size) this.scratch = new Float32Array(size);
      const out = direct ? this.logits.subarray(offsets[g[0]!]! * V, offsets[g.at(-1)! + 1]! * V) : this.scratch;
      const first = rows[g[0]!]!;
      if (g.length === 1 && first.tokenIds.length > 1) this.runChunk(first, g[0]!, out, hidden);
      else this.runDecode(g.map((i) => rows[i]!), g, out, hidden);
      if (!direct) scatterLogits(g, this.scratch, offsets, V, this.logits);
      for (const i of g) this.stored[this.slotOf.get(rows[i]!.seqId)!] = rows[i]!.start + rows[i]!.tokenIds.length;
    }
    return { logits: this.logits.subarray(0, offsets.at(-1)! * V), offsets, vocabSize: V, ...(hidden !== undefined ? { hidden } : {}) };
  }

  /**
   * The step's passes with their logits left in the device buffer: each pass's rows follow the
   * previous pass's (plan order within a pass, as scatterLogits would place them), so nothing is
   * scattered; `rowIndex` says where each plan logits row went.
   */
  private executeOnDevice(rows: readonly PlanRow[], offsets: readonly number[], hidden: HiddenRows | undefined): StepOutput {
    const V = this.config.vocabSize;
    const total = offsets.at(-1)!;
    const dl = this.deviceLogits!;
    if (dl.rows < total) {
      // Grown to the most rows a step has had (at least the slots: a full decode step).
      if (dl.buffer >= 0) this.session.free(dl.buffer);
      dl.buffer = -1;
      const want = Math.max(total, this.maxRunning);
      dl.buffer = this.session.allocate(want * V * 4);
      dl.rows = want;
    }
    if (this.rowIndex.length < total) this.rowIndex = new Int32Array(Math.max(total, this.maxRunning));
    const rowIndex = this.rowIndex.subarray(0, total);
    let cursor = 0;
    for (const g of stepGroups(rows)) {
      const out: DeviceRef = { buffer: dl.buffer, byteOffset: cursor * V * 4 };
      for (const i of g) for (let k = offsets[i]!; k < offsets[i + 1]!; k++) rowIndex[k] = cursor++;
      const first = rows[g[0]!]!;
      if (g.length === 1 && first.tokenIds.length > 1) this.runChunk(first, g[0]!, out, hidden);
      else this.runDecode(g.map((i) => rows[i]!), g, out, hidden);
      for (const i of g) this.stored[this.slotOf.get(rows[i]!.seqId)!] = rows[i]!.start + rows[i]!.tokenIds.length;
    }
    const device: DeviceLogits = { owner: this.session, buffer: dl.buffer, byteOffset: 0, numRows: total, rowIndex };
    return { logits: new Float32Array(0), device, offsets, vocabSize: V, ...(hidden !== undefined ? { hidden } : {}) };
  }

  /** One row (plan row `i`), n new tokens after its stored ones. */
  private runChunk(r: PlanRow, i: number, out: Float32Array | DeviceRef, hidden: HiddenRows | undefined): void {
    const n = r.tokenIds.length;
    const p = r.start;
    const ids = BigInt64Array.from(r.tokenIds, (t) => BigInt(t));
    const positions = BigInt64Array.from({ length: n }, (_, s) => BigInt(p + s));
    const logitRows = r.logits === 'all' ? BigInt64Array.from({ length: n }, (_, s) => BigInt(s)) : BigInt64Array.of(BigInt(n - 1));
    const passHidden = this.run(this.slotOf.get(r.seqId)!, 1, n, logitRows.length, ids, positions, logitRows, Int32Array.of(p + n - 1), out, hidden !== undefined && r.hidden !== undefined);
    if (passHidden !== null) copyHidden(r, i, passHidden, 0, hidden!);
  }

  /** Single-token rows (plan rows `planIndex`): one run over the slot range they span. */
  private runDecode(rows: readonly PlanRow[], planIndex: readonly number[], out: Float32Array | DeviceRef, hidden: HiddenRows | undefined): void {
    const R = rows.length;
    const slots = this.slots(R);
    let lo = Infinity, hi = -1;
    for (let i = 0; i < R; i++) {
      const slot = this.slotOf.get(rows[i]!.seqId)!;
      slots[i] = slot;
      if (slot < lo) lo = slot;
      if (slot > hi) hi = slot;
    }
    const B = hi - lo + 1;
    const ids = this.ids(B).fill(BigInt(this.config.padTokenId), 0, B);
    const positions = this.positions(B);
    const seqlens = this.seqlens(B);
    for (let b = 0; b < B; b++) {
      // A slot not in this step: a throw-away token at its own next position (never read before it is
      // overwritten). A running sequence never holds more than L - 1 positions (prompt + max_tokens <= L,
      // and the last sampled token is not fed), so the position is inside the slot.
      const p = Math.min(this.occupant[lo + b] !== undefined ? this.stored[lo + b]! : 0, this.slotLength - 1);
      positions[b] = BigInt(p);
      seqlens[b] = p;
    }
    let wantsHidden = false;
    const logitRows = this.logitRows(R);
    for (let i = 0; i < R; i++) {
      const r = rows[i]!;
      const b = slots[i]! - lo;
      ids[b] = BigInt(r.tokenIds[0]!);
      positions[b] = BigInt(r.start);
      seqlens[b] = r.start;
      logitRows[i] = BigInt(b);
      if (r.hidden !== undefined) wantsHidden = hidden !== undefined;
    }
    const passHidden = this.run(lo, B, 1, R, ids, positions, logitRows, seqlens, out, wantsHidden);
    if (passHidden !== null) rows.forEach((r, i) => copyHidden(r, planIndex[i]!, passHidden, slots[i]! - lo, hidden!));
  }

  /**
   * One run over B slots from `firstSlot`, S tokens each, `numLogits` logits rows; the arrays may
   * be longer than that. With `wantsHidden`, the `hidden` output of its B * S positions (valid
   * until the next run), else null.
   */
  private run(firstSlot: number, B: number, S: number, numLogits: number, ids: BigInt64Array, positions: BigInt64Array, logitRows: BigInt64Array, seqlens: Int32Array, out: Float32Array | DeviceRef, wantsHidden = false): Float32Array | null {
    let longest = 0;
    for (let b = 0; b < B; b++) if (seqlens[b]! > longest) longest = seqlens[b]!;
    this.totalLength[0] = longest + 1;
    const inputs: Binding[] = [
      { name: io.INPUT_IDS, type: OnnxType.INT64, dims: [B, S], data: ids },
      { name: io.POSITIONS, type: OnnxType.INT64, dims: [B, S], data: positions },
      { name: io.LOGIT_ROWS, type: OnnxType.INT64, dims: [numLogits], data: logitRows },
      { name: io.SEQLENS_K, type: OnnxType.INT32, dims: [B], data: seqlens },
      { name: io.TOTAL_SEQUENCE_LENGTH, type: OnnxType.INT32, dims: [1], data: this.totalLength },
    ];
    const outputs: Binding[] = [{ name: io.LOGITS, type: OnnxType.FLOAT, dims: [numLogits, this.config.vocabSize], data: out }];
    const H = this.config.hiddenSize;
    if (wantsHidden && this.passHidden.length < B * S * H) this.passHidden = new Float32Array(B * S * H);
    const passHidden = wantsHidden ? this.passHidden.subarray(0, B * S * H) : null;
    if (passHidden !== null) outputs.push({ name: io.HIDDEN, type: OnnxType.FLOAT, dims: [B * S, H], data: passHidden });
    this.session.run(inputs, outputs, this.kvBindings(firstSlot, B));
    return passHidden;
  }

  /** Every layer's past and present K and V over B slots from `firstSlot` (one memory), prepared once. */
  private kvBindings(firstSlot: number, B: number): PreparedBindings {
    const key = firstSlot * 65536 + B;
    let prepared = this.preparedKv.get(key);
    if (prepared === undefined) {
      const dims = [B, this.config.numKvHeads, this.slotLength, this.config.headDim];
      const byteOffset = firstSlot * this.slotBytes;
      const inputs: Binding[] = [];
      const outputs: Binding[] = [];
      this.kv.forEach(({ key: k, value: v }, l) => {
        inputs.push({ name: io.pastKey(l), type: this.cacheType, dims, data: { buffer: k, byteOffset } });
        inputs.push({ name: io.pastValue(l), type: this.cacheType, dims, data: { buffer: v, byteOffset } });
        outputs.push({ name: io.presentKey(l), type: this.cacheType, dims, data: { buffer: k, byteOffset } });
        outputs.push({ name: io.presentValue(l), type: this.cacheType, dims, data: { buffer: v, byteOffset } });
      });
      prepared = this.session.prepare(inputs, outputs);
      if (this.preparedKv.size >= PREPARED_KEPT) this.preparedKv.delete(this.preparedKv.keys().next().value!);
      this.preparedKv.set(key, prepared);
    }
    return prepared;
  }

  private takeSlot(seqId: number): void {
    if (this.slotOf.has(seqId)) return;
    const free = this.occupant.indexOf(undefined);
    if (free < 0) throw new EngineError(`more running sequences than cache slots (${this.maxRunning})`);
    this.occupant[free] = seqId;
    this.stored[free] = 0;
    this.slotOf.set(seqId, free);
  }

  /** Idempotent: a plan may name a sequence that holds no slot (never ran, or freed already). */
  private freeSlot(seqId: number): void {
    const slot = this.slotOf.get(seqId);
    if (slot === undefined) return;
    this.occupant[slot] = undefined;
    this.stored[slot] = 0;
    this.slotOf.delete(seqId);
  }

  async release(): Promise<void> {
    this.session.release();
  }
}
