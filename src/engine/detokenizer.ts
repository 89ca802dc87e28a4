/**
 * Incremental detokenization for streaming (TGI's prefix_offset / read_offset scheme): each
 * new token's text is the difference between decoding a short window with and without the
 * unread tokens. Decoding a window rather than single tokens keeps whatever the decoder does
 * across token boundaries. The contract: the deltas of a sequence, concatenated, equal the
 * one-shot `decode` of the same ids, always.
 *
 * Byte-fallback tokens are where that takes care. Hugging Face's decoder turns a whole run of
 * them into its UTF-8 string, or, when the run is not valid UTF-8, into one U+FFFD per byte of
 * the run (a valid character inside an invalid run becomes U+FFFDs too). So a run is held back
 * while it is valid so far: the next byte could still make all of it invalid. It is released
 * when a token that is not a byte ends it, or byte by byte (one U+FFFD each) from the moment
 * no continuation could make it valid. Special tokens that are skipped do not end a run: the
 * decoder never sees them. Special tokens are skipped unless asked otherwise.
 */
import type { TokenDecoder } from './token-table.ts';

export class Detokenizer {
  private readonly ids: number[] = [];
  /** Start of the context window: decoded but only used to diff against. */
  private prefixOffset = 0;
  /** Everything before this has been emitted; ids from here on are an open byte run (and skipped specials). */
  private readOffset = 0;
  /** The bytes of the open run. */
  private run: number[] = [];
  /** U+FFFDs already emitted for the open run (it proved invalid; each further byte is one more). */
  private runEmitted = 0;
  /** Checks a run incrementally: throws once the bytes can no longer be the start of valid UTF-8. */
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

  /** `skipSpecialTokens` false keeps them in the text (echoed prompts, whose text shows them). */
  constructor(private readonly tokenizer: TokenDecoder, private readonly skipSpecialTokens = true) {}

  /** Adds one token; returns the text it completes (often '', e.g. a held byte run or a special). */
  push(id: number): string {
    this.ids.push(id);
    if (this.skipSpecialTokens && this.tokenizer.isSpecial(id)) return '';
    const byte = this.tokenizer.fallbackByte(id);
    if (byte === null) return this.release();
    this.run.push(byte);
    if (this.runEmitted === 0 && this.couldBeValid(byte)) return '';
    // Invalid whatever follows: the run decodes to one U+FFFD per byte, so far and from now on.
    const more = this.run.length - this.runEmitted;
    this.runEmitted = this.run.length;
    return '\uFFFD'.repeat(more);
  }

  /**
   * What flush() would return now, without changing anything: the held run as it decodes if
   * the sequence ended here (stop strings look at it, so a run can end a sequence).
   */
  pending(): string {
    return this.run.length === 0 ? '' : this.unread();
  }

  /** The remaining held-back text (an unfinished run decodes as the whole sequence would). */
  flush(): string {
    return this.release();
  }

  /** Emits everything after readOffset (less the U+FFFDs already sent) and closes the run. */
  private release(): string {
    const text = this.unread();
    if (this.run.length > 0) this.endRun();
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return text;
  }

  /** The text of everything after readOffset, less the U+FFFDs already sent for the open run. */
  private unread(): string {
    const prefixText = this.decode(this.prefixOffset, this.readOffset) + '\uFFFD'.repeat(this.runEmitted);
    const newText = this.decode(this.prefixOffset, this.ids.length);
    return newText.startsWith(prefixText) ? newText.slice(prefixText.length) : newText.slice(commonPrefixLength(prefixText, newText));
  }

  private endRun(): void {
    this.run = [];
    this.runEmitted = 0;
    try {
      this.utf8.decode(); // ends the decoder's stream: the next run starts from a clean state
    } catch {
      // an unfinished character was pending: nothing to keep
    }
  }

  /** Whether the open run, `byte` just added, is still a prefix of some valid UTF-8. */
  private couldBeValid(byte: number): boolean {
    try {
      // stream: true keeps an unfinished character pending instead of calling it an error.
      this.utf8.decode(Uint8Array.of(byte), { stream: true });
      return true;
    } catch {
      return false;
    }
  }

  private decode(from: number, to: number): string {
    return from === to ? '' : this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: this.skipSpecialTokens });
  }
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}
