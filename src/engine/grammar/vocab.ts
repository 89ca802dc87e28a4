/**
 * The vocabulary as xgrammar's token table wants it: one string per token id, in the
 * tokenizer's own encoding (Gemma: SentencePiece-style "▁" for spaces and `<0xNN>` byte pieces,
 * which xgrammar's "byte_fallback" decoding understands), padded to the model's logits width.
 * Special tokens (`<bos>`, `<start_of_turn>`, ...) become empty strings: xgrammar treats an
 * empty token as special and never allows it inside a structure, which is what we want, since
 * the detokenizer may drop them from the text. The model's end tokens are listed apart
 * (`stopIds`): xgrammar must know them as stop tokens, not specials (see compiler.ts).
 * Byte pieces that never occur in UTF-8 (0xC0, 0xC1, 0xF5-0xFF) are blanked too: xgrammar's
 * UTF-8 reading takes 0xF5-0xF7 as lead bytes, so it would otherwise let a sequence emit bytes
 * that decode to U+FFFD, and count them as one character where the text has several.
 */
import { readFileSync } from 'node:fs';

export interface GrammarVocab {
  /** Token strings by id, `vocabSize` long ('' for specials and ids the tokenizer lacks). */
  readonly encoded: string[];
  /** The model's logits width (>= the tokenizer's ids). */
  readonly vocabSize: number;
  /** Ids whose text has a control character (U+0000-U+001F): never valid in JSON as we lay it out. */
  readonly controlIds: readonly number[];
  /** The byte-fallback token of each byte value (-1 where the vocabulary has none or it is blanked). */
  readonly byteIds: Int32Array;
  /** The model's end tokens (within the vocabulary): every id a sequence may stop on. */
  readonly stopIds: readonly number[];
}

interface TokenizerJson {
  readonly model?: { readonly vocab?: Record<string, number> | [string, number][] };
  readonly added_tokens?: readonly { readonly id: number; readonly content: string; readonly special?: boolean }[];
}

/**
 * Reads tokenizer.json's vocabulary (BPE map or Unigram list) into xgrammar's table order.
 * `stopIds`: the model's end tokens (generation_config's `eos_token_id`, as the engine stops on).
 */
export function readGrammarVocab(tokenizerJsonPath: string, vocabSize: number, stopIds: readonly number[]): GrammarVocab {
  const json = JSON.parse(readFileSync(tokenizerJsonPath, 'utf8')) as TokenizerJson;
  return grammarVocab(json, vocabSize, stopIds);
}

export function grammarVocab(json: TokenizerJson, vocabSize: number, stopIds: readonly number[]): GrammarVocab {
  const encoded = new Array<string>(vocabSize).fill('');
  const vocab = json.model?.vocab ?? {};
  const entries: Iterable<[string, number]> = Array.isArray(vocab) ? vocab.map(([piece], id) => [piece, id] as [string, number]) : Object.entries(vocab);
  for (const [piece, id] of entries) if (id >= 0 && id < vocabSize) encoded[id] = piece;
  for (const t of json.added_tokens ?? []) {
    if (t.id < 0 || t.id >= vocabSize) continue;
    encoded[t.id] = t.special === true ? '' : t.content;
  }
  const controlIds: number[] = [];
  const byteIds = new Int32Array(256).fill(-1);
  for (let id = 0; id < vocabSize; id++) {
    const piece = encoded[id]!;
    const byte = byteValue(piece);
    if (byte >= 0 && NEVER_IN_UTF8(byte)) { encoded[id] = ''; continue; }
    if (byte >= 0) byteIds[byte] = id;
    if (byte >= 0 ? byte < 0x20 : hasControl(piece)) controlIds.push(id);
  }
  return { encoded, vocabSize, controlIds, byteIds, stopIds: [...new Set(stopIds)].filter((id) => Number.isInteger(id) && id >= 0 && id < vocabSize) };
}

const NEVER_IN_UTF8 = (b: number): boolean => b === 0xc0 || b === 0xc1 || b >= 0xf5;

/** The byte of a `<0xNN>` piece, else -1 (no regex: this runs for each of 256,000 pieces). */
function byteValue(piece: string): number {
  if (piece.length !== 6 || !piece.startsWith('<0x') || piece[5] !== '>') return -1;
  const v = parseInt(piece.slice(3, 5), 16);
  return Number.isNaN(v) ? -1 : v;
}

function hasControl(piece: string): boolean {
  for (let i = 0; i < piece.length; i++) if (piece.charCodeAt(i) < 0x20) return true;
  return false;
}
