/**
 * The load generator's HTTP side, on undici: GET /v1/models, POST /tokenize (vLLM's and
 * gemma-serve's `{prompt}` form, then llama-server's `{content}`), and one streamed completion
 * timed chunk by chunk. Works against any OpenAI-compatible server; nothing here is specific
 * to gemma-serve.
 */
import { Agent, request, type Dispatcher } from 'undici';
import { sseEvents } from '../sse-client.ts';
import { ConfigError } from '../../errors.ts';
import { ESTIMATE, fitCalibration, randomWords, type Calibration } from './prompts.ts';

export type Endpoint = 'chat' | 'completions';

export class Target {
  /** The server's root (a trailing `/` or `/v1` dropped). */
  readonly baseUrl: string;
  readonly dispatcher: Agent;

  constructor(url: string, private readonly apiKey: string | undefined) {
    this.baseUrl = url.replace(/\/+$/, '').replace(/\/v1$/, '');
    // No connection limit per origin: every concurrent stream gets its own keep-alive socket.
    this.dispatcher = new Agent({ keepAliveTimeout: 30_000, headersTimeout: 0, bodyTimeout: 0 });
  }

  /** Request headers; a body is always JSON. */
  headers(stream: boolean, hasBody: boolean): Record<string, string> {
    const h: Record<string, string> = { accept: stream ? 'text/event-stream' : 'application/json' };
    if (hasBody) h['content-type'] = 'application/json';
    if (this.apiKey !== undefined) h['authorization'] = `Bearer ${this.apiKey}`;
    return h;
  }

