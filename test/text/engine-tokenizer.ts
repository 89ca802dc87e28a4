// Test support: the full tokenizer and the chat template of an engine's model, loaded from its
// export directory. The engine itself keeps only a decoding table on the main thread
// (token-table.ts) and no template; tests that compute expected ids render and encode with the
// same tokenizer and template the text workers use (the checkpoint's: no --chat-template).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine } from '../../src/engine/engine.ts';
import { loadTokenizer, type TextTokenizer } from '../../src/engine/tokenizer.ts';
import { loadChatTemplate, type ChatTemplate } from '../../src/engine/chat-template.ts';

const loaded = new WeakMap<Engine, TextTokenizer>();

export function tokenizerOf(engine: Engine): TextTokenizer {
  let tok = loaded.get(engine);
  if (tok === undefined) {
    const config = join(engine.exportDir, 'tokenizer_config.json');
    tok = loadTokenizer(join(engine.exportDir, 'tokenizer.json'), existsSync(config) ? config : null);
    loaded.set(engine, tok);
  }
  return tok;
}

const templates = new WeakMap<Engine, ChatTemplate>();

export function templateOf(engine: Engine): ChatTemplate {
  let template = templates.get(engine);
  if (template === undefined) {
    const config = join(engine.exportDir, 'tokenizer_config.json');
    template = loadChatTemplate(existsSync(config) ? config : null);
    templates.set(engine, template);
  }
  return template;
}
