/**
 * Validation of a /v1/chat/completions body: the shared generation fields (request-fields.ts),
 * the messages, and chat's logprobs flags. Unknown fields are rejected by name; OpenAI fields
 * that would change the output but are not implemented (tools, response formats other than
 * text, audio, ...) are rejected by name too.
 */
import type { ChatMessage } from '../engine/chat-template.ts';
import { InvalidRequestError } from '../errors.ts';
import { FieldReader, generationFieldNames, parseGenerationParams, type GenerationParams } from './request-fields.ts';

export interface ChatRequest extends GenerationParams {
  readonly messages: ChatMessage[];
  /** null: no logprobs; else the number of top alternatives (0..20). */
  readonly logprobs: number | null;
}

const CHAT_FIELDS = [...generationFieldNames(), 'messages', 'max_completion_tokens', 'logprobs', 'top_logprobs'];

/** Known OpenAI fields we cannot honour yet; each maps to the values that change nothing. */
const UNSUPPORTED: Readonly<Record<string, (v: unknown) => boolean>> = {
  tools: (v) => Array.isArray(v) && v.length === 0,
  tool_choice: (v) => v === 'none',
  parallel_tool_calls: () => true,
  functions: (v) => Array.isArray(v) && v.length === 0,
  function_call: (v) => v === 'none',
  response_format: (v) => typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'text',
  modalities: (v) => Array.isArray(v) && v.length === 1 && v[0] === 'text',
  audio: () => false,
  prediction: () => false,
  reasoning_effort: () => false,
  web_search_options: () => false,
  verbosity: () => false,
};

export function parseChatRequest(body: unknown): ChatRequest {
  const r = new FieldReader(body);
  r.checkFields(CHAT_FIELDS, UNSUPPORTED);
  const params = parseGenerationParams(r, ['max_completion_tokens', 'max_tokens']);
  const messages = parseMessages(r.get('messages'));
  const lpFlag = r.bool('logprobs');
  const topLogprobs = r.int('top_logprobs', 0, 20);
  if (topLogprobs !== undefined && lpFlag !== true) throw new InvalidRequestError('top_logprobs: requires logprobs to be true', 'top_logprobs');
  return { ...params, messages, logprobs: lpFlag === true ? topLogprobs ?? 0 : null };
}

export function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw new InvalidRequestError('messages: a non-empty array of messages is required', 'messages');
  return v.map((m: unknown, i) => {
    const p = `messages[${i}]`;
    const r = new FieldReader(m, p);
    let role = r.get('role');
    if (role === 'developer') role = 'system';
    if (role !== 'system' && role !== 'user' && role !== 'assistant') {
      throw new InvalidRequestError(`${p}.role: must be system, developer, user or assistant, got ${JSON.stringify(r.body['role'])}`, `${p}.role`);
    }
    // What SDKs echo back on assistant turns is accepted when empty; speaker names would
    // change the prompt and Gemma's template has none, so they are refused, not dropped.
    r.checkFields(['role', 'content'], {
      name: () => false,
      tool_calls: (v) => Array.isArray(v) && v.length === 0,
      function_call: () => false,
      refusal: () => false,
      audio: () => false,
    });
    const c = r.body['content'];
    let content: string;
    if (typeof c === 'string') content = c;
    else if (Array.isArray(c)) {
      content = c.map((part: unknown, j) => {
        const pp = part as Record<string, unknown> | null;
        if (typeof pp !== 'object' || pp === null || pp['type'] !== 'text' || typeof pp['text'] !== 'string') {
          throw new InvalidRequestError(`${p}.content[${j}]: only {type: 'text', text} parts are supported`, `${p}.content`);
        }
        return pp['text'];
      }).join('');
    } else if (c === null && role === 'assistant') content = '';
    else throw new InvalidRequestError(`${p}.content: must be a string or an array of text parts`, `${p}.content`);
    return { role, content };
  });
}
