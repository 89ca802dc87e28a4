/**
 * The KV cache's block accounting (vLLM's KVCacheManager): which blocks of each layer kind are
 * free, which a sequence holds, how many positions it has stored, and, with prefix caching, which
 * computed blocks are kept for reuse. No tensors: the runner owns the storage and describes it by
 * a CacheLayout; this mirrors it, so it admits exactly what the storage holds. Block 0 of each
 * kind is the null block and is never handed out.
 *
 * Prefix caching (on when the layout offers it, CacheLayout.prefixCaching): a full block whose
 * K/V are computed is registered under a chained id (PrefixIndex: its parent's id and its token
 * ids). Blocks are reference-counted; a block no sequence holds but that is registered waits in
 * an LRU and is evicted only when a fresh block is needed. A hit of P positions (block aligned)
 * needs the global blocks of every index < P / blockSize and the sliding blocks of the indices
 * covering [P - W + 1, P): older ring slots point at the null block, which the window's mask
 * hides. Sliding memory stays a ring: its one extra block lets a sequence that crosses into block
 * index j drop the block of index j - ringBlocks (whose positions no later query sees) and take a
 * fresh one, so no registered block is ever overwritten and no copy is made. The dropped block is
 * still read by the step that drops it (PlanRow.slidingView), so it is given back only once that
 * step has run (`endStep`).
 */
import { blocksNeeded, LAYER_KINDS, type CacheLayout, type LayerKind } from './runner-contract.ts';

/** A sequence's share of the cache. Its blocks change only through KvCacheManager; numCached through the scheduler. */
export interface SequenceCache {
  /** The sequence's id in step plans (PlanRow.seqId). */
  readonly id: number;
  /** Positions whose K/V rows are stored. */
  numCached: number;
  /** Per kind, block ids in view order (see CacheLayout); with prefix caching a ring slot may be the null block 0. */
  readonly blocks: Record<LayerKind, number[]>;
  /** Prefix caching: chain ids (PrefixIndex) of its leading full blocks whose K/V are computed, by block index. */
  readonly chainIds: number[];
  /** Prefix caching: the ring as it was before this step replaced blocks in it (PlanRow.slidingView); null: unchanged. */
  slidingView: number[] | null;
}

/** A registered block content: one chain id, at most one block of each kind holding it. */
interface Entry {
  readonly id: number;
  readonly key: string;
  readonly blocks: Record<LayerKind, number>;
}

/** The blocks a prefix hit reuses, longest usable first. */
export interface PrefixHit {
  /** Positions reused (a multiple of the block size, shorter than the sequence's tokens). */
  readonly numTokens: number;
  /** One entry per reused block index. */
  readonly entries: readonly Entry[];
}

const ROOT = 0;

/** One pool of blocks of a kind: reference counts, the free stack and the LRU of cached blocks. */
class BlockPool {
  readonly refs: Int32Array;
  readonly entryOf: (Entry | undefined)[];
  /** Unreferenced, unregistered blocks. */
  readonly free: number[];
  /** Unreferenced, registered blocks, least recently released first. */
  readonly lru = new Set<number>();

  constructor(readonly kind: LayerKind, numBlocks: number) {
    this.refs = new Int32Array(numBlocks);
    this.entryOf = new Array<Entry | undefined>(numBlocks);
    this.free = range(1, numBlocks);
  }

  get available(): number {
    return this.free.length + this.lru.size;
  }

  /** A fresh block (referenced once): a free one, else the least recently used cached one, evicted. */
  take(evict: (kind: LayerKind, block: number, entry: Entry) => void): number {
    let b = this.free.pop();
    if (b === undefined) {
      b = this.lru.values().next().value!;
      this.lru.delete(b);
      evict(this.kind, b, this.entryOf[b]!);
      this.entryOf[b] = undefined;
    }
    this.refs[b] = 1;
    return b;
  }