  /** A JSON request; `null` body for GET. Connection failures are ConfigErrors naming the URL. */
  async json(method: 'GET' | 'POST', path: string, body: unknown): Promise<{ status: number; body: unknown }> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.baseUrl}${path}`, {
        method, headers: this.headers(false, body !== null), body: body === null ? undefined : JSON.stringify(body),
        dispatcher: this.dispatcher, signal: AbortSignal.timeout(30_000),
      });
    } catch (e) {
      throw new ConfigError(`cannot connect to ${this.baseUrl} (${errorText(e)})`, 'url');
    }
    const text = await res.body.text();
    let parsed: unknown = text;
    try { parsed = JSON.parse(text); } catch { /* not JSON: keep the text */ }
    return { status: res.statusCode, body: parsed };
  }

  /** The ids of GET /v1/models, in the server's order. */
  async listModels(): Promise<string[]> {
    const res = await this.json('GET', '/v1/models', null);
    if (res.status !== 200) throw new ConfigError(`GET ${this.baseUrl}/v1/models answered ${res.status}: ${serverMessage(res.body)}`, 'url');
    const data = (res.body as { data?: { id?: unknown }[] } | null)?.data ?? [];
    return data.map((m) => m.id).filter((id): id is string => typeof id === 'string');
  }

  /** Tokens in `text` per the server's POST /tokenize, or null when it has none that answers. */
  async countTokens(model: string, text: string): Promise<number | null> {
    for (const body of [{ model, prompt: text }, { content: text }]) {
      const res = await this.json('POST', '/tokenize', body);
      if (res.status !== 200) continue;
      const b = res.body as { count?: unknown; tokens?: unknown } | null;
      const count = typeof b?.count === 'number' ? b.count : Array.isArray(b?.tokens) ? b.tokens.length : 0;
      if (count > 0) return count;
    }
    return null;
  }

  /** Tokens per word of random prompts, from two lengths (the server's tokenizer), else ESTIMATE. */
  async calibrate(model: string, rand: () => number): Promise<Calibration> {
    const a = await this.countTokens(model, randomWords(32, rand));
    if (a === null) return ESTIMATE;
    const b = await this.countTokens(model, randomWords(160, rand));
    return b === null ? ESTIMATE : fitCalibration(32, a, 160, b);
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

/** A turn of a chat history. */
export interface ChatTurn {
  readonly role: 'user' | 'assistant';
  readonly content: string;
}

export interface StreamRequest {
  readonly endpoint: Endpoint;
  readonly model: string;
  readonly prompt: string;
  /** Chat only: turns sent before the prompt's user message. */
  readonly history?: readonly ChatTurn[];
  readonly maxTokens: number;
  readonly ignoreEos: boolean;
  readonly temperature?: number | undefined;
}

/** One request's timings (milliseconds, performance.now() clock). */
export interface RequestResult {
  /** Error text when it failed (HTTP status, an error event, a connection error); else null. */
  readonly error: string | null;
  readonly startMs: number;
  /** Sent → first non-empty content chunk; NaN when none came. */
  readonly ttftMs: number;
  /** Sent → end of the response. */
  readonly e2eMs: number;
  /** Times between consecutive non-empty content chunks. */
  readonly gapsMs: readonly number[];
  /** usage.completion_tokens when the server sent usage, else the count of content chunks. */
  readonly outputTokens: number;
  /** usage.prompt_tokens when sent, else null. */
  readonly promptTokens: number | null;
  /** usage.prompt_tokens_details.cached_tokens when sent (a server's prefix cache), else null. */
  readonly cachedTokens: number | null;
  readonly usage: boolean;
  /** The streamed content (a multi-turn conversation resends it). */
  readonly text: string;
}

/** The request body: streamed, with usage asked for; ignore_eos only when wanted. */
export function requestBody(req: StreamRequest): Record<string, unknown> {
  return {
    model: req.model,
    ...(req.endpoint === 'chat' ? { messages: [...(req.history ?? []), { role: 'user', content: req.prompt }] } : { prompt: req.prompt }),
    max_tokens: req.maxTokens,
    ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
    ...(req.ignoreEos ? { ignore_eos: true } : {}),
    stream: true,
    stream_options: { include_usage: true },
  };
}

interface StreamEvent {
  readonly error?: unknown;
  readonly usage?: { readonly completion_tokens?: unknown; readonly prompt_tokens?: unknown; readonly prompt_tokens_details?: { readonly cached_tokens?: unknown } | null } | null;
  readonly choices?: readonly { readonly delta?: { readonly content?: unknown }; readonly text?: unknown }[];
}

/** Sends one streamed request and times its content chunks. Never throws: failures are in `error`. */
export async function streamRequest(target: Target, req: StreamRequest, signal: AbortSignal): Promise<RequestResult> {
  const startMs = performance.now();
  let firstMs = NaN;
  let lastMs = NaN;
  const gapsMs: number[] = [];
  let chunks = 0;
  let usage: { completion: number; prompt: number | null; cached: number | null } | null = null;
  let text = '';
  const result = (error: string | null): RequestResult => ({
    error, startMs, ttftMs: firstMs - startMs, e2eMs: performance.now() - startMs, gapsMs,
    outputTokens: usage?.completion ?? chunks, promptTokens: usage?.prompt ?? null, cachedTokens: usage?.cached ?? null, usage: usage !== null, text,
  });
  try {
    const path = req.endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions';
    const res = await request(`${target.baseUrl}${path}`, {
      method: 'POST', headers: target.headers(true, true), body: JSON.stringify(requestBody(req)), dispatcher: target.dispatcher, signal,
    });
    if (res.statusCode >= 400) return result(`HTTP ${res.statusCode}: ${serverMessage(await res.body.text())}`);
    const type = String(res.headers['content-type'] ?? '');
    if (!type.includes('text/event-stream')) {
      await res.body.dump();
      return result(`the server did not stream (content-type ${JSON.stringify(type)})`);
    }
    for await (const data of sseEvents(res.body, signal)) {
      if (data === '[DONE]') continue; // read on to the end of the body so the socket is reused
      const event = JSON.parse(data) as StreamEvent;
      if (event.error !== undefined && event.error !== null) return result(`error event: ${serverMessage(event)}`);
      const choice = event.choices?.[0];
      const piece = req.endpoint === 'chat' ? choice?.delta?.content : choice?.text;
      if (typeof piece === 'string' && piece !== '') {
        const now = performance.now();
        if (chunks === 0) firstMs = now;
        else gapsMs.push(now - lastMs);
        lastMs = now;
        chunks++;
        text += piece;
      }
      const u = event.usage;
      if (u !== undefined && u !== null && typeof u.completion_tokens === 'number') {
        const cached = u.prompt_tokens_details?.cached_tokens;
        usage = { completion: u.completion_tokens, prompt: typeof u.prompt_tokens === 'number' ? u.prompt_tokens : null, cached: typeof cached === 'number' ? cached : null };
      }
    }
    return result(null);
  } catch (e) {
    return result(errorText(e));
  }
}

/** The message of an OpenAI error body (object or JSON text), else the text itself (shortened). */
export function serverMessage(body: unknown): string {
  let b = body;
  if (typeof body === 'string') {
    try { b = JSON.parse(body); } catch { return body.trim().slice(0, 200) || '(empty body)'; }
  }
  const err = (b as { error?: unknown } | null)?.error;
  if (typeof err === 'string') return err;
  const message = (err as { message?: unknown } | null | undefined)?.message;
  return typeof message === 'string' ? message : JSON.stringify(b).slice(0, 200);
}

/** An exception as one line: the system error (ECONNREFUSED ...) rather than "fetch failed". */
export function errorText(e: unknown): string {
  const err = e as { name?: unknown; message?: unknown; code?: unknown; cause?: unknown };
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') return `${String(err.name)}: ${String(err.message)}`;
  const cause = err?.cause as { message?: unknown } | undefined;
  const message = typeof err?.message === 'string' && err.message !== '' ? err.message : typeof cause?.message === 'string' ? cause.message : String(e);
  return typeof err?.code === 'string' && !message.includes(err.code) ? `${err.code}: ${message}` : message;
}
