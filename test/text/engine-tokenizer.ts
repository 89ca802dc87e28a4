// Test support: the full tokenizer of an engine's model, loaded from its export directory.
// The engine itself keeps only a decoding table on the main thread (token-table.ts); tests
// that compute expected ids encode with the same tokenizer the text workers use.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine } from '../../src/engine/engine.ts';
import { loadTokenizer, type TextTokenizer } from '../../src/engine/tokenizer.ts';

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
