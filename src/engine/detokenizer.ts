/**
 * Incremental detokenization for streaming (TGI's prefix_offset / read_offset scheme): each
 * new token's text is the difference between decoding a short window with and without the
 * unread tokens. Decoding a window rather than single tokens keeps whatever the decoder does
 * across token boundaries, and the text is held back while it ends in U+FFFD, i.e. while a
 * multi-byte character is still arriving as byte-fallback tokens, so a delta never carries
 * half a character. Special tokens are skipped unless asked otherwise.
 */
import type { TextTokenizer } from './tokenizer.ts';

/**
 * A UTF-8 character is at most 4 bytes, so at most 3 trailing byte tokens can be an unfinished
 * character; more held tokens ending in U+FFFD mean genuinely invalid bytes (a random model
 * does emit them), which are released rather than buffered without bound.
 */
const MAX_INCOMPLETE_TOKENS = 3;

export class Detokenizer {
  private readonly ids: number[] = [];
  /** Start of the context window: decoded but only used to diff against. */
  private prefixOffset = 0;
  /** Everything before this has been emitted. */
  private readOffset = 0;

  /** `skipSpecialTokens` false keeps them in the text (echoed prompts, whose text shows them). */
  constructor(private readonly tokenizer: TextTokenizer, private readonly skipSpecialTokens = true) {}

  /** Adds one token; returns the text it completes (often '', e.g. mid-character or special). */
  push(id: number): string {
    this.ids.push(id);
    const end = this.ids.length;
    const delta = this.deltaUpTo(end);
    if (delta !== null) return delta;
    if (end - this.readOffset > MAX_INCOMPLETE_TOKENS) {
      // Release the invalid bytes, keep the last few that may still start a character.
      const cut = end - MAX_INCOMPLETE_TOKENS;
      const forced = this.diff(cut);
      this.prefixOffset = cut;
      this.readOffset = cut;
      return forced;
    }
    return '';
  }

  /** The remaining held-back text (with U+FFFD for bytes that never formed a character). */
  flush(): string {
    const rest = this.diff(this.ids.length);
    this.prefixOffset = this.ids.length;
    this.readOffset = this.ids.length;
    return rest;
  }

  /** Delta through `end` if it ends on a complete character (then offsets advance), else null. */
  private deltaUpTo(end: number): string | null {
    const prefixText = this.decode(this.prefixOffset, this.readOffset);
    const newText = this.decode(this.prefixOffset, end);
    if (newText.endsWith('\uFFFD')) return null;
    if (newText.length <= prefixText.length) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = end;
    return newText.startsWith(prefixText) ? newText.slice(prefixText.length) : newText.slice(commonPrefixLength(prefixText, newText));
  }

  /** Text of ids[readOffset, end), decoded with its context. */
  private diff(end: number): string {
    const prefixText = this.decode(this.prefixOffset, this.readOffset);
    const newText = this.decode(this.prefixOffset, end);
    return newText.slice(commonPrefixLength(prefixText, newText));
  }

  private decode(from: number, to: number): string {
    return this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: this.skipSpecialTokens });
  }
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}
