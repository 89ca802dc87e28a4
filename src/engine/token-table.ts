/**
 * Decoding without the tokenizer. The main thread only ever turns ids into text (streamed
 * deltas, logprob tokens, echoed prompts, /detokenize), yet loading the real Gemma tokenizer
 * there took ~3 s of its event loop at start-up, a second time, since every text worker loads
 * it too. A text worker instead describes each token's text once (`tokenTableData`: the
 * texts end to end as UTF-8, offsets, a kind per id) and transfers that to the main thread,
 * where `TokenTable` decodes exactly as the tokenizer does.
 *
 * That is exact for decoders that write each token's text independently: Gemma's
 * (`Replace ▁ → ' '`, `ByteFallback`, `Fuse`) is one, and is the only one accepted. Byte runs
 * follow Hugging Face's rule (tokenizer.ts): the run's string when it is valid UTF-8, else one
 * U+FFFD per byte. Another decoder gets no table and the main thread loads the tokenizer.
 */

export interface DecodeOptions {
  /** Drop special tokens (`<bos>`, `<end_of_turn>`, ...) from the text. */
  readonly skipSpecialTokens?: boolean;
}

/** What the main thread needs of a tokenizer: ids to text, and a few facts. */
export interface TokenDecoder {
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string;
  /** The token's own bytes (a byte-fallback token `<0xE4>` is the one byte 0xE4). */
  tokenBytes(id: number): Uint8Array;
  /** The byte a byte-fallback token stands for, else null. */
  fallbackByte(id: number): number | null;
  isSpecial(id: number): boolean;
  readonly bosId: number;
  readonly eosIds: readonly number[];
  readonly vocabSize: number;
  /** The most characters one token covers: `ceil(chars / maxPieceChars)` bounds a text's tokens from below. */
  readonly maxPieceChars: number;
}

/** A token's kind in the table. */
export const TokenKind = { Text: 0, Byte: 1, Special: 2 } as const;

/** A TokenTable as it crosses threads (its three arrays are transferred). */
export interface TokenTableData {
  /** Every token's text (its byte, for byte-fallback tokens), UTF-8, end to end. */
  readonly text: Uint8Array;
  /** [vocabSize + 1] token i's text is text[offsets[i] .. offsets[i + 1]). */
  readonly offsets: Int32Array;
  /** [vocabSize] a TokenKind per id. */
  readonly kinds: Uint8Array;
  readonly bosId: number;
  readonly eosIds: readonly number[];
  readonly maxPieceChars: number;
}

/** The token pieces and facts a table is built from (the full tokenizer's, in a text worker). */
export interface TokenSource extends TokenDecoder {
  /** The vocabulary's string for an id (`▁Hello`, `<0xE4>`, `<start_of_turn>`), or null. */
  idToToken(id: number): string | null;
  /** The decoder's Hugging Face config (`tokenizer.json`'s `decoder`), and whether tokenization spaces are cleaned up. */
  readonly decoderConfig: unknown;
  readonly cleanUpSpaces: boolean;
}

/** Gemma's decoder: each token's text on its own, `▁` as a space, byte runs fused. */
const GEMMA_DECODER = canonical({ type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }] });

/** The table for `source`, or null when its decoder is not one a table reproduces. */
export function tokenTableData(source: TokenSource): TokenTableData | null {
  if (source.cleanUpSpaces || canonical(source.decoderConfig) !== GEMMA_DECODER) return null;
  const n = source.vocabSize;
  const encoder = new TextEncoder();
  const pieces: Uint8Array[] = new Array<Uint8Array>(n);
  const kinds = new Uint8Array(n);
  let total = 0;
  for (let id = 0; id < n; id++) {
    const byte = source.fallbackByte(id);
    const piece = source.idToToken(id) ?? '';
    kinds[id] = byte !== null ? TokenKind.Byte : source.isSpecial(id) ? TokenKind.Special : TokenKind.Text;
    const bytes = byte !== null ? Uint8Array.of(byte) : encoder.encode(piece.replaceAll('\u2581', ' '));
    pieces[id] = bytes;
    total += bytes.length;
  }
  const text = new Uint8Array(total);
  const offsets = new Int32Array(n + 1);
  for (let id = 0, at = 0; id < n; id++) {
    text.set(pieces[id]!, at);
    at += pieces[id]!.length;
    offsets[id + 1] = at;
  }
  return { text, offsets, kinds, bosId: source.bosId, eosIds: [...source.eosIds], maxPieceChars: source.maxPieceChars };
}

/** The JSON of `v` with object keys sorted, for comparing configs. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x !== null && typeof x === 'object' && !Array.isArray(x)
    ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : x));
}

export class TokenTable implements TokenDecoder {
  readonly bosId: number;
  readonly eosIds: readonly number[];
  readonly vocabSize: number;
  readonly maxPieceChars: number;
  private readonly utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
  private readonly strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

  constructor(private readonly data: TokenTableData) {
    this.bosId = data.bosId;
    this.eosIds = Object.freeze([...data.eosIds]);
    this.vocabSize = data.kinds.length;
    this.maxPieceChars = data.maxPieceChars;
  }

  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const skip = options.skipSpecialTokens ?? false;
    const { text, offsets, kinds } = this.data;
    let out = '';
    let run: number[] = [];
    const endRun = (): void => {
      if (run.length === 0) return;
      const bytes = Uint8Array.from(run);
      try {
        out += this.strict.decode(bytes);
      } catch {
        out += '\uFFFD'.repeat(bytes.length);
      }
      run = [];
    };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      // Ids outside the vocabulary have no text (the tokenizer skips them too).
      if (!(id >= 0 && id < this.vocabSize)) continue;
      const kind = kinds[id]!;
      if (kind === TokenKind.Special && skip) continue;
      if (kind === TokenKind.Byte) { run.push(text[offsets[id]!]!); continue; }
      endRun();
      out += this.utf8.decode(text.subarray(offsets[id]!, offsets[id + 1]!));
    }
    endRun();
    return out;
  }

  tokenBytes(id: number): Uint8Array {
    if (!(id >= 0 && id < this.vocabSize)) return new Uint8Array(0);
    return this.data.text.slice(this.data.offsets[id]!, this.data.offsets[id + 1]!);
  }

  fallbackByte(id: number): number | null {
    return id >= 0 && id < this.vocabSize && this.data.kinds[id] === TokenKind.Byte ? this.data.text[this.data.offsets[id]!]! : null;
  }

  isSpecial(id: number): boolean {
    return id >= 0 && id < this.vocabSize && this.data.kinds[id] === TokenKind.Special;
  }
}
