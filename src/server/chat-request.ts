/**
 * A schema-validated /v1/chat/completions body (schemas/chat.ts) read into a ChatRequest:
 * the shared generation fields (request-fields.ts), the messages, chat's logprobs flags, and
 * the rules no schema states: OpenAI fields that would change the output but are not
 * implemented (tools, response formats other than text, audio, ...) are refused by name.
 */
import type { Static } from 'typebox';
import type { ChatMessage } from '../engine/chat-template.ts';
import { InvalidRequestError } from '../errors.ts';
import { parseGenerationParams, rejectUnsupported, type GenerationParams, type UnsupportedFields } from './request-fields.ts';
import type { ChatCompletionBody } from './schemas/chat.ts';
import type { ChatMessages } from './schemas/common.ts';

export interface ChatRequest extends GenerationParams {
  readonly messages: ChatMessage[];
  /** null: no logprobs; else the number of top alternatives (0..20). */
  readonly logprobs: number | null;
}

/** Known OpenAI fields we cannot honour yet; each maps to the values that change nothing. */
const UNSUPPORTED: UnsupportedFields = new Map(Object.entries({
  tools: (v) => Array.isArray(v) && v.length === 0,
  tool_choice: (v) => v === 'none',
  functions: (v) => Array.isArray(v) && v.length === 0,
  function_call: (v) => v === 'none',
  response_format: (v) => typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'text',
  modalities: (v) => Array.isArray(v) && v.length === 1 && v[0] === 'text',
  audio: () => false,
  prediction: () => false,
  reasoning_effort: () => false,
  web_search_options: () => false,
  verbosity: () => false,
}));

/**
 * What SDKs echo back on assistant turns is accepted when empty; speaker names would change
 * the prompt and Gemma's template has none, so they are refused, not dropped.
 */
const UNSUPPORTED_IN_MESSAGE: UnsupportedFields = new Map(Object.entries({
  name: () => false,
  tool_calls: (v) => Array.isArray(v) && v.length === 0,
  function_call: () => false,
  refusal: () => false,
  audio: () => false,
}));

export function parseChatRequest(body: ChatCompletionBody): ChatRequest {
  rejectUnsupported(body, UNSUPPORTED);
  const messages = parseMessages(body.messages);
  const params = parseGenerationParams(body, body.max_completion_tokens ?? body.max_tokens);
  if (body.top_logprobs != null && body.logprobs !== true) throw new InvalidRequestError('top_logprobs: requires logprobs to be true', 'top_logprobs');
  // params spread last: on Node 20 `{ ...params, more }` took ~12 us a call in a micro-benchmark,
  // `{ more, ...params }` under 1 us; params has neither key, so the result is the same.
  return { messages, logprobs: body.logprobs === true ? body.top_logprobs ?? 0 : null, ...params };
}

export function parseMessages(messages: Static<typeof ChatMessages>): ChatMessage[] {
  return messages.map((m, i) => {
    const p = `messages[${i}]`;
    rejectUnsupported(m, UNSUPPORTED_IN_MESSAGE, p);
    const role = m.role === 'developer' ? 'system' : m.role;
    const c = m.content;
    if (c === null && role !== 'assistant') throw new InvalidRequestError(`${p}.content: must be a string or an array of text parts (null only on an assistant turn)`, `${p}.content`);
    const content = c === null ? '' : typeof c === 'string' ? c : c.map((part) => part.text).join('');
    return { role, content };
  });
}
