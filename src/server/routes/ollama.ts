/**
 * Ollama's generation routes, POST /api/generate and POST /api/chat, over the same path as
 * the OpenAI routes (generation-route.ts postGeneration, choices.ts, the chat template and
 * tokenizer in the text workers): Ollama's body read into GenerationParams
 * (ollama/options.ts), one generation, its events turned into Ollama's objects — NDJSON lines
 * by default, one JSON object with `stream: false` — the last carrying done: true, the
 * done_reason and the counts and durations (nanoseconds) Ollama reports.
 */
import type { FastifyInstance } from 'fastify';
import type { Engine } from '../../engine/engine.ts';
import type { Constraint } from '../../engine/grammar/constraint.ts';
import { GemmaServeError, InvalidRequestError } from '../../errors.ts';
import { startChoices, type ChoiceEvent, type ChoiceObserver } from '../choices.ts';
import type { EngineState } from '../engine-state.ts';
import { postGeneration } from '../generation-route.ts';
import { matchModelName } from '../model-names.ts';
import { OllamaError } from '../ollama/errors.ts';
import { parseOllamaParams, refuseUnless, tokenBudget, type OllamaParams } from '../ollama/options.ts';
import {
  OllamaChatRequest, OllamaChatResponse, OllamaGenerateRequest, OllamaGenerateResponse,
  type OllamaChatBody, type OllamaGenerateBody, type OllamaToolCall,
} from '../schemas/ollama.ts';
import { outputConstraints, type ToolRequest } from '../structured-output.ts';
import { renderToolMessages, ToolCallParser, type ToolAwareMessage, type ToolCall } from '../tool-calls.ts';
import { encodeChatPrompt } from './chat-completions.ts';

/** A started Ollama request; `choices` null: an empty prompt or conversation, which only "loads" the model. */
interface OllamaStarted {
  readonly req: { readonly stream: boolean; readonly model: string };
  readonly choices: AsyncIterable<ChoiceEvent> | null;
  /** When the request started (performance.now()). */
  readonly t0: number;
  /** Tool calling offered (chat): output is parsed for calls. */
  readonly tools: ToolRequest | null;
}

/** The fields of the last object (durations in nanoseconds). */
type Final = Pick<OllamaGenerateResponse, 'done_reason' | 'total_duration' | 'load_duration' | 'prompt_eval_count' | 'prompt_eval_duration' | 'eval_count' | 'eval_duration'>;

/** One generation's output as Ollama reports it: text as it comes, then the counts. */
type OllamaItem = { readonly type: 'text'; readonly text: string } | { readonly type: 'done'; readonly final: Final };

/** Ollama's 404 for a name the server does not serve (its message: `model 'x' not found`). */
export function checkOllamaModel(engine: Engine, model: string): void {
  if (matchModelName(engine.modelNames, model) === undefined) {
    throw new GemmaServeError(`model '${model}' not found (this server serves ${engine.modelNames.map((n) => `'${n}'`).join(', ')})`, 'model_not_found', 404, 'invalid_request_error', 'model');
  }
}

const ns = (ms: number): number => Math.max(0, Math.round(ms * 1e6));
const createdAt = (): string => new Date().toISOString();

/** The generation's events as Ollama items; the timings are measured here, on this thread. */
async function* ollamaItems(started: OllamaStarted): AsyncGenerator<OllamaItem> {
  if (started.choices === null) {
    yield { type: 'done', final: { done_reason: 'load' } };
    return;
  }
  let scheduledAt: number | null = null;
  let firstAt: number | null = null;
  for await (const { event: ev } of started.choices) {
    if (ev.type === 'scheduled') {
      scheduledAt = ev.at;
    } else if (ev.type === 'token') {
      firstAt ??= performance.now();
      if (ev.text !== '') yield { type: 'text', text: ev.text };
    } else if (ev.type === 'finish') {
      const end = performance.now();
      if (ev.text !== '') yield { type: 'text', text: ev.text };
      const first = firstAt ?? end;
      yield {
        type: 'done',
        final: {
          done_reason: ev.reason === 'abort' ? 'stop' : ev.reason,
          total_duration: ns(end - started.t0),
          // The model is loaded once, when the server starts: no request waits for it.
          load_duration: 0,
          prompt_eval_count: ev.usage.prompt_tokens,
          prompt_eval_duration: ns(first - (scheduledAt ?? started.t0)),
          eval_count: ev.usage.completion_tokens,
          eval_duration: ns(end - first),
        },
      };
    }
  }
}

/** What startOne needs besides the prompt. */
interface OneGeneration {
  readonly params: OllamaParams;
  /** The output constraint: `format`'s, or the tool-call grammar. */
  readonly constraint: Constraint | null;
  readonly tools: ToolRequest | null;
  /** The request field holding the prompt, named in errors. */
  readonly param: string;
  readonly t0: number;
}

