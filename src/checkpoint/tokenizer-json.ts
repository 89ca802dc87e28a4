/**
 * A synthetic Gemma-style tokenizer for random checkpoints: the same machinery as Gemma's
 * real `tokenizer.json` (BPE with byte fallback, spaces as "▁", the same special ids and
 * chat markers) over a small vocabulary, so every text path of the server (special tokens
 * in prompts, byte-fallback UTF-8, streaming detokenization, the chat template) can be
 * exercised end to end without the 4 MB original.
 */

/** The official Gemma chat template (tokenizer_config.json `chat_template`). */
export const GEMMA_CHAT_TEMPLATE =
  "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" +
  "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}" +
  "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

/** Special tokens at Gemma's ids; ids 4..105 are `<unused0>`.. as in the real vocabulary. */
const SPECIALS: ReadonlyArray<readonly [number, string]> = [
  [0, '<pad>'], [1, '<eos>'], [2, '<bos>'], [3, '<unk>'],
  ...Array.from({ length: 102 }, (_, i) => [4 + i, `<unused${i}>`] as const),
  [106, '<start_of_turn>'], [107, '<end_of_turn>'],
];

/**
 * Common English pieces in merge-priority order. Each is built from two tokens already in
 * the vocabulary when its turn comes; pieces that do not fit the vocabulary are dropped.
 */
const PIECES: readonly string[] = [
  '▁t', 'he', 'in', 'er', '▁a', 'an', 're', 'on', '▁the', 'at', 'en', 'or', '▁s', 'ou', '▁w', 'it',
  'es', 'is', 'ing', 'nd', '▁o', '▁c', 'ed', '▁b', '▁f', 'ar', '▁m', '▁p', 'le', 'al', '▁to', '▁and',
  '▁of', '▁in', 'as', 'ic', 'll', '▁h', 'om', 'st', '▁d', 'ion', 'ent', '▁th', 've', 'ro', '▁I', '▁is',
  '▁y', 'ly', 'ot', '▁you', 'ch', '▁l', '▁n', '▁e', 'ow', 'ay', 'ut', '▁that', '▁it', '▁for', 'us',
  '▁re', 'il', 'ld', 'ation', '▁be', 'ct', 'ith', '▁with', '▁g', 'ke', 'am', 'id', '▁on', 'ur', '▁wh',
  '▁H', '▁T', '▁he', 'Th', 'ver', '▁was', 'el', 'ir', '▁st', 'ad', '▁A', 'ig', 'ere', '▁this', '▁we',
  '▁are', '▁an', '▁have', '▁not', '▁can', '▁do', '▁at', '▁as', '▁or', '▁but', '▁all', '▁will', '▁one',
  '▁Hello', '▁world', 'Hello', '▁model', '▁user',
];

/** Ids used by specials, byte tokens and single characters: the smallest usable vocabulary. */
export const MIN_VOCAB_SIZE = 108 + 256 + baseCharacters().length;

export interface TokenizerFiles {
  readonly tokenizerJson: Record<string, unknown>;
  readonly tokenizerConfigJson: Record<string, unknown>;
}

/** Builds `tokenizer.json` and `tokenizer_config.json` for a vocabulary of `vocabSize` ids. */
export function buildGemmaTokenizerFiles(vocabSize: number): TokenizerFiles {
  return { tokenizerJson: buildTokenizerJson(vocabSize), tokenizerConfigJson: buildTokenizerConfigJson() };
}

export function buildTokenizerJson(vocabSize: number): Record<string, unknown> {
  if (!Number.isInteger(vocabSize) || vocabSize < MIN_VOCAB_SIZE) {
    throw new RangeError(`a Gemma-style tokenizer needs vocab_size >= ${MIN_VOCAB_SIZE} (specials, 256 byte tokens, characters), got ${vocabSize}`);
  }
  const vocab = new Map<string, number>();
  for (const [id, content] of SPECIALS) vocab.set(content, id);
  // Byte tokens come right after the specials, as in Gemma, so any UTF-8 text is encodable.
  for (let b = 0; b < 256; b++) vocab.set(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, vocab.size);
  for (const ch of baseCharacters()) vocab.set(ch, vocab.size);

  const merges: [string, string][] = [];
  for (const piece of PIECES) {
    if (vocab.size >= vocabSize) break;
    const split = splitIntoKnown(piece, vocab);
    if (split === null || vocab.has(piece)) continue;
    merges.push(split);
    vocab.set(piece, vocab.size);
  }
  // Placeholders keep ids dense up to vocab_size (the embedding has that many rows).
  while (vocab.size < vocabSize) vocab.set(`<unused_${vocab.size}>`, vocab.size);

  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIALS.map(([id, content]) => ({
      id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
    pre_tokenizer: null,
    // No post-processor: BOS comes from the chat template or is added explicitly by the caller.
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
  };
}

export function buildTokenizerConfigJson(): Record<string, unknown> {
  return {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: '<bos>',
    eos_token: '<eos>',
    pad_token: '<pad>',
    unk_token: '<unk>',
    clean_up_tokenization_spaces: false,
    tokenizer_class: 'GemmaTokenizer',
    chat_template: GEMMA_CHAT_TEMPLATE,
  };
}

/** "▁", newline (every chat turn has two) and printable ASCII except the space ("▁" stands for it). */
function baseCharacters(): string[] {
  const chars = ['▁', '\n'];
  for (let c = 0x21; c <= 0x7e; c++) chars.push(String.fromCharCode(c));
  return chars;
}

/** Splits `piece` into two known tokens, preferring the longest left part (the latest merge). */
function splitIntoKnown(piece: string, vocab: ReadonlyMap<string, number>): [string, string] | null {
  const chars = Array.from(piece);
  for (let i = chars.length - 1; i >= 1; i--) {
    const left = chars.slice(0, i).join('');
    const right = chars.slice(i).join('');
    if (vocab.has(left) && vocab.has(right)) return [left, right];
  }
  return null;
}
