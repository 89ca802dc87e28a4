/**
 * Host-owned paged KV cache: one block pool per layer kind (global, sliding), each layer a
 * pair of arrays [numKvHeads, numBlocks, blockSize, headDim] that are fed to the graph as
 * inputs (wrapped, never copied): Float32Array, or Uint16Array holding float16 bits in an
 * export with an fp16 cache (rows rounded to nearest even as they are written). A sequence holds a list of blocks per kind:
 * global blocks cover positions 0..len-1 in order; sliding blocks form a ring of
 * ceil(W / blockSize) blocks at slot pos % R, so a sliding layer never holds more than the
 * window (rounded up to a block). Block 0 of each pool is the null block used as padding.
 */
import type { Gemma2Config } from '../checkpoint/config.ts';
import { f32ToF16 } from '../f16.ts';
import { kvDtypeBytes, LAYER_KINDS, type KvDtype, type LayerKind } from './graph-io.ts';

/** A pool: float32 values, or float16 bits. */
export type KvPool = Float32Array | Uint16Array;

/** A sequence's share of the cache. Mutated only by KvCache. */
export interface SequenceCache {
  /** Positions whose K/V rows are stored. */
  numCached: number;
  readonly blocks: Record<LayerKind, number[]>;
}

export interface KvCacheOptions {
  readonly blockSize: number;
  /** Blocks per pool, null block included. */
  readonly numBlocks: Record<LayerKind, number>;
  /** Element type of the pools (default 'fp32'); must match the export's manifest. */
  readonly dtype?: KvDtype;
  /**
   * False: keep the block accounting only, with no host pools (a runner whose cache lives
   * elsewhere, e.g. on the GPU, sizes and admits with it). Default true.
   */
  readonly allocatePools?: boolean;
  /** A cap on one sequence's length below what the blocks hold (a runner with fixed-size slots). */
  readonly maxSequenceTokens?: number;
  /** Called when a sequence's blocks are released (finished, aborted or preempted). */
  readonly onRelease?: (seq: SequenceCache) => void;
}

export class KvCache {
  readonly blockSize: number;
  readonly numBlocks: Record<LayerKind, number>;
  readonly dtype: KvDtype;
  /** Per layer: [key, value] pools of that layer's kind (none when built with allocatePools false). */
  readonly pools: readonly (readonly [KvPool, KvPool])[];
  readonly layerKinds: readonly LayerKind[];
  /** Ring length of sliding layers, a whole number of blocks >= W. */
  readonly ringSlots: number;
  private readonly free: Record<LayerKind, number[]>;
  private readonly onRelease: ((seq: SequenceCache) => void) | undefined;
  private readonly lengthCap: number;

  constructor(readonly config: Gemma2Config, opts: KvCacheOptions) {
    this.blockSize = opts.blockSize;
    this.numBlocks = opts.numBlocks;
    this.dtype = opts.dtype ?? 'fp32';
    this.layerKinds = config.slidingLayers.map((s) => (s ? 'sliding' : 'global'));
    this.ringSlots = Math.ceil(config.slidingWindow / opts.blockSize) * opts.blockSize;
    const perBlock = config.numKvHeads * opts.blockSize * config.headDim;
    const pool = (n: number): KvPool => (this.dtype === 'fp16' ? new Uint16Array(n) : new Float32Array(n));
    this.pools = opts.allocatePools === false ? [] : this.layerKinds.map((k) => [pool(perBlock * this.numBlocks[k]), pool(perBlock * this.numBlocks[k])] as const);
    this.onRelease = opts.onRelease;
    this.lengthCap = opts.maxSequenceTokens ?? Infinity;
    this.free = { global: range(1, this.numBlocks.global), sliding: range(1, this.numBlocks.sliding) };
  }

  /**
   * Sizes the pools from a byte budget. By default both kinds get the same number of blocks:
   * a sequence never holds more sliding blocks than global ones. With `maxNumSeqs`, the sliding
   * pool is capped at what that many full windows need and the rest of the budget goes to
   * global blocks, i.e. to longer contexts: the hybrid cache's saving turned into capacity.
   */
  static fromBudget(config: Gemma2Config, blockSize: number, bytes: number, maxNumSeqs?: number, dtype: KvDtype = 'fp32'): KvCache {
    const layers = (sliding: boolean): number => config.slidingLayers.filter((s) => s === sliding).length;
    const perBlock = KvCache.bytesPerBlockPerLayer(config, blockSize, dtype);
    const [g, sl] = [perBlock * layers(false), perBlock * layers(true)];
    const n = Math.max(2, Math.floor(bytes / (g + sl)));
    const cap = maxNumSeqs === undefined ? Infinity : maxNumSeqs * Math.ceil(config.slidingWindow / blockSize) + 1;
    if (n <= cap || g === 0) return new KvCache(config, { blockSize, numBlocks: { global: n, sliding: n }, dtype });
    return new KvCache(config, { blockSize, numBlocks: { global: Math.max(2, Math.floor((bytes - cap * sl) / g)), sliding: cap }, dtype });
  }

