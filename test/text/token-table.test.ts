// The main thread decodes with a TokenTable built in a text worker instead of loading the
// tokenizer: its decode must equal the tokenizer's (Hugging Face's rules, byte runs included)
// for any ids, with specials kept or skipped, on the real Gemma tokenizer and the synthetic one.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildGemmaTokenizerFiles } from '../../src/checkpoint/tokenizer-json.ts';
import { loadTokenizer, type TextTokenizer } from '../../src/engine/tokenizer.ts';
import { TokenTable, tokenTableData } from '../../src/engine/token-table.ts';
import { Detokenizer } from '../../src/engine/detokenizer.ts';
import { GEMMA_TOKENIZER_CONFIG, GEMMA_TOKENIZER_JSON } from './gemma-tokenizer.ts';

const dir = mkdtempSync(join(tmpdir(), 'token-table-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const files = buildGemmaTokenizerFiles(512);
writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(files.tokenizerJson));
writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(files.tokenizerConfigJson));

/** mulberry32: a seeded stream of uniforms. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x ^= x + Math.imul(x ^ (x >>> 7), 61 | x);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random ids weighted towards what makes decoding hard: byte-token runs, specials, ids around them. */
function randomIds(tok: TextTokenizer, next: () => number, length: number): number[] {
  const byteIds = Array.from({ length: 256 }, (_, b) => tok.tokenToId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)).filter((x): x is number => x !== null);
  const specials = tok.specialTokens().map((s) => tok.tokenToId(s)!);
  return Array.from({ length }, () => {
    const r = next();
    if (r < 0.4) return byteIds[Math.floor(next() * byteIds.length)]!;
    if (r < 0.5) return specials[Math.floor(next() * specials.length)]!;
    return Math.floor(next() * tok.vocabSize);
  });
}

for (const [name, json, config] of [['real Gemma', GEMMA_TOKENIZER_JSON, GEMMA_TOKENIZER_CONFIG], ['synthetic', join(dir, 'tokenizer.json'), join(dir, 'tokenizer_config.json')]] as const) {
  t.test(`${name} tokenizer: the table decodes as the tokenizer does`, async (t) => {
    const tok = loadTokenizer(json, config);
    const data = tokenTableData(tok);
    if (data === null) return t.fail('Gemma\'s decoder gets a table');
    const table = new TokenTable(data);
    t.equal(table.vocabSize, tok.vocabSize);
    t.equal(table.bosId, tok.bosId);
    t.same(table.eosIds, tok.eosIds);
    t.equal(table.maxPieceChars, tok.maxPieceChars);
    const next = rng(7);
    let mismatches = 0;
    for (let i = 0; i < 400; i++) {
      const ids = randomIds(tok, next, 1 + Math.floor(next() * 24));
      for (const skipSpecialTokens of [false, true]) {
        const want = tok.decode(ids, { skipSpecialTokens });
        const got = table.decode(ids, { skipSpecialTokens });
        if (got !== want && mismatches++ < 5) t.equal(got, want, `ids ${JSON.stringify(ids)}, skip ${skipSpecialTokens}`);
      }
    }
    t.equal(mismatches, 0, '800 random decodes equal');
    const text = 'Héllo wörld 你好 🎉 the end, 👩‍👩‍👧 ok\n\t  spaces  <start_of_turn>';
    t.equal(table.decode(tok.encode(text)), tok.decode(tok.encode(text)));
    let others = 0;
    for (let i = 0; i < 2000; i++) {
      const id = Math.floor(next() * tok.vocabSize);
      if (Buffer.compare(table.tokenBytes(id), tok.tokenBytes(id)) !== 0 || table.fallbackByte(id) !== tok.fallbackByte(id) || table.isSpecial(id) !== tok.isSpecial(id)) others++;
    }
    t.equal(others, 0, 'tokenBytes, fallbackByte, isSpecial equal on 2,000 random ids');
    // The detokenizer over the table streams what it streams over the tokenizer.
    for (let i = 0; i < 50; i++) {
      const ids = randomIds(tok, next, 32);
      const a = new Detokenizer(tok);
      const b = new Detokenizer(table);
      const da = [...ids.map((id) => a.push(id)), a.flush()];
      const db = [...ids.map((id) => b.push(id)), b.flush()];
      if (JSON.stringify(da) !== JSON.stringify(db)) { t.same(db, da, `stream of ${JSON.stringify(ids)}`); break; }
    }
  });
}

t.test('a decoder a table cannot reproduce gets none (the main thread then loads the tokenizer)', async (t) => {
  const other = structuredClone(files.tokenizerJson) as Record<string, unknown>;
  other['decoder'] = { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] };
  writeFileSync(join(dir, 'other.json'), JSON.stringify(other));
  t.equal(tokenTableData(loadTokenizer(join(dir, 'other.json'), join(dir, 'tokenizer_config.json'))), null);
});
