/**
 * POST /v1/chat/completions: render the checkpoint's chat template, tokenize, generate n
 * choices; a JSON response or an SSE stream of chunks ending in `data: [DONE]`. The chunk
 * stream (`chatChunks`) is shared with the WebSocket endpoint. A client that disconnects
 * aborts its generations in the worker.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Engine } from '../../engine/engine.ts';
import { parseChatRequest, type ChatRequest } from '../chat-request.ts';
import { chatLogprobEntry, startChoices, UsageCounter, type ChoiceEvent, type ChoiceObserver } from '../choices.ts';
import type { EngineState } from '../engine-state.ts';
import { checkModel } from '../request-fields.ts';
import { postGeneration } from '../generation-route.ts';
import { parseToolCalls, ToolCallParser, type ToolAwareMessage, type ToolParseEvent } from '../tool-calls.ts';
import type { ToolTemplateMessage } from '../../engine/chat-template.ts';
import { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, type ChatCompletionBody, type ChatLogprobEntry } from '../schemas/chat.ts';

/** A validated chat request whose generations have started. */
export interface StartedChat {
  readonly req: ChatRequest;
  readonly choices: AsyncIterable<ChoiceEvent>;
  /** The prompt's length in tokens (the chat template and tool instructions included). */
  readonly promptTokens: number;
  /** Fields every response object repeats. */
  readonly base: { readonly id: string; readonly created: number; readonly model: string; readonly system_fingerprint: string };
}

export function systemFingerprint(engine: Engine): string {
  return `fp_gemma_serve_${engine.modelId}`.slice(0, 40);
}

/**
 * Checks what the schema cannot, renders, tokenizes and starts; every 4xx is thrown here,
 * before any byte is sent. `body` has passed ChatCompletionRequest.
 */
export async function startChat(engine: Engine, body: ChatCompletionBody, signal: AbortSignal, observer?: ChoiceObserver): Promise<StartedChat> {
  const req = parseChatRequest(body);
  checkModel(engine.modelNames, req.model);
  const promptIds = await encodeChatPrompt(engine, req);
  // A schema or grammar that does not compile is a 400 now, before the stream starts.
  if (req.constraint !== null) await engine.checkConstraint(req.constraint);
  const choices = startChoices(engine, [promptIds], req, { logprobs: req.logprobs, constraint: req.constraint }, signal, observer);
  const base = { id: `chatcmpl-${randomUUID().replace(/-/g, '')}`, created: Math.floor(Date.now() / 1000), model: req.model, system_fingerprint: systemFingerprint(engine) };
  return { req, choices, base, promptTokens: promptIds.length };
}

/**
 * A chat's prompt ids (templated and tokenized in a text worker). A checkpoint whose template
 * takes `tools` renders them and the tool turns itself (the calls are still forced and parsed
 * in the <tool_call> format, docs/API.md); others get ours, already written into `messages`.
 * Shared with Ollama's /api/chat.
 */
export async function encodeChatPrompt(engine: Engine, req: Pick<ChatRequest, 'messages' | 'toolMessages' | 'tools' | 'render'>): Promise<number[]> {
  // A checkpoint whose template takes `tools` renders them and the tool turns itself (the calls
  // are still forced and parsed in the <tool_call> format, docs/API.md); others get ours.
  const own = req.tools !== null && engine.handlesTools;
  return Array.from(own
    ? await engine.encodeChat(templateMessages(req.toolMessages), { ...req.render, tools: req.tools!.tools.map((f) => ({ type: 'function', function: f })) })
    : await engine.encodeChat(req.messages, req.render));
}

/** The messages in Hugging Face's shape for a template that handles tools (arguments as objects). */
function templateMessages(messages: readonly ToolAwareMessage[]): ToolTemplateMessage[] {
  return messages.map((m): ToolTemplateMessage => {
    if (m.role === 'tool') return { role: 'tool', content: m.content, tool_call_id: m.toolCallId };
    if ('toolCalls' in m) {
      return { role: 'assistant', content: m.content, tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: 'function' as const, function: { name: c.name, arguments: parseArguments(c.arguments) } })) };
    }
    return m;
  });
}

function parseArguments(text: string): unknown {
  try { return JSON.parse(text) as unknown; } catch { return text; }
}

const newCallId = (): string => `call_${randomUUID().replace(/-/g, '').slice(0, 24)}`;