  ref(b: number): void {
    if (this.refs[b] === 0) this.lru.delete(b);
    this.refs[b]!++;
  }

  unref(b: number): void {
    if (b === 0) return;
    if (this.refs[b]! <= 0) throw new Error(`${this.kind} block ${b} released more often than taken`);
    if (--this.refs[b]! > 0) return;
    if (this.entryOf[b] !== undefined) this.lru.add(b);
    else this.free.push(b);
  }
}

export interface KvCacheManagerOptions {
  /** Prefix caching where the layout offers it (default true); false: every sequence computes all its tokens. */
  readonly prefixCaching?: boolean;
}

export class KvCacheManager {
  private readonly pools: Record<LayerKind, BlockPool>;
  private readonly lengthCap: number;
  private nextId = 0;
  /** Sliding window, when prefix caching is on. */
  private readonly window: number | null;
  private readonly entries = new Map<string, Entry>();
  private nextChainId = ROOT + 1;
  /** Sliding blocks dropped from rings during the step being planned: still read by it. */
  private readonly dropped: number[] = [];
  private readonly withView = new Set<SequenceCache>();

  constructor(readonly layout: CacheLayout, opts: KvCacheManagerOptions = {}) {
    this.lengthCap = layout.maxSequenceTokens ?? Infinity;
    this.pools = { global: new BlockPool('global', layout.numBlocks.global), sliding: new BlockPool('sliding', layout.numBlocks.sliding) };
    this.window = opts.prefixCaching !== false && layout.prefixCaching !== undefined ? layout.prefixCaching.slidingWindow : null;
    if (this.window !== null && layout.ringSlots < this.window + layout.blockSize) throw new RangeError('prefix caching needs a ring of one block more than the window');
  }

