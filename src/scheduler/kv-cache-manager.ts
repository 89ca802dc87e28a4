/**
 * The KV cache's block accounting (vLLM's KVCacheManager): which blocks of each layer kind are
 * free, which a sequence holds, how many positions it has stored. No tensors: the runner owns
 * the storage and describes it by a CacheLayout; this mirrors it, so it admits exactly what the
 * storage holds. Block 0 of each kind is the null block and is never handed out.
 */
import { blocksNeeded, LAYER_KINDS, type CacheLayout, type LayerKind } from './runner-contract.ts';

/** A sequence's share of the cache. Its blocks change only through KvCacheManager; numCached through the scheduler. */
export interface SequenceCache {
  /** The sequence's id in step plans (PlanRow.seqId). */
  readonly id: number;
  /** Positions whose K/V rows are stored. */
  numCached: number;
  /** Per kind, block ids in view order (see CacheLayout). */
  readonly blocks: Record<LayerKind, number[]>;
}

export class KvCacheManager {
  private readonly free: Record<LayerKind, number[]>;
  private readonly lengthCap: number;
  private nextId = 0;

  constructor(readonly layout: CacheLayout) {
    this.lengthCap = layout.maxSequenceTokens ?? Infinity;
    this.free = { global: range(1, layout.numBlocks.global), sliding: range(1, layout.numBlocks.sliding) };
  }

  get blockSize(): number {
    return this.layout.blockSize;
  }

  get numBlocks(): Readonly<Record<LayerKind, number>> {
    return this.layout.numBlocks;
  }

  get ringSlots(): number {
    return this.layout.ringSlots;
  }

  /** A sequence holding nothing; `id` defaults to a counter (for callers that do not name their sequences). */
  newSequence(id: number = this.nextId++): SequenceCache {
    return { id, numCached: 0, blocks: { global: [], sliding: [] } };
  }

  /** Blocks a sequence of `len` positions holds of each kind. */
  blocksNeeded(kind: LayerKind, len: number): number {
    return blocksNeeded(this.layout, kind, len);
  }

  /** Whether `seq` could grow to `len` positions now (nothing taken). */
  canReserve(seq: SequenceCache, len: number): boolean {
    return LAYER_KINDS.every((k) => this.blocksNeeded(k, len) - seq.blocks[k].length <= this.free[k].length);
  }

  /** The longest sequence the pools can hold when nothing else is held. */
  maxSequenceTokens(): number {
    const { blockSize, numBlocks, ringSlots } = this.layout;
    const global = (numBlocks.global - 1) * blockSize;
    const slidingFits = numBlocks.sliding - 1 >= ringSlots / blockSize;
    return Math.min(this.lengthCap, slidingFits ? global : Math.min(global, (numBlocks.sliding - 1) * blockSize));
  }

  /** Whether a sequence of `len` positions fits the pools at all (when nothing else is held). */
  fitsEmpty(len: number): boolean {
    return len <= this.lengthCap && LAYER_KINDS.every((k) => this.blocksNeeded(k, len) <= this.layout.numBlocks[k] - 1);
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

  /** Gives back every block of `seq`; it holds no positions after. */
  release(seq: SequenceCache): void {
    for (const k of LAYER_KINDS) {
      this.free[k].push(...seq.blocks[k]);
      seq.blocks[k].length = 0;
    }
    seq.numCached = 0;
  }

  numFreeBlocks(kind: LayerKind): number {
    return this.free[kind].length;
  }
}

function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = to - 1; i >= from; i--) out.push(i);
  return out;
}
