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
import { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, type ChatCompletionBody, type ChatLogprobEntry } from '../schemas/chat.ts';

/** A validated chat request whose generations have started. */
export interface StartedChat {
  readonly req: ChatRequest;
  readonly choices: AsyncIterable<ChoiceEvent>;
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
  checkModel(engine.modelId, req.model);
  const promptIds = Array.from(await engine.encodeChat(req.messages, true));
  const choices = startChoices(engine, [promptIds], req, { logprobs: req.logprobs }, signal, observer);
  const base = { id: `chatcmpl-${randomUUID().replace(/-/g, '')}`, created: Math.floor(Date.now() / 1000), model: req.model, system_fingerprint: systemFingerprint(engine) };
  return { req, choices, base };
}

/** The chunk objects of a streamed chat completion, in OpenAI's order. */
export async function* chatChunks(engine: Engine, chat: StartedChat): AsyncGenerator<ChatCompletionChunk> {
  const { req, base } = chat;
  type Choice = ChatCompletionChunk['choices'][number];
  const chunk = (index: number, delta: Choice['delta'], finishReason: Choice['finish_reason'], logprobs: ChatLogprobEntry[] | null = null): ChatCompletionChunk => ({
    ...base, object: 'chat.completion.chunk',
    choices: [{ index, delta, logprobs: logprobs === null ? null : { content: logprobs, refusal: null }, finish_reason: finishReason }],
    ...(req.includeUsage ? { usage: null } : {}),
  });
  for (let i = 0; i < req.n; i++) yield chunk(i, { role: 'assistant', content: '' }, null);
  const usage = new UsageCounter();
  for await (const { index, prompt, event: ev } of chat.choices) {
    if (ev.type === 'token') {
      if (ev.logprobs) yield chunk(index, { content: ev.text }, null, [chatLogprobEntry(engine, ev.tokenId, ev.logprobs)]);
      else if (ev.text !== '') yield chunk(index, { content: ev.text }, null);
    } else if (ev.type === 'finish') {
      if (ev.text !== '') yield chunk(index, { content: ev.text }, null);
      yield chunk(index, {}, ev.reason);
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
  const usage = new UsageCounter();
  for await (const { index, prompt, event: ev } of chat.choices) {
    if (ev.type === 'token') {
      content[index] += ev.text;
      if (ev.logprobs) lps[index]!.push(chatLogprobEntry(engine, ev.tokenId, ev.logprobs));
    } else if (ev.type === 'finish') {
      content[index] += ev.text;
      finish[index] = ev.reason;
      usage.add(prompt, ev.usage);
    }
  }
  return {
    ...base, object: 'chat.completion',
    choices: content.map((text, index) => ({
      index, message: { role: 'assistant', content: text, refusal: null },
      logprobs: req.logprobs === null ? null : { content: lps[index]!, refusal: null }, finish_reason: finish[index]!,
    })),
    usage: usage.usage,
  };
}

export function chatCompletionsRoute(app: FastifyInstance, state: EngineState): void {
  postGeneration(app, '/v1/chat/completions', state, {
    body: ChatCompletionRequest, response: ChatCompletion, chunk: ChatCompletionChunk, summary: 'Chat completion (JSON or server-sent events)', tag: 'OpenAI',
  }, { start: startChat, collect: collectChat, chunks: chatChunks });
}
