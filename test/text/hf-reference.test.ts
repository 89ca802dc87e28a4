// The real Gemma tokenizer and chat template against Hugging Face's own libraries (the stored
// reference, test/fixtures/gemma-text-reference.json): ids of a multilingual corpus, chat
// prompts as apply_chat_template renders them (through the request parser and a text worker,
// as a chat request goes), and decodes of byte-token runs, one-shot and streamed.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadChatTemplate } from '../../src/engine/chat-template.ts';
import { Detokenizer } from '../../src/engine/detokenizer.ts';
import { TextPool } from '../../src/engine/text-pool.ts';
import { loadTokenizer } from '../../src/engine/tokenizer.ts';
import { parseChatRequest } from '../../src/server/chat-request.ts';
import type { ChatCompletionBody } from '../../src/server/schemas/chat.ts';
import { GEMMA_TOKENIZER_CONFIG, GEMMA_TOKENIZER_JSON } from './gemma-tokenizer.ts';
import { HF_REFERENCE } from './hf-reference.ts';

const tokenizer = loadTokenizer(GEMMA_TOKENIZER_JSON, GEMMA_TOKENIZER_CONFIG);
const template = loadChatTemplate(GEMMA_TOKENIZER_CONFIG);

t.test('the reference was computed from these very tokenizer files', async (t) => {
  const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
  t.equal(sha(GEMMA_TOKENIZER_JSON), HF_REFERENCE.sha256['tokenizer.json'], 'tokenizer.json changed: rerun scripts/gemma-text-reference.py');
  t.equal(sha(GEMMA_TOKENIZER_CONFIG), HF_REFERENCE.sha256['tokenizer_config.json'], 'tokenizer_config.json changed: rerun scripts/gemma-text-reference.py');
});

t.test('every corpus text encodes to the ids of Hugging Face tokenizers', async (t) => {
  t.ok(HF_REFERENCE.encode.length >= 20);
  for (const { text, ids } of HF_REFERENCE.encode) t.same([...tokenizer.encode(text)], ids, JSON.stringify(text.slice(0, 40)));
});

t.test('chat requests render as apply_chat_template renders them', async (t) => {
  const pool = await TextPool.start({ tokenizerJson: GEMMA_TOKENIZER_JSON, tokenizerConfig: GEMMA_TOKENIZER_CONFIG, specialTokensInContent: false }, 1);
  t.teardown(() => pool.close());
  for (const c of HF_REFERENCE.chat) {
    const req = parseChatRequest({ model: 'gemma', ...c.request } as unknown as ChatCompletionBody);
    t.equal(template.renderChat(req.messages, req.render), c.text, `${c.name}: text`);
    t.same([...await pool.encodeChat(req.messages, req.render)], c.ids, `${c.name}: ids through a text worker`);
  }
});

t.test('byte runs decode as Hugging Face decodes them, one-shot and streamed', async (t) => {
  const stream = (ids: readonly number[], skip: boolean): string => {
    const d = new Detokenizer(tokenizer, skip);
    return ids.map((id) => d.push(id)).join('') + d.flush();
  };
  for (const { ids, text, text_with_special: withSpecial } of HF_REFERENCE.decode) {
    const label = ids.join(',');
    t.equal(tokenizer.decode(ids, { skipSpecialTokens: true }), text, `decode ${label}`);
    t.equal(tokenizer.decode(ids, { skipSpecialTokens: false }), withSpecial, `decode with specials ${label}`);
    t.equal(stream(ids, true), text, `stream ${label}`);
    t.equal(stream(ids, false), withSpecial, `stream with specials ${label}`);
  }
});
