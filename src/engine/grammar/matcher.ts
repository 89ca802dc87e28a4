/**
 * One sequence's grammar state: an xgrammar matcher over a compiled grammar, plus the
 * sequence's bitmask buffer (ceil(V/32) words, allocated once and refilled each step).
 *
 * Per step, on the inference worker: `fillMask()` after the last accepted token (the mask of
 * allowed next tokens), `canOnlyEnd()` (the grammar is complete and nothing may follow: the
 * sequence ends with 'stop' without another forward pass), `applyMask(row)` on the logits row
 * before sampling (disallowed tokens -> -Infinity), `accept(id)` after sampling. The matcher
 * counts accepted tokens, so a sequence whose state was lost or is out of step (preemption and
 * recomputation in a refactored loop) is rebuilt from its output tokens by `syncTo`.
 * Two narrowings on top of xgrammar's mask work around its 0.1.27 gaps: `deny` (no control
 * characters in JSON) and the UTF-8 guard (utf8-guard.ts). A third is the sequence's own: the
 * model's end tokens it does not stop on (ignore_eos) are never allowed.
 */
import type { XgMatcherHandle } from './xgrammar.ts';
import type { ReadyGrammar } from './compiler.ts';
import { Utf8Guard } from './utf8-guard.ts';

export class SequenceGrammar {
  /** Bit i of word i>>5 set: token i is allowed next. Valid after fillMask. */
  readonly mask: Int32Array;
  /** Tokens accepted since the start (the output tokens the state reflects). */
  private accepted = 0;
  /** The mask reflects the current state. */
  private fresh = false;
  private disposed = false;
  /** Per word of the mask, the bits grammar.deny and `refused` clear (only words that have some). */
  private readonly denyWords: Int32Array;
  private readonly denyBits: Int32Array;
  private readonly utf8: Utf8Guard;

  private constructor(
    private readonly handle: XgMatcherHandle,
    private readonly grammar: ReadyGrammar,
    /** Token ids that end the sequence; allowed exactly where the grammar can end. */
    private readonly stopIds: readonly number[],
    /** The model's end tokens that do not end this sequence: never allowed. */
    refused: readonly number[],
  ) {
    this.mask = new Int32Array(Math.ceil(grammar.vocabSize / 32));
    const bits = new Map<number, number>();
    for (const id of [...grammar.deny ?? [], ...refused]) bits.set(id >> 5, (bits.get(id >> 5) ?? 0) | (1 << (id & 31)));
    this.denyWords = Int32Array.from(bits.keys());
    this.denyBits = Int32Array.from(bits.values());
    this.utf8 = new Utf8Guard(grammar.byteIds);
  }

  /**
   * A matcher for one sequence. `stopIds`: the ids that end it (the model's end tokens, allowed
   * where the grammar can end; none with ignore_eos, when a complete structure simply ends it).
   */
  static async create(grammar: ReadyGrammar, stopIds: readonly number[]): Promise<SequenceGrammar> {
    const ids = stopIds.filter((id) => id >= 0 && id < grammar.vocabSize);
    const refused = grammar.stopIds.filter((id) => !ids.includes(id));
    // xgrammar is told every end token of the model, refused ones included: a stop token it was
    // not told of would pass through its masks of "all but the rejected" (free text).
    const told = [...ids, ...refused];
    const m = await grammar.xg.GrammarMatcher.createGrammarMatcher(grammar.compiled, told.length > 0 ? told : undefined, false);
    return new SequenceGrammar((m as unknown as { handle: XgMatcherHandle }).handle, grammar, ids, refused);
  }

  get numAccepted(): number {
    return this.accepted;
  }

  /** Computes the allowed next tokens into `mask` (one WebAssembly call and one 4V/32-byte copy). */
  fillMask(): void {
    if (this.fresh) return;
    // A terminated matcher (it accepted an end token) allows nothing more, and xgrammar aborts
    // its WebAssembly program if asked for a mask then.
    if (this.handle.IsTerminated()) { this.mask.fill(0); this.fresh = true; return; }
    const vector = this.handle.GetNextTokenBitmask(this.grammar.vocabSize);
    try {
      this.mask.set(this.grammar.binding.vecIntToView(vector));
    } finally {
      vector.delete();
    }
    for (let i = 0; i < this.denyWords.length; i++) this.mask[this.denyWords[i]!]! &= ~this.denyBits[i]!;
    this.utf8.narrow(this.mask);
    this.fresh = true;
  }

  /** True when no token but a stop token is allowed next (the structure is complete). */
  canOnlyEnd(): boolean {
    this.fillMask();
    const mask = this.mask;
    for (let w = 0; w < mask.length; w++) {
      let word = mask[w]!;
      if (word === 0) continue;
      for (const id of this.stopIds) if (id >> 5 === w) word &= ~(1 << (id & 31));
      if (word !== 0) return false;
    }
    return true;
  }

  /**
   * Sets the logits of disallowed tokens to -Infinity in place. A word of 32 disallowed tokens
   * is one fill; an all-allowed word is skipped, so the cost is O(V/32) plus the masked writes.
   */
  applyMask(row: Float32Array): void {
    this.fillMask();
    const mask = this.mask;
    const n = row.length;
    for (let w = 0; w < mask.length; w++) {
      const word = mask[w]!;
      if (word === -1) continue;
      const base = w << 5;
      if (word === 0) { row.fill(-Infinity, base, Math.min(base + 32, n)); continue; }
      for (let b = 0; b < 32 && base + b < n; b++) if ((word & (1 << b)) === 0) row[base + b] = -Infinity;
    }
    // Logits beyond the table (a model vocab wider than the mask) are never allowed.
    if (n > mask.length << 5) row.fill(-Infinity, mask.length << 5);
  }

  /** Advances over a sampled token; false when the grammar refuses it (the state is unchanged). */
  accept(tokenId: number): boolean {
    const ok = this.handle.AcceptToken(tokenId, false);
    if (ok) { this.accepted++; this.fresh = false; this.utf8.accept(tokenId); }
    return ok;
  }

  /**
   * Brings the state in step with `outputIds` (the sequence's generated tokens): nothing when it
   * already is, else reset and accept them all. False when they do not fit the grammar.
   */
  syncTo(outputIds: ArrayLike<number>): boolean {
    if (outputIds.length === this.accepted) return true;
    this.handle.Reset();
    this.utf8.reset();
    this.accepted = 0;
    this.fresh = false;
    for (let i = 0; i < outputIds.length; i++) if (!this.accept(outputIds[i]!)) return false;
    return true;
  }

  /** The grammar accepted a stop token (only happens when one is accepted). */
  isTerminated(): boolean {
    return this.handle.IsTerminated();
  }

  /** Frees the matcher's WebAssembly memory; idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.handle.delete();
  }
}
