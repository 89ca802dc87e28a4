// Test support: test/fixtures/gemma-text-reference.json, what Hugging Face's Rust `tokenizers`
// and `transformers`' apply_chat_template make of the real Gemma tokenizer files (written once
// by scripts/gemma-text-reference.py, a dev-only script; tests never run Python).
import { readFileSync } from 'node:fs';

export interface ChatCase {
  readonly name: string;
  /** The chat request fields as a client sends them (messages, add_generation_prompt, ...). */
  readonly request: { readonly messages: unknown[]; readonly [field: string]: unknown };
  /** What apply_chat_template was given (text parts joined, system messages folded). */
  readonly hf_messages: readonly { readonly role: string; readonly content: string }[];
  readonly text: string;
  readonly ids: readonly number[];
}

export interface HfReference {
  readonly versions: Readonly<Record<string, string>>;
  readonly sha256: { readonly 'tokenizer.json': string; readonly 'tokenizer_config.json': string };
  readonly encode: readonly { readonly text: string; readonly ids: readonly number[] }[];
  readonly chat: readonly ChatCase[];
  readonly decode: readonly { readonly ids: readonly number[]; readonly text: string; readonly text_with_special: string }[];
}

export const HF_REFERENCE = JSON.parse(readFileSync(new URL('../fixtures/gemma-text-reference.json', import.meta.url), 'utf8')) as HfReference;

export function chatCase(name: string): ChatCase {
  const c = HF_REFERENCE.chat.find((x) => x.name === name);
  if (c === undefined) throw new Error(`no chat case ${name} in gemma-text-reference.json`);
  return c;
}