/** The chunk objects of a streamed chat completion, in OpenAI's order. */
export async function* chatChunks(engine: Engine, chat: StartedChat): AsyncGenerator<ChatCompletionChunk> {
  const { req, base } = chat;
  type Choice = ChatCompletionChunk['choices'][number];
  type Delta = Choice['delta'];
  const chunk = (index: number, delta: Delta, finishReason: Choice['finish_reason'], logprobs: ChatLogprobEntry[] | null = null, stopReason?: string | null): ChatCompletionChunk => ({
    ...base, object: 'chat.completion.chunk',
    choices: [{ index, delta, logprobs: logprobs === null ? null : { content: logprobs, refusal: null }, finish_reason: finishReason, ...(stopReason !== undefined ? { stop_reason: stopReason } : {}) }],
    ...(req.includeUsage ? { usage: null } : {}),
  });
  // With tools offered, each choice's text goes through a ToolCallParser: calls become
  // delta.tool_calls (id, type and name first, then the arguments as they are generated).
  const parsers = req.tools === null ? null : Array.from({ length: req.n }, () => new ToolCallParser());
  const ids: string[][] = Array.from({ length: req.n }, () => []);
  const deltas = (index: number, events: readonly ToolParseEvent[]): Delta[] => events.map((e): Delta => {
    if (e.type === 'text') return { content: e.text };
    if (e.type === 'call') {
      const id = newCallId();
      ids[index]![e.index] = id;
      return { tool_calls: [{ index: e.index, id, type: 'function', function: { name: e.name, arguments: '' } }] };
    }
    return { tool_calls: [{ index: e.index, function: { arguments: e.text } }] };
  });
  const textDeltas = (index: number, text: string): Delta[] => parsers === null ? (text === '' ? [] : [{ content: text }]) : deltas(index, parsers[index]!.push(text));
  for (let i = 0; i < req.n; i++) yield chunk(i, { role: 'assistant', content: '' }, null);
  const usage = new UsageCounter();
  for await (const { index, prompt, event: ev } of chat.choices) {
    if (ev.type === 'token') {
      const ds = textDeltas(index, ev.text);
      if (ev.logprobs) {
        const lp = [chatLogprobEntry(engine, ev.tokenId, ev.logprobs)];
        if (ds.length === 0) yield chunk(index, parsers === null ? { content: '' } : {}, null, lp);
        else for (const [k, d] of ds.entries()) yield chunk(index, d, null, k === 0 ? lp : null);
      } else {
        for (const d of ds) yield chunk(index, d, null);
      }
    } else if (ev.type === 'finish') {
      for (const d of textDeltas(index, ev.text)) yield chunk(index, d, null);
      if (parsers !== null) for (const d of deltas(index, parsers[index]!.end())) yield chunk(index, d, null);
      const called = parsers !== null && parsers[index]!.numCalls > 0;
      yield chunk(index, {}, called && ev.reason === 'stop' ? 'tool_calls' : ev.reason, null, ev.stop);
      usage.add(prompt, ev.usage);
    }
  }
  if (req.includeUsage) yield { ...base, object: 'chat.completion.chunk', choices: [], usage: usage.usage };
}

/** The whole (non-streamed) chat completion object. */
export async function collectChat(engine: Engine, chat: StartedChat): Promise<ChatCompletion> {
  const { req, base } = chat;
  const content: string[] = Array.from({ length: req.n }, () => '');
  const lps: ChatLogprobEntry[][] = Array.from({ length: req.n }, () => []);
  const finish: ChatCompletion['choices'][number]['finish_reason'][] = Array.from({ length: req.n }, () => 'stop');
  const stops: (string | null)[] = Array.from({ length: req.n }, () => null);
  const usage = new UsageCounter();
  for await (const { index, prompt, event: ev } of chat.choices) {
    if (ev.type === 'token') {
      content[index] += ev.text;
      if (ev.logprobs) lps[index]!.push(chatLogprobEntry(engine, ev.tokenId, ev.logprobs));
    } else if (ev.type === 'finish') {
      content[index] += ev.text;
      finish[index] = ev.reason;
      stops[index] = ev.stop;
      usage.add(prompt, ev.usage);
    }
  }
  return {
    ...base, object: 'chat.completion',
    choices: content.map((text, index) => {
      let message: ChatCompletion['choices'][number]['message'] = { role: 'assistant', content: text, refusal: null };
      let reason = finish[index]!;
      if (req.tools !== null) {
        const { content: rest, calls } = parseToolCalls(text, newCallId);
        if (calls.length > 0) {
          message = { role: 'assistant', content: rest === '' ? null : rest, refusal: null, tool_calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })) };
          if (reason === 'stop') reason = 'tool_calls';
        }
      }
      return { index, message, logprobs: req.logprobs === null ? null : { content: lps[index]!, refusal: null }, finish_reason: reason, stop_reason: stops[index]! };
    }),
    usage: usage.usage,
  };
}

export function chatCompletionsRoute(app: FastifyInstance, state: EngineState): void {
  postGeneration(app, '/v1/chat/completions', state, {
    body: ChatCompletionRequest, response: ChatCompletion, chunk: ChatCompletionChunk, summary: 'Chat completion (JSON or server-sent events)', tag: 'OpenAI',
  }, { start: startChat, collect: collectChat, chunks: chatChunks });
}