/** Starts one generation of `promptIds` (the caller has checked the model and the fields). */
async function startOne(engine: Engine, promptIds: readonly number[], g: OneGeneration, signal: AbortSignal, observer: ChoiceObserver | undefined): Promise<OllamaStarted> {
  const { params, constraint, param } = g;
  if (constraint !== null) await engine.checkConstraint(constraint);
  const maxTokens = tokenBudget(engine, params, promptIds.length);
  const choices = startChoices(engine, [promptIds], { ...params, maxTokens }, { logprobs: null, promptParam: param, constraint }, signal, observer);
  return { req: { stream: params.stream, model: params.model }, choices, t0: g.t0, tools: g.tools };
}

async function startGenerate(engine: Engine, body: OllamaGenerateBody, signal: AbortSignal, observer?: ChoiceObserver): Promise<OllamaStarted> {
  const t0 = performance.now();
  checkOllamaModel(engine, body.model);
  refuseUnless(body.images, 'images', 'Gemma 2 reads no images');
  refuseUnless(body.template, 'template', "not supported: the checkpoint's chat template is used (raw: true for none)");
  refuseUnless(body.suffix, 'suffix', 'Gemma 2 has no fill-in-the-middle template');
  refuseUnless(body.context, 'context', 'not supported (deprecated in Ollama; send the conversation to /api/chat)');
  const params = parseOllamaParams(body);
  const prompt = body.prompt ?? '';
  if (prompt === '') return { req: { stream: false, model: body.model }, choices: null, t0, tools: null };
  let promptIds: number[];
  if (body.raw === true) {
    refuseUnless(body.system, 'system', 'not applied with raw: true (no template); write it into the prompt');
    // Raw text as Ollama's runner tokenizes it for Gemma: after <bos> (unless the text writes it).
    const ids = Array.from(await engine.encodeText(prompt, 'prompt'));
    promptIds = ids[0] === engine.tokenizer.bosId ? ids : [engine.tokenizer.bosId, ...ids];
  } else {
    const system = body.system ?? '';
    const messages = system === '' ? [{ role: 'user' as const, content: prompt }] : [{ role: 'system' as const, content: system }, { role: 'user' as const, content: prompt }];
    promptIds = Array.from(await engine.encodeChat(messages, { addGenerationPrompt: true }, 'prompt'));
  }
  return startOne(engine, promptIds, { params, constraint: params.constraint, tools: null, param: 'prompt', t0 }, signal, observer);
}

async function* generateChunks(_engine: Engine, started: OllamaStarted): AsyncGenerator<OllamaGenerateResponse> {
  const model = started.req.model;
  for await (const item of ollamaItems(started)) {
    if (item.type === 'text') yield { model, created_at: createdAt(), response: item.text, done: false };
    else yield { model, created_at: createdAt(), response: '', done: true, ...item.final };
  }
}

async function collectGenerate(engine: Engine, started: OllamaStarted): Promise<OllamaGenerateResponse> {
  let response = '';
  for await (const chunk of generateChunks(engine, started)) {
    response += chunk.response;
    if (chunk.done) return { ...chunk, response };
  }
  throw new GemmaServeError('the generation ended without a result', 'internal_error', 500, 'server_error');
}

/**
 * Ollama's messages as the chat path takes them. Ollama's tool calls carry no ids (newer
 * clients may send one): each call gets one, and a tool message answers the call named by
 * its tool_call_id, else the first unanswered call of its tool_name, else the first unanswered.
 */
function toolAwareMessages(messages: NonNullable<OllamaChatBody['messages']>): ToolAwareMessage[] {
  const unanswered: { id: string; name: string }[] = [];
  let numCalls = 0;
  return messages.map((m, i): ToolAwareMessage => {
    refuseUnless(m.images, `messages[${i}].images`, 'Gemma 2 reads no images');
    if (m.role === 'tool') {
      const k = m.tool_call_id != null ? unanswered.findIndex((c) => c.id === m.tool_call_id)
        : Math.max(0, unanswered.findIndex((c) => c.name === m.tool_name));
      const [call] = k >= 0 ? unanswered.splice(k, 1) : [];
      return { role: 'tool', content: m.content, toolCallId: m.tool_call_id ?? call?.id ?? `call_${numCalls++}` };
    }
    if (m.role === 'assistant' && m.tool_calls != null && m.tool_calls.length > 0) {
      const toolCalls = m.tool_calls.map((c): ToolCall => ({ id: c.id ?? `call_${numCalls++}`, name: c.function.name, arguments: JSON.stringify(c.function.arguments) }));
      unanswered.push(...toolCalls.map((c) => ({ id: c.id, name: c.name })));
      return { role: 'assistant', content: m.content, toolCalls };
    }
    if (m.tool_calls != null && m.tool_calls.length > 0) throw new InvalidRequestError(`messages[${i}].tool_calls: only on an assistant message`, `messages[${i}].tool_calls`);
    return { role: m.role, content: m.content };
  });
}