  /** Bytes one token takes across all layers, K and V together, where every layer keeps it. */
  static bytesPerToken(config: Gemma2Config, dtype: KvDtype = 'fp32'): number {
    return KvCache.bytesPerBlockPerLayer(config, 1, dtype) * config.numLayers;
  }

  /** Bytes one block takes in one layer, K and V together. */
  static bytesPerBlockPerLayer(config: Gemma2Config, blockSize: number, dtype: KvDtype = 'fp32'): number {
    return 2 * config.numKvHeads * blockSize * config.headDim * kvDtypeBytes(dtype);
  }

  newSequence(): SequenceCache {
    return { numCached: 0, blocks: { global: [], sliding: [] } };
  }

  /** Blocks a sequence of `len` positions holds of each kind. */
  blocksNeeded(kind: LayerKind, len: number): number {
    const n = Math.ceil(len / this.blockSize);
    return kind === 'global' ? n : Math.min(n, this.ringSlots / this.blockSize);
  }

  /** Whether `seq` could grow to `len` positions now (nothing taken). */
  canReserve(seq: SequenceCache, len: number): boolean {
    return LAYER_KINDS.every((k) => this.blocksNeeded(k, len) - seq.blocks[k].length <= this.free[k].length);
  }

  /** The longest sequence the pools can hold when nothing else is held. */
  maxSequenceTokens(): number {
    const global = (this.numBlocks.global - 1) * this.blockSize;
    const slidingFits = this.numBlocks.sliding - 1 >= this.ringSlots / this.blockSize;
    return Math.min(this.lengthCap, slidingFits ? global : Math.min(global, (this.numBlocks.sliding - 1) * this.blockSize));
  }

  /** Whether a sequence of `len` positions fits the pools at all (when nothing else is held). */
  fitsEmpty(len: number): boolean {
    return len <= this.lengthCap && LAYER_KINDS.every((k) => this.blocksNeeded(k, len) <= this.numBlocks[k] - 1);
  }

  /** Grows `seq` to hold `len` positions; false (and nothing taken) when a pool is short. */
  reserve(seq: SequenceCache, len: number): boolean {
    const want = LAYER_KINDS.map((k) => this.blocksNeeded(k, len) - seq.blocks[k].length);
    if (LAYER_KINDS.some((k, i) => want[i]! > this.free[k].length)) return false;
    LAYER_KINDS.forEach((k, i) => {
      for (let j = 0; j < want[i]!; j++) seq.blocks[k].push(this.free[k].pop()!);
    });
    return true;
  }

  release(seq: SequenceCache): void {
    for (const k of LAYER_KINDS) {
      this.free[k].push(...seq.blocks[k]);
      seq.blocks[k].length = 0;
    }
    seq.numCached = 0;
    this.onRelease?.(seq);
  }

  numFreeBlocks(kind: LayerKind): number {
    return this.free[kind].length;
  }

  /** Slot index within the row's gathered view where position `pos` lives. */
  viewSlot(kind: LayerKind, pos: number): number {
    return kind === 'global' ? pos : pos % this.ringSlots;
  }

  /** Absolute position held by view slot `i` of a sequence with `numCached` positions, or -1. */
  slotPosition(kind: LayerKind, numCached: number, i: number): number {
    if (kind === 'global' || numCached <= this.ringSlots) return i < numCached ? i : -1;
    const last = numCached - 1;
    return last - ((last - i) % this.ringSlots + this.ringSlots) % this.ringSlots;
  }

  /** Writes one token's K/V rows ([nkv, D] each, from `src` at `srcOffset` with head stride `headStride`). */
  write(layer: number, seq: SequenceCache, pos: number, keys: Float32Array, values: Float32Array, srcOffset: number): void {
    const kind = this.layerKinds[layer]!;
    const slot = this.viewSlot(kind, pos);
    const block = seq.blocks[kind][Math.floor(slot / this.blockSize)]!;
    const off = slot % this.blockSize;
    const { numKvHeads: nkv, headDim: D } = this.config;
    const [kp, vp] = this.pools[layer]!;
    const nb = this.numBlocks[kind];
    for (let h = 0; h < nkv; h++) {
      const dst = ((h * nb + block) * this.blockSize + off) * D;
      const src = srcOffset + h * D;
      if (kp instanceof Float32Array) {
        kp.set(keys.subarray(src, src + D), dst);
        (vp as Float32Array).set(values.subarray(src, src + D), dst);
      } else {
        for (let i = 0; i < D; i++) {
          kp[dst + i] = f32ToF16(keys[src + i]!);
          vp[dst + i] = f32ToF16(values[src + i]!);
        }
      }
    }
  }
}

function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = to - 1; i >= from; i--) out.push(i);
  return out;
}
