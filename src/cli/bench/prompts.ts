/**
 * Synthetic prompts of roughly N tokens: random common English words from a seeded generator
 * (distinct per request, so a server's prefix cache cannot serve them), sized with a
 * calibration `tokens ≈ overhead + tokensPerWord × words` measured on the server's own
 * tokenizer when it has POST /tokenize, else estimated.
 */
import { UsageError } from '../usage.ts';

/** An inclusive integer range: `N` is {N, N}; `A:B` is sampled uniformly. */
export interface Range {
  readonly min: number;
  readonly max: number;
}

export function parseRange(flag: string, text: string): Range {
  const parts = text.split(':');
  const nums = parts.map((p) => Number(p.trim()));
  if (parts.length > 2 || nums.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new UsageError(`--${flag}: expected a positive integer N or a range A:B, got ${JSON.stringify(text)}`);
  }
  const [min, max = min] = nums as [number, number?];
  if (max < min) throw new UsageError(`--${flag}: the range ${text} is empty`);
  return { min, max };
}

/** A seeded generator of floats in [0, 1) (SplitMix32-style). */
export function seededRandom(seed: number): () => number {
  let state = (seed ^ 0x5bd1e995) >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 2 ** 32;
  };
}

/** A uniform integer from the range. */
export function sampleRange(range: Range, rand: () => number): number {
  return range.min + Math.floor(rand() * (range.max - range.min + 1));
}

const WORDS = ('time year people way day man thing woman life child world school state family student group country problem '
  + 'hand part place case week company system program question work government number night point home water room mother '
  + 'area money story fact month lot right study book eye job word business issue side kind head house service friend father '
  + 'power hour game line end member law car city community name president team minute idea kid body information back parent '
  + 'face others level office door health person art war history party result change morning reason research girl guy moment '
  + 'air teacher force education river garden light music paper table window green small large early young important public '
  + 'bad able find give tell become leave feel bring begin keep hold write stand hear turn start show play run move live believe').split(' ');

/** `n` random words separated by spaces. */
export function randomWords(n: number, rand: () => number): string {
  return Array.from({ length: n }, () => WORDS[Math.floor(rand() * WORDS.length)]!).join(' ');
}

/** How many tokens a prompt of random words takes: overhead + tokensPerWord × words. */
export interface Calibration {
  /** `tokenize`: measured with the server's POST /tokenize; `estimate`: no such endpoint. */
  readonly source: 'tokenize' | 'estimate';
  readonly tokensPerWord: number;
  /** Tokens independent of the length (a BOS token). */
  readonly overheadTokens: number;
}

/** Used when the server cannot tokenize: common English words are about 1.3 tokens each. */
export const ESTIMATE: Calibration = { source: 'estimate', tokensPerWord: 1.3, overheadTokens: 1 };

/** A calibration from the token counts of two texts of `wordsA` < `wordsB` words. */
export function fitCalibration(wordsA: number, tokensA: number, wordsB: number, tokensB: number): Calibration {
  const tokensPerWord = (tokensB - tokensA) / (wordsB - wordsA);
  if (!(tokensPerWord > 0)) return ESTIMATE;
  return { source: 'tokenize', tokensPerWord, overheadTokens: Math.max(0, tokensA - tokensPerWord * wordsA) };
}

/** A prompt of about `tokens` tokens under the calibration (at least one word). */
export function promptOfTokens(tokens: number, cal: Calibration, rand: () => number): string {
  return randomWords(Math.max(1, Math.round((tokens - cal.overheadTokens) / cal.tokensPerWord)), rand);
}
