/**
 * Ollama's streaming: newline-delimited JSON (`application/x-ndjson`), one object per line,
 * flushed as produced with the same backpressure as SSE (sse.ts sendStream). A failure after
 * the headers went out is a last line `{"error": "..."}`, as Ollama writes it.
 */
import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import { sendStream } from '../sse.ts';
import { ollamaErrorOf } from './errors.ts';

export const NDJSON_HEADERS = {
  'content-type': 'application/x-ndjson',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
} as const;

export async function sendNdjson(reply: FastifyReply, chunks: AsyncIterable<object>, log: FastifyBaseLogger): Promise<void> {
  await sendStream(reply, NDJSON_HEADERS, chunks, log, {
    chunk: (c) => `${JSON.stringify(c)}\n`,
    error: (e) => `${JSON.stringify(ollamaErrorOf(e))}\n`,
    end: '',
  });
}