async function startChat(engine: Engine, body: OllamaChatBody, signal: AbortSignal, observer?: ChoiceObserver): Promise<OllamaStarted> {
  const t0 = performance.now();
  checkOllamaModel(engine, body.model);
  const params = parseOllamaParams(body);
  const { tools, constraint } = outputConstraints({ tools: body.tools ?? null }, { tools: true });
  if (tools !== null && params.constraint !== null) throw new InvalidRequestError('format: cannot be combined with tools', 'format');
  const messages = body.messages ?? [];
  if (messages.length === 0) return { req: { stream: false, model: body.model }, choices: null, t0, tools: null };
  const toolMessages = toolAwareMessages(messages);
  const rendered = renderToolMessages(toolMessages, tools?.tools ?? [], tools !== null);
  const promptIds = await encodeChatPrompt(engine, { messages: rendered, toolMessages, tools, render: { addGenerationPrompt: true } });
  return startOne(engine, promptIds, { params, constraint: constraint ?? params.constraint, tools, param: 'messages', t0 }, signal, observer);
}

/** A parsed call in Ollama's shape: arguments as an object. */
function ollamaCall(call: Pick<ToolCall, 'name' | 'arguments'>): OllamaToolCall {
  let args: unknown;
  try { args = JSON.parse(call.arguments); } catch { args = {}; }
  return { function: { name: call.name, arguments: typeof args === 'object' && args !== null && !Array.isArray(args) ? args as Record<string, unknown> : {} } };
}

async function* chatChunks(_engine: Engine, started: OllamaStarted): AsyncGenerator<OllamaChatResponse> {
  const model = started.req.model;
  const message = (content: string, calls?: OllamaToolCall[]): OllamaChatResponse => ({
    model, created_at: createdAt(), message: { role: 'assistant', content, ...(calls !== undefined ? { tool_calls: calls } : {}) }, done: false,
  });
  // With tools, text goes through the parser: content as it comes, each call whole once it has ended.
  const parser = started.tools === null ? null : new ToolCallParser();
  const calls: { name: string; arguments: string }[] = [];
  const parsed = function* (events: ReturnType<ToolCallParser['push']>): Generator<OllamaChatResponse> {
    for (const e of events) {
      if (e.type === 'text') { if (e.text !== '') yield message(e.text); }
      else if (e.type === 'call') calls[e.index] = { name: e.name, arguments: '' };
      else calls[e.index]!.arguments += e.text;
    }
  };
  for await (const item of ollamaItems(started)) {
    if (item.type === 'text') {
      if (parser === null) yield message(item.text);
      else yield* parsed(parser.push(item.text));
      continue;
    }
    if (parser !== null) {
      yield* parsed(parser.end());
      if (calls.length > 0) yield message('', calls.map(ollamaCall));
    }
    yield { ...message(''), done: true, ...item.final };
  }
}

async function collectChat(engine: Engine, started: OllamaStarted): Promise<OllamaChatResponse> {
  let content = '';
  let calls: OllamaToolCall[] | undefined;
  for await (const chunk of chatChunks(engine, started)) {
    if (chunk.done) return { ...chunk, message: { role: 'assistant', content, ...(calls !== undefined ? { tool_calls: calls } : {}) } };
    if (chunk.message.tool_calls !== undefined) calls = chunk.message.tool_calls;
    else content += chunk.message.content;
  }
  throw new GemmaServeError('the generation ended without a result', 'internal_error', 500, 'server_error');
}

export function ollamaGenerationRoutes(app: FastifyInstance, state: EngineState): void {
  const common = { tag: 'Ollama', framing: 'ndjson', error: OllamaError } as const;
  postGeneration(app, '/api/generate', state, {
    ...common, body: OllamaGenerateRequest, response: OllamaGenerateResponse, chunk: OllamaGenerateResponse, summary: "Ollama's text generation (NDJSON stream unless stream is false)",
  }, { start: startGenerate, collect: collectGenerate, chunks: generateChunks });
  postGeneration(app, '/api/chat', state, {
    ...common, body: OllamaChatRequest, response: OllamaChatResponse, chunk: OllamaChatResponse, summary: "Ollama's chat (NDJSON stream unless stream is false)",
  }, { start: startChat, collect: collectChat, chunks: chatChunks });
}
