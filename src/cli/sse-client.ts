/**
 * A minimal OpenAI-compatible chat client over fetch (no SDK): `GET /v1/models` and a streamed
 * `POST /v1/chat/completions` whose server-sent events are parsed here. Server errors (OpenAI
 * error JSON, or an `error` object inside the stream) become GemmaServeErrors carrying the
 * server's message; a server that cannot be reached is a ConfigError naming the URL.
 */
import { ConfigError, GemmaServeError, type ErrorType } from '../errors.ts';

/** The fetch the client uses (the global one by default; tests inject their own). */
export type Fetch = typeof fetch;

export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string;
}

/** Sampling fields of a chat request, named as on the wire; undefined ones are left out. */
export interface Sampling {
  readonly temperature?: number | undefined;
  readonly max_tokens?: number | undefined;
  readonly seed?: number | undefined;
  readonly top_p?: number | undefined;
}

/** Request fields besides `messages` and `stream`. */
export interface ChatParams extends Sampling {
  readonly model: string;
}

export interface ChatReply {
  readonly content: string;
  /** `stop`, `length`, ...; null when the stream ended without one. */
  readonly finishReason: string | null;
}

export class ChatClient {
  /** `baseUrl`: the server's root (a trailing `/` or `/v1` is dropped). */
  readonly baseUrl: string;

  constructor(baseUrl: string, private readonly apiKey: string | undefined, private readonly fetchFn: Fetch = fetch) {
    this.baseUrl = baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '');
  }

  /** The ids of the served models, in the server's order. */
  async listModels(signal?: AbortSignal): Promise<string[]> {
    const res = await this.request('GET', '/v1/models', undefined, signal);
    if (!res.ok) throw await responseError(res);
    const body = (await res.json()) as { data?: { id?: unknown }[] };
    return (body.data ?? []).map((m) => m.id).filter((id): id is string => typeof id === 'string');
  }

  /**
   * Streams one assistant reply, calling `onDelta` with each piece of content as it arrives.
   * Aborting `signal` stops reading and closes the connection (the server then cancels the
   * generation); the returned promise rejects with the abort error.
   */
  async streamChat(params: ChatParams, messages: readonly ChatMessage[], onDelta: (text: string) => void, signal?: AbortSignal): Promise<ChatReply> {
    const res = await this.request('POST', '/v1/chat/completions', { ...params, messages, stream: true }, signal);
    if (!res.ok) throw await responseError(res);
    if (!(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
      // A server that answered with one JSON completion despite `stream: true`.
      const body = (await res.json()) as ChoiceBody;
      const choice = body.choices?.[0];
      const content = choice?.message?.content ?? '';
      if (content !== '') onDelta(content);
      return { content, finishReason: choice?.finish_reason ?? null };
    }
    let content = '';
    let finishReason: string | null = null;
    for await (const data of sseData(res, signal)) {
      if (data === '[DONE]') break;
      const event = JSON.parse(data) as ChoiceBody & { error?: ErrorBody };
      if (event.error !== undefined) throw serverError(event.error, 500);
      const choice = event.choices?.[0];
      const piece = choice?.delta?.content;
      if (typeof piece === 'string' && piece !== '') {
        content += piece;
        onDelta(piece);
      }
      if (typeof choice?.finish_reason === 'string') finishReason = choice.finish_reason;
    }
    return { content, finishReason };
  }

  private async request(method: string, path: string, body: unknown, signal: AbortSignal | undefined): Promise<Response> {
    const headers: Record<string, string> = { accept: body === undefined ? 'application/json' : 'text/event-stream, application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.apiKey !== undefined) headers['authorization'] = `Bearer ${this.apiKey}`;
    try {
      return await this.fetchFn(`${this.baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
    } catch (e) {
      if (signal?.aborted) throw e;
      const cause = (e as { cause?: { code?: unknown; message?: unknown } }).cause;
      const reason = typeof cause?.code === 'string' ? cause.code : typeof cause?.message === 'string' ? cause.message : (e as Error).message;
      throw new ConfigError(`cannot connect to ${this.baseUrl} (${reason})`, 'url');
    }
  }
}

interface ErrorBody {
  readonly message?: unknown;
  readonly type?: unknown;
  readonly code?: unknown;
  readonly param?: unknown;
}

interface ChoiceBody {
  readonly choices?: readonly {
    readonly delta?: { readonly content?: unknown };
    readonly message?: { readonly content?: string | null };
    readonly finish_reason?: string | null;
  }[];
}

function serverError(err: ErrorBody, status: number): GemmaServeError {
  const message = typeof err.message === 'string' && err.message !== '' ? err.message : `the server answered ${status}`;
  return new GemmaServeError(message, typeof err.code === 'string' ? err.code : 'server_error', status,
    (typeof err.type === 'string' ? err.type : 'server_error') as ErrorType, typeof err.param === 'string' ? err.param : null);
}

/** A non-2xx response: its OpenAI error JSON when it has one, else its status and text. */
async function responseError(res: Response): Promise<GemmaServeError> {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: ErrorBody | string };
    if (typeof body.error === 'string') return serverError({ message: body.error }, res.status);
    if (body.error !== undefined) return serverError(body.error, res.status);
  } catch {
    // not JSON: fall through
  }
  const detail = text.trim().slice(0, 200);
  return serverError({ message: `HTTP ${res.status} ${res.statusText}${detail === '' ? '' : `: ${detail}`}` }, res.status);
}

/** The `data` of each server-sent event in a response body (multi-line data joined by `\n`). */
export async function* sseData(res: Response, signal?: AbortSignal): AsyncGenerator<string> {
  if (res.body === null) return;
  const reader = res.body.getReader();
  async function* chunks(): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
  yield* sseEvents(chunks(), signal);
}

/**
 * The `data` of each server-sent event in a byte stream (a fetch body, an undici body):
 * multi-line data joined by `\n`, comments and other fields skipped. `signal` is checked after
 * each event. Returning early (break) closes `chunks`.
 */
export async function* sseEvents(chunks: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  const onLine = (raw: string): string | null => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '') {
      const event = data.length > 0 ? data.join('\n') : null;
      data = [];
      return event;
    }
    const colon = line.indexOf(':');
    if (colon === 0) return null; // a comment
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') data.push(value);
    return null;
  };
  const lines = function* (): Generator<string> {
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const event = onLine(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
      if (event !== null) yield event;
    }
  };
  for await (const chunk of chunks) {
    buffer += decoder.decode(chunk, { stream: true });
    for (const event of lines()) {
      yield event;
      signal?.throwIfAborted();
    }
  }
  buffer += decoder.decode();
  for (const event of lines()) yield event;
  const last = onLine(buffer) ?? onLine('');
  if (last !== null) yield last;
}
