/**
 * Server-sent events the way OpenAI sends them: `data: <json>\n\n` per chunk, flushed as it is
 * produced (no compression, `x-accel-buffering: no` for nginx, Nagle off), `data: [DONE]` at
 * the end. A failure after the headers went out becomes a `data: {"error": ...}` event
 * before `[DONE]`, as vLLM does. Writes wait for the socket to drain, so a slow reader
 * slows its own generation instead of growing a buffer.
 */
import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import { GemmaServeError } from '../errors.ts';
import { publicErrorBody } from './error-body.ts';

export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  'x-accel-buffering': 'no',
} as const;

export async function sendSse(reply: FastifyReply, chunks: AsyncIterable<object>, log: FastifyBaseLogger): Promise<void> {
  await sendStream(reply, SSE_HEADERS, chunks, log, {
    chunk: (c) => `data: ${JSON.stringify(c)}\n\n`,
    error: (e) => `data: ${JSON.stringify(publicErrorBody(e))}\n\n`,
    end: 'data: [DONE]\n\n',
  });
}

/**
 * Server-sent events of typed events, as the Responses API and Anthropic's Messages API send
 * them: `event: <type>` and `data: <event>` per event, no `[DONE]`; a failure after the headers
 * is an `error` event, `errorEvent`'s data (`sequence`: the number after the last event's
 * sequence_number, where events have one).
 */
export async function sendSseEvents(reply: FastifyReply, events: AsyncIterable<object>, log: FastifyBaseLogger, errorEvent: (e: unknown, sequence: number) => object): Promise<void> {
  let next = 0;
  await sendStream(reply, SSE_HEADERS, events, log, {
    chunk: (c) => {
      const e = c as { type: string; sequence_number?: number };
      if (e.sequence_number !== undefined) next = e.sequence_number + 1;
      return `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;
    },
    error: (e) => `event: error\ndata: ${JSON.stringify(errorEvent(e, next))}\n\n`,
    end: '',
  });
}

/** The Responses API's error event: `{type: "error", code, message, param, sequence_number}`. */
export function responsesErrorEvent(e: unknown, sequence: number): object {
  const { message, param, code } = publicErrorBody(e).error;
  return { type: 'error', code, message, param, sequence_number: sequence };
}

/** How a streamed body frames its chunks, a failure after the headers, and its end. */
export interface StreamFraming {
  chunk(c: object): string;
  error(e: unknown): string;
  readonly end: string;
}

/**
 * Writes `chunks` as they come under `headers` (status 200), flushed, each write waiting for
 * the socket to drain; a failure mid-stream is written as `framing.error` and logged unless
 * it is a client error or the drain's cut. SSE (above) and Ollama's NDJSON share it.
 */
export async function sendStream(reply: FastifyReply, headers: Readonly<Record<string, string>>, chunks: AsyncIterable<object>, log: FastifyBaseLogger, framing: StreamFraming): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  const own: Record<string, string | number | string[]> = {};
  for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) own[k] = v;
  res.writeHead(200, { ...own, ...headers });
  res.socket?.setNoDelay(true);
  const write = async (text: string): Promise<void> => {
    if (res.destroyed) return;
    if (!res.write(text)) {
      await new Promise<void>((resolve) => {
        const done = (): void => { res.off('drain', done); res.off('close', done); resolve(); };
        res.on('drain', done);
        res.on('close', done);
      });
    }
  };
  try {
    for await (const chunk of chunks) {
      if (res.destroyed) break;
      await write(framing.chunk(chunk));
    }
  } catch (e) {
    if (!(e instanceof GemmaServeError) || (e.status >= 500 && e.code !== 'server_shutdown')) log.error({ err: e }, 'generation failed mid-stream');
    await write(framing.error(e));
  }
  if (!res.destroyed) res.end(framing.end);
}
