import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildGemmaTokenizerFiles } from '../../src/checkpoint/tokenizer-json.ts';
import { loadTokenizer } from '../../src/engine/tokenizer.ts';
import { Detokenizer } from '../../src/engine/detokenizer.ts';
import { GEMMA_TOKENIZER_CONFIG, GEMMA_TOKENIZER_JSON } from './gemma-tokenizer.ts';

const dir = mkdtempSync(join(tmpdir(), 'detokenizer-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const files = buildGemmaTokenizerFiles(512);
writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(files.tokenizerJson));
writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(files.tokenizerConfigJson));
const tok = loadTokenizer(join(dir, 'tokenizer.json'), join(dir, 'tokenizer_config.json'));

function stream(ids: Iterable<number>): string[] {
  const d = new Detokenizer(tok);
  const deltas = [...ids].map((id) => d.push(id));
  deltas.push(d.flush());
  return deltas;
}

t.test('streaming emoji and CJK token by token gives exactly the text, never half a character', async (t) => {
  const text = 'Héllo wörld 你好 🎉🎉 the end, 👩‍👩‍👧 ok 日本語のテキスト\n✓';
  const deltas = stream(tok.encode(text));
  t.equal(deltas.join(''), text);
  t.ok(deltas.every((d) => !d.includes('\uFFFD')), 'no U+FFFD in any delta');
  t.ok(deltas.filter((d) => d === '').length > 0, 'bytes of a character are held back');
});

t.test('special tokens produce no text', async (t) => {
  const ids = [2, 106, ...tok.encode('model\nHi 🎉'), 107, 1];
  const deltas = stream(ids);
  t.equal(deltas.join(''), 'model\nHi 🎉');
  t.equal(deltas[0], '');
  t.equal(deltas[ids.length - 1], '');
});

t.test('a character of byte tokens is emitted whole once the run ends', async (t) => {
  const d = new Detokenizer(tok);
  const bytes = [0xe4, 0xbd, 0xa0].map((b) => 108 + b); // 你
  t.equal(d.push(tok.tokenToId('a')!), 'a');
  t.equal(d.push(bytes[0]!), '');
  t.equal(d.push(bytes[1]!), '');
  // Complete, but another byte could still make the run invalid (then it is 4 U+FFFD).
  t.equal(d.push(bytes[2]!), '');
  t.equal(d.push(tok.tokenToId('a')!), '你a');
  t.equal(d.flush(), '');
});

t.test('invalid bytes are released rather than held forever', async (t) => {
  const d = new Detokenizer(tok);
  const out: string[] = [];
  for (let i = 0; i < 10; i++) out.push(d.push(108 + 0xff)); // 0xFF never starts a character
  out.push(d.push(tok.tokenToId('a')!), d.flush());
  const text = out.join('');
  t.equal(text, '\uFFFD'.repeat(10) + 'a');
  t.ok(out.slice(0, 10).some((x) => x.length > 0), 'released before the stream ended');
  t.equal(new Detokenizer(tok).flush(), '');
});

t.test('an incomplete character at the end is flushed as U+FFFD', async (t) => {
  const d = new Detokenizer(tok);
  t.equal(d.push(tok.tokenToId('a')!), 'a');
  t.equal(d.push(108 + 0xf0), '');
  t.equal(d.flush(), '\uFFFD');
});

t.test('random byte, word and special token sequences: the stream always equals the one-shot decode', async (t) => {
  // The real Gemma tokenizer; HF's own decodes of a fixed set are in hf-reference.test.ts.
  const gemma = loadTokenizer(GEMMA_TOKENIZER_JSON, GEMMA_TOKENIZER_CONFIG);
  const byteId = (b: number): number => gemma.tokenToId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!;
  const words = ['a', '▁the', 'Hello', '.', '\n', '▁', '中', '🎉'].map((w) => gemma.tokenToId(w)!);
  const specials = [1, 2, 106, 107];
  let state = 0x2545f491;
  const random = (): number => { // xorshift32: seeded, so a failure names a sequence that reproduces
    state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const bytesOfChar = (): number[] => [...new TextEncoder().encode(String.fromCodePoint(pick([0xe9, 0x4e2d, 0x1f389, 0x10348, 0x7ff, 0x800, 0xffff, 0x10ffff])))];
  let mismatches = 0;
  for (let n = 0; n < 1000; n++) {
    const ids: number[] = [];
    const length = 1 + Math.floor(random() * 16);
    while (ids.length < length) {
      const r = random();
      if (r < 0.35) ids.push(...bytesOfChar().map(byteId));
      else if (r < 0.55) ids.push(byteId(pick([0xc3, 0xe2, 0xe4, 0xf0, 0xf4, 0xed, 0xe0])));
      else if (r < 0.75) ids.push(byteId(0x80 + Math.floor(random() * 0x40)));
      else if (r < 0.82) ids.push(byteId(Math.floor(random() * 256)));
      else if (r < 0.94) ids.push(pick(words));
      else ids.push(pick(specials));
    }
    for (const skip of [true, false]) {
      const d = new Detokenizer(gemma, skip);
      const streamed = ids.map((id) => d.push(id)).join('') + d.flush();
      const oneShot = gemma.decode(ids, { skipSpecialTokens: skip });
      if (streamed !== oneShot && mismatches++ < 5) t.equal(streamed, oneShot, `ids ${ids.join(',')} skip ${skip}`);
    }
  }
  t.equal(mismatches, 0, 'no sequence streams differently');
});

t.test('pending() shows what a held run would flush to, and changes nothing', async (t) => {
  const d = new Detokenizer(tok);
  const ids = [tok.tokenToId('a')!, 108 + 0x3c, 108 + 0x62, 108 + 0xe4]; // a, then bytes '<', 'b', a lead byte
  t.equal(d.push(ids[0]!), 'a');
  t.equal(d.pending(), '', 'nothing held');
  t.equal(d.push(ids[1]!), '');
  t.equal(d.push(ids[2]!), '');
  t.equal(d.pending(), '<b', 'a valid run, as it would end here');
  t.equal(d.pending(), '<b', 'asking twice changes nothing');
  t.equal(d.push(ids[3]!), '');
  t.equal(d.pending(), '\uFFFD\uFFFD\uFFFD', 'unfinished: the whole run would be U+FFFDs');
  t.equal(d.flush(), '\uFFFD\uFFFD\uFFFD');
  t.equal(d.flush() + d.pending(), '');
});
