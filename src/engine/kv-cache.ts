/**
 * Host-owned paged KV cache storage, the runner's side of the cache: one block pool per layer,
 * a pair of arrays [numKvHeads, numBlocks, blockSize, headDim] of that layer's kind (global,
 * sliding) that are fed to the graph as inputs (wrapped, never copied): Float32Array, or
 * Uint16Array holding float16 bits in an export with an fp16 cache (rows rounded to nearest even
 * as they are written). Also the sizing of a cache from a byte budget. Which blocks a sequence
 * holds is the scheduler's business (src/scheduler/kv-cache-manager.ts): a step plan hands the
 * blocks over; the geometry both agree on is a CacheLayout (src/scheduler/runner-contract.ts).
 */
import type { Gemma2Config } from '../checkpoint/config.ts';
import { f32ToF16 } from '../f16.ts';
import { kvDtypeBytes, type KvDtype } from './graph-io.ts';
import { viewSlot, type CacheLayout, type LayerKind } from '../scheduler/runner-contract.ts';

/** A pool: float32 values, or float16 bits. */
export type KvPool = Float32Array | Uint16Array;

export class KvCache {
  readonly dtype: KvDtype;
  /** Per layer: [key, value] pools of that layer's kind. */
  readonly pools: readonly (readonly [KvPool, KvPool])[];
  readonly layerKinds: readonly LayerKind[];

  constructor(readonly config: Gemma2Config, readonly layout: CacheLayout, dtype: KvDtype = 'fp32') {
    this.dtype = dtype;
    this.layerKinds = layerKinds(config);
    const perBlock = config.numKvHeads * layout.blockSize * config.headDim;
    const pool = (n: number): KvPool => (dtype === 'fp16' ? new Uint16Array(n) : new Float32Array(n));
    this.pools = this.layerKinds.map((k) => [pool(perBlock * layout.numBlocks[k]), pool(perBlock * layout.numBlocks[k])] as const);
  }

  /**
   * The layout of `numBlocks` blocks of `blockSize` for this model (its sliding ring: whole blocks
   * covering the window, and one more with prefix caching: see CacheLayout.prefixCaching).
   */
  static layout(config: Gemma2Config, blockSize: number, numBlocks: Record<LayerKind, number>, maxSequenceTokens?: number, prefixCaching = false): CacheLayout {
    const ringSlots = KvCache.ringBlocks(config, blockSize, prefixCaching) * blockSize;
    return {
      blockSize, numBlocks, ringSlots,
      ...(maxSequenceTokens !== undefined ? { maxSequenceTokens } : {}),
      ...(prefixCaching ? { prefixCaching: { slidingWindow: config.slidingWindow } } : {}),
    };
  }

  /** Blocks of one sequence's sliding ring. */
  static ringBlocks(config: Gemma2Config, blockSize: number, prefixCaching: boolean): number {
    return Math.ceil(config.slidingWindow / blockSize) + (prefixCaching ? 1 : 0);
  }

  /**
   * Sizes the pools from a byte budget. By default both kinds get the same number of blocks:
   * a sequence never holds more sliding blocks than global ones. With `maxNumSeqs`, the sliding
   * pool is capped at what that many full windows need and the rest of the budget goes to
   * global blocks, i.e. to longer contexts: the hybrid cache's saving turned into capacity.
   */
  static layoutFromBudget(config: Gemma2Config, blockSize: number, bytes: number, maxNumSeqs?: number, dtype: KvDtype = 'fp32', prefixCaching = false): CacheLayout {
    const layers = (sliding: boolean): number => config.slidingLayers.filter((s) => s === sliding).length;
    const perBlock = KvCache.bytesPerBlockPerLayer(config, blockSize, dtype);
    const [g, sl] = [perBlock * layers(false), perBlock * layers(true)];
    const n = Math.max(2, Math.floor(bytes / (g + sl)));
    const cap = maxNumSeqs === undefined ? Infinity : maxNumSeqs * KvCache.ringBlocks(config, blockSize, prefixCaching) + 1;
    if (n <= cap || g === 0) return KvCache.layout(config, blockSize, { global: n, sliding: n }, undefined, prefixCaching);
    return KvCache.layout(config, blockSize, { global: Math.max(2, Math.floor((bytes - cap * sl) / g)), sliding: cap }, undefined, prefixCaching);
  }

  /** Bytes one token takes across all layers, K and V together, where every layer keeps it. */
  static bytesPerToken(config: Gemma2Config, dtype: KvDtype = 'fp32'): number {
    return KvCache.bytesPerBlockPerLayer(config, 1, dtype) * config.numLayers;
  }

  /** Bytes one block takes in one layer, K and V together. */
  static bytesPerBlockPerLayer(config: Gemma2Config, blockSize: number, dtype: KvDtype = 'fp32'): number {
    return 2 * config.numKvHeads * blockSize * config.headDim * kvDtypeBytes(dtype);
  }

  /** Writes one token's K/V rows ([nkv, D] each, read from `keys`/`values` at `srcOffset`) at position `pos` of a sequence holding `blocks`. */
  write(layer: number, blocks: Readonly<Record<LayerKind, readonly number[]>>, pos: number, keys: Float32Array, values: Float32Array, srcOffset: number): void {
    const kind = this.layerKinds[layer]!;
    const { blockSize } = this.layout;
    const slot = viewSlot(this.layout, kind, pos);
    const block = blocks[kind][Math.floor(slot / blockSize)]!;
    const off = slot % blockSize;
    const { numKvHeads: nkv, headDim: D } = this.config;
    const [kp, vp] = this.pools[layer]!;
    const nb = this.layout.numBlocks[kind];
    for (let h = 0; h < nkv; h++) {
      const dst = ((h * nb + block) * blockSize + off) * D;
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

/** Each layer's kind, in layer order. */
export function layerKinds(config: Gemma2Config): LayerKind[] {
  return config.slidingLayers.map((s) => (s ? 'sliding' : 'global'));
}