  /** Whether blocks are shared and kept for reuse. */
  get prefixCaching(): boolean {
    return this.window !== null;
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

  private get ringBlocks(): number {
    return this.layout.ringSlots / this.layout.blockSize;
  }

  /** A sequence holding nothing; `id` defaults to a counter (for callers that do not name their sequences). */
  newSequence(id: number = this.nextId++): SequenceCache {
    return { id, numCached: 0, blocks: { global: [], sliding: [] }, chainIds: [], slidingView: null };
  }

  /** Blocks a sequence of `len` positions holds of each kind. */
  blocksNeeded(kind: LayerKind, len: number): number {
    return blocksNeeded(this.layout, kind, len);
  }

  /** Fresh blocks of `kind` growing `seq` to `len` positions takes. */
  private freshNeeded(seq: SequenceCache, kind: LayerKind, len: number): number {
    if (this.window === null || kind === 'global') return Math.max(0, this.blocksNeeded(kind, len) - seq.blocks[kind].length);
    const top = Math.ceil(len / this.blockSize);
    return Math.max(0, top - Math.max(seq.blocks.global.length, top - this.ringBlocks));
  }

  /** Whether `seq` could grow to `len` positions now (nothing taken). */
  canReserve(seq: SequenceCache, len: number): boolean {
    return LAYER_KINDS.every((k) => this.freshNeeded(seq, k, len) <= this.pools[k].available);
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
    if (!this.canReserve(seq, len)) return false;
    const top = Math.ceil(len / this.blockSize);
    if (this.window !== null) this.growRing(seq, top);
    else for (let j = seq.blocks.sliding.length; j < this.blocksNeeded('sliding', len); j++) seq.blocks.sliding.push(this.take('sliding'));
    for (let j = seq.blocks.global.length; j < top; j++) seq.blocks.global.push(this.take('global'));
    return true;
  }

  /**
   * Prefix caching: a fresh sliding block for each new block index that ends up in the ring (index
   * j at slot j % ringBlocks); the block it replaces is dropped once this step has run.
   */
  private growRing(seq: SequenceCache, top: number): void {
    const ring = seq.blocks.sliding;
    const R = this.ringBlocks;
    const from = Math.max(seq.blocks.global.length, top - R);
    if (from >= top) return;
    const before = ring.length;
    const view = top > R ? ring.slice() : []; // only an index >= R replaces a slot
    while (ring.length < Math.min(top, R)) ring.push(0);
    // [from, top) spans at most R indices: each slot is taken at most once.
    for (let j = from; j < top; j++) {
      const slot = j % R;
      if (slot < before && ring[slot] !== 0) {
        this.dropped.push(ring[slot]!);
        if (seq.slidingView === null) { seq.slidingView = view; this.withView.add(seq); }
      }
      ring[slot] = this.take('sliding');
    }
  }

  /** The step planned last has run: blocks dropped from rings during it go back, rings are read as they are. */
  endStep(): void {
    for (const b of this.dropped) this.pools.sliding.unref(b);
    this.dropped.length = 0;
    for (const seq of this.withView) seq.slidingView = null;
    this.withView.clear();
  }

  /** Gives back every block of `seq`; it holds no positions after. */
  release(seq: SequenceCache): void {
    for (const k of LAYER_KINDS) {
      // Last blocks first: the LRU then evicts a chain's tail before its head.
      const blocks = seq.blocks[k];
      for (let i = blocks.length - 1; i >= 0; i--) this.pools[k].unref(blocks[i]!);
      blocks.length = 0;
    }
    seq.numCached = 0;
    seq.chainIds.length = 0;
    seq.slidingView = null;
    this.withView.delete(seq);
  }

  /** Blocks of `kind` a sequence can still take: free ones and cached ones no sequence holds. */
  numFreeBlocks(kind: LayerKind): number {
    return this.pools[kind].available;
  }

  /** Blocks of `kind` kept for reuse that no sequence holds (evictable). */
  numCachedBlocks(kind: LayerKind): number {
    return this.pools[kind].lru.size;
  }

  /**
   * The longest cached prefix of a sequence of `len` tokens (`tokenAt(i)`) usable on both layer
   * kinds; at least its last token is left to compute (its logits are needed).
   */
  findPrefix(tokenAt: (i: number) => number, len: number): PrefixHit {
    const none: PrefixHit = { numTokens: 0, entries: [] };
    if (this.window === null) return none;
    const B = this.blockSize;
    const chain: Entry[] = [];
    let parent = ROOT;
    for (let j = 0; (j + 1) * B <= len - 1; j++) {
      const e = this.entries.get(chainKey(parent, tokenAt, j * B, B));
      if (e === undefined || e.blocks.global === 0) break;
      chain.push(e);
      parent = e.id;
    }
    for (let n = chain.length; n > 0; n--) {
      let ok = true;
      for (let j = this.firstWindowBlock(n * B); j < n && ok; j++) ok = chain[j]!.blocks.sliding !== 0;
      if (ok) return { numTokens: n * B, entries: chain.slice(0, n) };
    }
    return none;
  }

  /** First block index a query at position `p` (and later) can see on a sliding layer. */
  private firstWindowBlock(p: number): number {
    return Math.max(0, Math.floor((p - this.window! + 1) / this.blockSize));
  }

  /** Places a hit in an empty `seq`: it holds the hit's blocks (referenced) and their positions count as stored. */
  acquire(seq: SequenceCache, hit: PrefixHit): void {
    if (seq.blocks.global.length > 0 || hit.numTokens === 0) return;
    const R = this.ringBlocks;
    const n = hit.entries.length;
    const ring = seq.blocks.sliding;
    for (let j = 0; j < Math.min(n, R); j++) ring.push(0);
    hit.entries.forEach((e, j) => {
      this.pools.global.ref(e.blocks.global);
      seq.blocks.global.push(e.blocks.global);
      seq.chainIds.push(e.id);
      if (j >= this.firstWindowBlock(hit.numTokens)) {
        this.pools.sliding.ref(e.blocks.sliding);
        ring[j % R] = e.blocks.sliding;
      }
    });
    seq.numCached = hit.numTokens;
  }

  /** Registers the full blocks of `seq` whose K/V are now computed (after a step), so later sequences can reuse them. */
  commit(seq: SequenceCache, tokenAt: (i: number) => number): void {
    if (this.window === null) return;
    const B = this.blockSize;
    const R = this.ringBlocks;
    const inRingFrom = Math.ceil(seq.numCached / B) - R;
    for (let j = seq.chainIds.length; (j + 1) * B <= seq.numCached; j++) {
      const parent = j === 0 ? ROOT : seq.chainIds[j - 1]!;
      const key = chainKey(parent, tokenAt, j * B, B);
      let e = this.entries.get(key);
      if (e === undefined) {
        e = { id: this.nextChainId++, key, blocks: { global: 0, sliding: 0 } };
        this.entries.set(key, e);
      }
      this.register(e, 'global', seq.blocks.global[j]!);
      if (j >= inRingFrom) this.register(e, 'sliding', seq.blocks.sliding[j % R]!);
      seq.chainIds.push(e.id);
    }
  }

  /** `block` holds `e`'s content; a content already held by another block keeps that one (the new one stays private). */
  private register(e: Entry, kind: LayerKind, block: number): void {
    if (block === 0 || e.blocks[kind] !== 0 || this.pools[kind].entryOf[block] !== undefined) return;
    e.blocks[kind] = block;
    this.pools[kind].entryOf[block] = e;
  }

  private take(kind: LayerKind): number {
    return this.pools[kind].take((k, _b, e) => {
      e.blocks[k] = 0;
      if (e.blocks.global === 0 && e.blocks.sliding === 0) this.entries.delete(e.key);
    });
  }

  /**
   * Checks the accounting (tests): every block is free, cached or referenced, exactly once; the
   * references equal what `holders` hold plus the blocks dropped this step. Returns the problems found.
   */
  audit(holders: Iterable<SequenceCache>): string[] {
    const problems: string[] = [];
    const counts = { global: new Int32Array(this.numBlocks.global), sliding: new Int32Array(this.numBlocks.sliding) };
    for (const s of holders) for (const k of LAYER_KINDS) for (const b of s.blocks[k]) if (b !== 0) counts[k][b]!++;
    for (const b of this.dropped) counts.sliding[b]!++;
    for (const k of LAYER_KINDS) {
      const p = this.pools[k];
      const free = new Set(p.free);
      if (free.size !== p.free.length) problems.push(`${k}: a block is free twice`);
      for (let b = 1; b < this.numBlocks[k]; b++) {
        const places = (free.has(b) ? 1 : 0) + (p.lru.has(b) ? 1 : 0) + (p.refs[b]! > 0 ? 1 : 0);
        if (places !== 1) problems.push(`${k} block ${b}: in ${places} places (refs ${p.refs[b]})`);
        if (p.refs[b] !== counts[k][b]) problems.push(`${k} block ${b}: ${p.refs[b]} refs, held ${counts[k][b]} times`);
        if (p.lru.has(b) && p.entryOf[b] === undefined) problems.push(`${k} block ${b}: cached but unregistered`);
        const e = p.entryOf[b];
        if (e !== undefined && (e.blocks[k] !== b || this.entries.get(e.key) !== e)) problems.push(`${k} block ${b}: stale registration`);
      }
      if (p.refs[0] !== 0 || free.has(0) || p.lru.has(0)) problems.push(`${k}: the null block was handed out`);
    }
    return problems;
  }
}

/** The key of block `j` (tokens [from, from + n)) under chain id `parent`: exact, so no two contents share one. */
function chainKey(parent: number, tokenAt: (i: number) => number, from: number, n: number): string {
  let key = `${parent}`;
  for (let i = from; i < from + n; i++) key += `,${tokenAt(i)}`;
  return key;
}

function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = to - 1; i >= from; i--) out.push(i);
  return out;
}
