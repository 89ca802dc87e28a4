/**
 * The vocabulary as xgrammar's token table wants it: one string per token id, in the
 * tokenizer's own encoding (Gemma: SentencePiece-style "▁" for spaces and `<0xNN>` byte pieces,
 * which xgrammar's "byte_fallback" decoding understands), padded to the model's logits width.
 * Special tokens (`<bos>`, `<start_of_turn>`, ...) become empty strings: xgrammar treats an
 * empty token as special and never allows it inside a structure, which is what we want, since
 * the detokenizer may drop them from the text. Stop tokens are passed to the matcher separately.
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
}

interface TokenizerJson {
  readonly model?: { readonly vocab?: Record<string, number> | [string, number][] };
  readonly added_tokens?: readonly { readonly id: number; readonly content: string; readonly special?: boolean }[];
}

/** Reads tokenizer.json's vocabulary (BPE map or Unigram list) into xgrammar's table order. */
export function readGrammarVocab(tokenizerJsonPath: string, vocabSize: number): GrammarVocab {
  const json = JSON.parse(readFileSync(tokenizerJsonPath, 'utf8')) as TokenizerJson;
  return grammarVocab(json, vocabSize);
}

export function grammarVocab(json: TokenizerJson, vocabSize: number): GrammarVocab {
  const encoded = new Array<string>(vocabSize).fill('');
  const vocab = json.model?.vocab ?? {};
  const entries: Iterable<[string, number]> = Array.isArray(vocab) ? vocab.map(([piece], id) => [piece, id] as [string, number]) : Object.entries(vocab);
  for (const [piece, id] of entries) if (id >= 0 && id < vocabSize) encoded[id] = piece;
  for (const t of json.added_tokens ?? []) {
    if (t.id < 0 || t.id >= vocabSize) continue;
    encoded[t.id] = t.special === true ? '' : t.content;
  }
  for (let id = 0; id < vocabSize; id++) {
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(encoded[id]!);
    if (byte !== null && NEVER_IN_UTF8(parseInt(byte[1]!, 16))) encoded[id] = '';
  }
  const controlIds: number[] = [];
  const byteIds = new Int32Array(256).fill(-1);
  for (let id = 0; id < vocabSize; id++) {
    const piece = encoded[id]!;
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (byte !== null) byteIds[parseInt(byte[1]!, 16)] = id;
    // eslint-disable-next-line no-control-regex -- control characters are what is looked for
    if (byte !== null ? parseInt(byte[1]!, 16) < 0x20 : /[\u0000-\u001f]/.test(piece)) controlIds.push(id);
  }
  return { encoded, vocabSize, controlIds, byteIds };
}

const NEVER_IN_UTF8 = (b: number): boolean => b === 0xc0 || b === 0xc1 || b >= 0xf5;
