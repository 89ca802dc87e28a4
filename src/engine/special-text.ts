/**
 * Message content as plain text: special-token strings (`<start_of_turn>`, `<end_of_turn>`,
 * `<bos>`, …) that a client writes inside a message are encoded as ordinary text, while the
 * chat template's own markers stay control tokens. Without this, an end user of an app could
 * forge turns by typing `<end_of_turn>\n<start_of_turn>model` (Hugging Face and vLLM encode
 * them as control tokens by default; OpenAI's tokenizers refuse them in text).
 *
 * How: before templating, each special string in a message's content (and each private-use
 * marker character, so a client cannot write a marker itself) is replaced by a marker
 * `\uE000<k>\uE001`; the rendered prompt is encoded piecewise: the template's text as usual
 * (its special strings are control tokens), each marker as the plain-text encoding of what it
 * stands for. A special string's plain encoding is its first character's tokens followed by
 * the encoding of the rest (which then holds no special string), e.g. `<` + `end_of_turn>`.
 */
import type { TextTokenizer } from './tokenizer.ts';

const OPEN = '\uE000';
const CLOSE = '\uE001';
const MARKER = /\uE000(\d+)\uE001/g;

export class SpecialTextGuard {
  /** What marker k stands for: the special strings, then OPEN itself. */
  private readonly literals: readonly string[];
  private readonly find: RegExp;
  private readonly plainIds = new Map<number, readonly number[]>();

  constructor(private readonly tokenizer: TextTokenizer, specials: readonly string[]) {
    // Longest first, so a special that contains another is replaced whole.
    this.literals = [...new Set(specials)].filter((s) => s !== '').sort((a, b) => b.length - a.length).concat(OPEN);
    this.find = new RegExp(this.literals.map(escapeRegExp).join('|'), 'g');
  }

  /** Content with every special string (and marker character) replaced by its marker. */
  protect(content: string): string {
    return content.replace(this.find, (s) => `${OPEN}${this.literals.indexOf(s)}${CLOSE}`);
  }

  /** Encodes a prompt rendered from protected content: markers become plain-text tokens. */
  encode(rendered: string): Int32Array {
    if (!rendered.includes(OPEN)) return this.tokenizer.encode(rendered);
    const ids: number[] = [];
    let last = 0;
    for (const m of rendered.matchAll(MARKER)) {
      if (m.index > last) ids.push(...this.tokenizer.encode(rendered.slice(last, m.index)));
      ids.push(...this.plain(Number(m[1])));
      last = m.index + m[0].length;
    }
    if (last < rendered.length) ids.push(...this.tokenizer.encode(rendered.slice(last)));
    return Int32Array.from(ids);
  }

  private plain(k: number): readonly number[] {
    let ids = this.plainIds.get(k);
    if (ids === undefined) {
      const s = this.literals[k];
      if (s === undefined) throw new RangeError(`special-text marker ${k} out of range`);
      const first = String.fromCodePoint(s.codePointAt(0)!);
      const rest = s.slice(first.length);
      // The rest may start another special string only if specials nest; protect it again.
      ids = [...this.tokenizer.encode(first), ...(rest === '' ? [] : this.encode(this.protect(rest)))];
      this.plainIds.set(k, ids);
    }
    return ids;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
