import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildGemmaTokenizerFiles, MIN_VOCAB_SIZE } from '../../src/checkpoint/tokenizer-json.ts';
import { loadTokenizer, type TextTokenizer } from '../../src/engine/tokenizer.ts';

const dir = mkdtempSync(join(tmpdir(), 'tokenizer-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function tokenizerOf(vocabSize: number, withConfig = true): TextTokenizer {
  const files = buildGemmaTokenizerFiles(vocabSize);
  const json = join(dir, `tokenizer-${vocabSize}.json`);
  const config = join(dir, `tokenizer_config-${vocabSize}.json`);
  writeFileSync(json, JSON.stringify(files.tokenizerJson));
  writeFileSync(config, JSON.stringify(files.tokenizerConfigJson));
  return loadTokenizer(json, withConfig ? config : null);
}

const tok = tokenizerOf(512);

t.test('the vocabulary has Gemma ids for the special tokens and fills vocab_size', async (t) => {
  t.equal(tok.vocabSize, 512);
  t.equal(tok.bosId, 2);
  t.same(tok.eosIds, [1, 107]);
  const ids = { '<pad>': 0, '<eos>': 1, '<bos>': 2, '<unk>': 3, '<unused0>': 4, '<unused101>': 105, '<start_of_turn>': 106, '<end_of_turn>': 107, '<0x00>': 108, '<0xFF>': 363 };
  for (const [token, id] of Object.entries(ids)) t.equal(tok.tokenToId(token), id, token);
  t.equal(tok.tokenToId('no such token'), null);
  t.ok(tok.isSpecial(106));
  t.notOk(tok.isSpecial(tok.tokenToId('a')!));
  t.equal(tokenizerOf(1000).vocabSize, 1000);
  t.ok(tokenizerOf(1000).tokenToId('<unused_999>') === 999, 'placeholders fill the rest');
  t.throws(() => buildGemmaTokenizerFiles(MIN_VOCAB_SIZE - 1), RangeError);
});

t.test('accents, CJK and emoji round-trip through byte-fallback tokens', async (t) => {
  const text = 'Héllo wörld 你好 🎉';
  const ids = tok.encode(text);
  t.equal(tok.decode(ids), text);
  t.ok([...ids].some((id) => id >= 108 && id < 364), 'uses byte tokens');
  t.ok([...ids].every((id) => id !== 3), 'never <unk>');
  // 🎉 is F0 9F 8E 89: four byte tokens at the end.
  t.same([...ids.slice(-4)], [0xf0, 0x9f, 0x8e, 0x89].map((b) => 108 + b));
});

t.test('merges make common English pieces single tokens; spaces become ▁', async (t) => {
  const ids = tok.encode(' the cat');
  t.same([...ids.slice(0, 2)], [tok.tokenToId('▁the'), tok.tokenToId('▁c')]);
  t.equal(tok.decode(ids), ' the cat');
  t.equal(tok.decode(tok.encode('  two  spaces , kept . ')), '  two  spaces , kept . ', 'no clean-up of spaces');
});

t.test('encode adds no BOS but recognizes special tokens written in the text', async (t) => {
  t.not(tok.encode('Hi')[0], 2);
  const ids = tok.encode('<bos><start_of_turn>user\nHi<end_of_turn>\n');
  t.same([...ids], [2, 106, ...tok.encode('user\nHi'), 107, tok.tokenToId('\n')]);
});

t.test('decode keeps or skips special tokens on request', async (t) => {
  const ids = tok.encode('<bos><start_of_turn>model\nHi<end_of_turn>');
  t.equal(tok.decode(ids), '<bos><start_of_turn>model\nHi<end_of_turn>');
  t.equal(tok.decode(ids, { skipSpecialTokens: true }), 'model\nHi');
  t.equal(tok.decode([]), '');
});

t.test('without tokenizer_config.json the Gemma defaults apply', async (t) => {
  const bare = tokenizerOf(600, false);
  t.equal(bare.bosId, 2);
  t.same(bare.eosIds, [1, 107]);
  t.equal(bare.decode(bare.encode('a . b')), 'a . b');
});
