/**
 * A schema-validated /v1/chat/completions body (schemas/chat.ts) read into a ChatRequest:
 * the shared generation fields (request-fields.ts), the messages, chat's logprobs flags, and
 * the rules no schema states: OpenAI fields that would change the output but are not
 * implemented (tools, response formats other than text, audio, ...) are refused by name.
 */
import type { Static } from 'typebox';
import { TEMPLATE_VARIABLES, type ChatMessage, type RenderOptions } from '../engine/chat-template.ts';
import { InvalidRequestError } from '../errors.ts';
import type { Constraint } from '../engine/grammar/constraint.ts';
import { outputConstraints, type ToolRequest } from './structured-output.ts';
import { renderToolMessages, type ToolAwareMessage } from './tool-calls.ts';
import { parseGenerationParams, rejectUnsupported, type GenerationParams, type UnsupportedFields } from './request-fields.ts';
import type { ChatCompletionBody } from './schemas/chat.ts';
import type { ChatMessages } from './schemas/common.ts';

export interface ChatRequest extends GenerationParams {
  /** The conversation as the template sees it (tools and tool turns already written in, tool-calls.ts). */
  readonly messages: ChatMessage[];
  /** null: no logprobs; else the number of top alternatives (0..20). */
  readonly logprobs: number | null;
  /** The output constraint (response_format, structured_outputs, guided_*, or the tool-call grammar). */
  readonly constraint: Constraint | null;
  /** Tool calling as asked (null: no tools); with a choice other than none, output is parsed for calls. */
  readonly tools: ToolRequest | null;
  /** The messages as sent, tool calls and results included: for a template that handles tools itself. */
  readonly toolMessages: readonly ToolAwareMessage[];
  /** add_generation_prompt, continue_final_message, chat_template_kwargs (the template's tools are added by the route). */
  readonly render: RenderOptions;
}

/** Known OpenAI fields we cannot honour yet; each maps to the values that change nothing. */
const UNSUPPORTED: UnsupportedFields = new Map(Object.entries({
  functions: (v) => Array.isArray(v) && v.length === 0,
  function_call: (v) => v === 'none',
  modalities: (v) => Array.isArray(v) && v.length === 1 && v[0] === 'text',
  audio: () => false,
  prediction: () => false,
  reasoning_effort: () => false,
  web_search_options: () => false,
  verbosity: () => false,
}));

/** Speaker names would change the prompt and Gemma's template has none, so they are refused, not dropped. */
const UNSUPPORTED_IN_MESSAGE: UnsupportedFields = new Map(Object.entries({
  name: () => false,
  function_call: () => false,
  refusal: () => false,
  audio: () => false,
}));

export function parseChatRequest(body: ChatCompletionBody): ChatRequest {
  rejectUnsupported(body, UNSUPPORTED);
  const { constraint, tools } = outputConstraints(body as unknown as Readonly<Record<string, unknown>>, { tools: true });
  const offerTools = tools !== null && tools.choice !== 'none';
  const toolMessages = parseMessages(body.messages);
  const messages = renderToolMessages(toolMessages, tools?.tools ?? [], offerTools);
  const params = parseGenerationParams(body, body.max_completion_tokens ?? body.max_tokens);
  if (body.top_logprobs != null && body.logprobs !== true) throw new InvalidRequestError('top_logprobs: requires logprobs to be true', 'top_logprobs');
  // params spread last: on Node 20 `{ ...params, more }` took ~12 us a call in a micro-benchmark,
  // `{ more, ...params }` under 1 us; params has neither key, so the result is the same.
  const render = parseRenderOptions(body);
  return { messages, logprobs: body.logprobs === true ? body.top_logprobs ?? 0 : null, constraint, tools: offerTools ? tools : null, toolMessages, render, ...params };
}

/** The template fields vLLM takes: add_generation_prompt (default true, false for a prefill), continue_final_message, chat_template_kwargs. */
export function parseRenderOptions(body: { readonly add_generation_prompt?: boolean | null; readonly continue_final_message?: boolean | null; readonly chat_template_kwargs?: Readonly<Record<string, unknown>> | null }): RenderOptions {
  const continueFinalMessage = body.continue_final_message === true;
  const addGenerationPrompt = body.add_generation_prompt ?? !continueFinalMessage;
  if (continueFinalMessage && addGenerationPrompt) {
    throw new InvalidRequestError('continue_final_message: cannot be true together with add_generation_prompt: true (a prefill continues the last message; it does not open a new turn)', 'continue_final_message');
  }
  const kwargs = body.chat_template_kwargs ?? {};
  for (const name of Object.keys(kwargs)) {
    if (TEMPLATE_VARIABLES.includes(name)) throw new InvalidRequestError(`chat_template_kwargs.${name}: set by the server (use the request's own field)`, `chat_template_kwargs.${name}`);
  }
  return { addGenerationPrompt, continueFinalMessage, kwargs };
}

/** The messages as sent, tool calls and tool results included (renderToolMessages writes them as turns). */
export function parseMessages(messages: Static<typeof ChatMessages>): ToolAwareMessage[] {
  return messages.map((m, i): ToolAwareMessage => {
    const p = `messages[${i}]`;
    rejectUnsupported(m, UNSUPPORTED_IN_MESSAGE, p);
    const role = m.role === 'developer' ? 'system' : m.role;
    const c = m.content;
    if (c === null && role !== 'assistant') throw new InvalidRequestError(`${p}.content: must be a string or an array of text parts (null only on an assistant turn)`, `${p}.content`);
    // Text parts joined by a newline, as vLLM joins them before templating.
    const content = c == null ? '' : typeof c === 'string' ? c : c.map((part) => part.text).join('\n');
    if (m.tool_call_id != null && role !== 'tool') throw new InvalidRequestError(`${p}.tool_call_id: only on a tool message`, `${p}.tool_call_id`);
    if (m.tool_calls != null && m.tool_calls.length > 0 && role !== 'assistant') throw new InvalidRequestError(`${p}.tool_calls: only on an assistant message`, `${p}.tool_calls`);
    if (role === 'tool') {
      if (m.tool_call_id == null) throw new InvalidRequestError(`${p}.tool_call_id: required on a tool message`, `${p}.tool_call_id`);
      return { role, content, toolCallId: m.tool_call_id };
    }
    if (role === 'assistant' && m.tool_calls != null && m.tool_calls.length > 0) {
      return { role, content, toolCalls: m.tool_calls.map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })) };
    }
    return { role, content };
  });
}
