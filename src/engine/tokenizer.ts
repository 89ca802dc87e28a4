/**
 * Text <-> token ids for a checkpoint, over `@huggingface/tokenizers` (a pure-JS reading of
 * the checkpoint's own tokenizer.json). `encode` never adds BOS/EOS: Gemma's chat template
 * writes `<bos>` itself, so where BOS comes from is decided by the caller, once. Special
 * tokens written in the text (`<start_of_turn>`, `<bos>`) are still recognized as their ids,
 * since the rendered chat template contains them as text. `decode` gives what Hugging Face's
 * Rust `tokenizers` gives, invalid byte runs included (`hfByteFallback`).
 */
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { CheckpointError } from '../errors.ts';
import type { DecodeOptions, TokenSource } from './token-table.ts';

export type { DecodeOptions } from './token-table.ts';

/** The full tokenizer (text workers): encodes, and is what a main-thread TokenTable is built from. */
export interface TextTokenizer extends TokenSource {
  encode(text: string): Int32Array;
  /** The id of a token string, or null when it is not in the vocabulary. */
  tokenToId(token: string): number | null;
  /** The strings of the special tokens (`<bos>`, `<start_of_turn>`, …): control tokens when written in text. */
  specialTokens(): string[];
}

/** Loads tokenizer.json (+ optional tokenizer_config.json); throws CheckpointError naming the file. */
export function loadTokenizer(tokenizerJsonPath: string, tokenizerConfigPath: string | null): TextTokenizer {
  const json = readObject(tokenizerJsonPath);
  const config = tokenizerConfigPath === null ? {} : readObject(tokenizerConfigPath);
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new CheckpointError(`${tokenizerJsonPath}: cannot build a tokenizer (${(e as Error).message})`, { cause: e });
  }
  return new HfTextTokenizer(tok, config, tokenizerJsonPath, json['decoder'] ?? null);
}

class HfTextTokenizer implements TextTokenizer {
  readonly bosId: number;
  readonly eosIds: readonly number[];
  readonly vocabSize: number;
  readonly maxPieceChars: number;
  private readonly specialIds: ReadonlySet<number>;
  readonly cleanUpSpaces: boolean;
  /** Byte-fallback token id -> its byte; empty when the decoder has no ByteFallback step. */
  private readonly fallbackBytes = new Map<number, number>();

  constructor(private readonly tok: Tokenizer, config: Record<string, unknown>, file: string, readonly decoderConfig: unknown) {
    const id = (key: string, fallback: string): number => {
      const content = tokenContent(config[key]) ?? fallback;
      const v = tok.token_to_id(content);
      if (v === undefined) throw new CheckpointError(`${file}: ${key} ${JSON.stringify(content)} is not in the vocabulary`);
      return v;
    };
    this.bosId = id('bos_token', '<bos>');
    const eos = id('eos_token', '<eos>');
    const endOfTurn = tok.token_to_id('<end_of_turn>');
    this.eosIds = Object.freeze(endOfTurn === undefined || endOfTurn === eos ? [eos] : [eos, endOfTurn]);
    let max = -1;
    let longest = 1;
    for (const [piece, v] of tok.get_vocab(true)) {
      if (v > max) max = v;
      if (piece.length > longest) longest = piece.length;
    }
    this.vocabSize = max + 1;
    this.maxPieceChars = longest;
    if (hfByteFallback(tok.decoder)) {
      for (let b = 0; b < 256; b++) {
        const v = tok.token_to_id(byteToken(b));
        if (v !== undefined) this.fallbackBytes.set(v, b);
      }
    }
    this.specialIds = new Set([...tok.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([i]) => i));
    // Gemma says false; the library defaults to true, which would rewrite " ." into ".".
    this.cleanUpSpaces = config['clean_up_tokenization_spaces'] === true;
  }

  encode(text: string): Int32Array {
    return Int32Array.from(this.tok.encode(text, { add_special_tokens: false }).ids);
  }

  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    if (ids.length === 0) return ''; // the library throws on an empty list
    return this.tok.decode(Array.from(ids), {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  idToToken(id: number): string | null {
    return this.tok.id_to_token(id) ?? null;
  }

  tokenToId(token: string): number | null {
    return this.tok.token_to_id(token) ?? null;
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  specialTokens(): string[] {
    return [...this.specialIds].map((id) => this.tok.id_to_token(id)).filter((s): s is string => s !== undefined);
  }

  tokenBytes(id: number): Uint8Array {
    const piece = this.tok.id_to_token(id);
    const byte = piece === undefined ? null : /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (byte !== null) return Uint8Array.of(parseInt(byte[1]!, 16));
    return new TextEncoder().encode(this.decode([id]));
  }

  fallbackByte(id: number): number | null {
    return this.fallbackBytes.get(id) ?? null;
  }
}

/** The vocabulary's spelling of a byte-fallback token (`<0xE4>`). */
function byteToken(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
}

/**
 * Gives each ByteFallback step of `decoder` Hugging Face's rule for a run of byte tokens: the
 * run's string when it is valid UTF-8, else one U+FFFD per byte of the run (tokenizers'
 * decoders/byte_fallback.rs). The JS library decodes the run with a lenient TextDecoder,
 * which writes one U+FFFD per maximal invalid subpart: fewer, and valid characters kept.
 * Returns whether the decoder has such a step.
 */
function hfByteFallback(decoder: unknown): boolean {
  // Decoder instances are callable objects; the package's type declarations do not resolve
  // under NodeNext, so the steps are recognized by their config's type, as the library does.
  if ((typeof decoder !== 'object' && typeof decoder !== 'function') || decoder === null) return false;
  const step = decoder as { config?: { type?: unknown }; text_decoder?: unknown; decoders?: unknown };
  if (step.config?.type === 'ByteFallback') {
    const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    // The step calls only text_decoder.decode(bytes).
    step.text_decoder = {
      decode(bytes: Uint8Array): string {
        try {
          return strict.decode(bytes);
        } catch {
          return '\uFFFD'.repeat(bytes.length);
        }
      },
    };
    return true;
  }
  return Array.isArray(step.decoders) && step.decoders.map(hfByteFallback).includes(true);
}

/** tokenizer_config.json writes a token either as a string or as {content: ...}. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return null;
}

function readObject(path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8')) as unknown;
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CheckpointError(`${path}: not a JSON object`);
  return value as Record<string, unknown>;
}
