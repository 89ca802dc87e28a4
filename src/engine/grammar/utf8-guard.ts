/**
 * Keeps a byte-fallback sequence valid UTF-8 under a grammar. xgrammar 0.1.27 reads a lead
 * byte as "one character of N bytes" and then takes any continuation bytes, so overlong forms,
 * surrogates (ED A0..) and code points past U+10FFFF (F4 90..) pass; the text then decodes
 * to several U+FFFD where the grammar counted one character (a `maxLength` is exceeded). This
 * follows the byte tokens a sequence accepted and narrows the mask to what RFC 3629 allows
 * next: inside a character, only its valid continuation bytes; elsewhere, no stray
 * continuation byte. It only removes tokens, and xgrammar allows every continuation byte
 * inside a character, so the narrowed mask is never empty there.
 */
export class Utf8Guard {
  /** Continuation bytes still expected, and the range of the next one. */
  private need = 0;
  private lo = 0x80;
  private hi = 0xbf;
  /** Token id -> byte value, for the byte tokens. */
  private readonly byteOf = new Map<number, number>();

  constructor(private readonly byteIds: Int32Array) {
    byteIds.forEach((id, b) => { if (id >= 0) this.byteOf.set(id, b); });
  }

  reset(): void {
    this.need = 0;
  }

  /** Follows one accepted token. */
  accept(tokenId: number): void {
    const b = this.byteOf.get(tokenId);
    if (b === undefined) { this.need = 0; return; }
    if (this.need > 0) { this.need--; this.lo = 0x80; this.hi = 0xbf; return; }
    // Lead bytes: the count of continuation bytes, and the range of the first one.
    if (b >= 0xc2 && b <= 0xdf) this.expect(1, 0x80, 0xbf);
    else if (b === 0xe0) this.expect(2, 0xa0, 0xbf);
    else if (b === 0xed) this.expect(2, 0x80, 0x9f);
    else if (b >= 0xe1 && b <= 0xef) this.expect(2, 0x80, 0xbf);
    else if (b === 0xf0) this.expect(3, 0x90, 0xbf);
    else if (b >= 0xf1 && b <= 0xf3) this.expect(3, 0x80, 0xbf);
    else if (b === 0xf4) this.expect(3, 0x80, 0x8f);
  }

  /** Clears the bits of tokens that would break UTF-8 next. */
  narrow(mask: Int32Array): void {
    const ids = this.byteIds;
    if (this.need === 0) {
      for (let b = 0x80; b <= 0xbf; b++) { const id = ids[b]!; if (id >= 0) mask[id >> 5]! &= ~(1 << (id & 31)); }
      return;
    }
    // Inside a character: only the valid continuation bytes that the grammar allows.
    let keep = 0;
    const kept: number[] = [];
    for (let b = this.lo; b <= this.hi; b++) {
      const id = ids[b]!;
      if (id >= 0 && (mask[id >> 5]! & (1 << (id & 31))) !== 0) { kept.push(id); keep++; }
    }
    if (keep === 0) return; // nothing valid is allowed: leave the grammar's mask (cannot happen with xgrammar)
    mask.fill(0);
    for (const id of kept) mask[id >> 5]! |= 1 << (id & 31);
  }

  private expect(need: number, lo: number, hi: number): void {
    this.need = need;
    this.lo = lo;
    this.hi = hi;
  }
}
