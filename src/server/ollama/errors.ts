/**
 * Ollama's error shape, `{"error": "message"}`, for every response under /api/ (Ollama's
 * clients read `error` as a string: OpenAI's object shows up in them as "[object Object]").
 * Routes, hooks and handlers keep answering in OpenAI's shape (error-body.ts) with the status
 * they choose; one preSerialization hook rewrites the body on the way out, so schema 400s,
 * auth 401s, 404s (unknown model or URL), 413s and 5xx all take Ollama's shape here without
 * any of them knowing about it. Streams write the same shape as their last line (ndjson.ts).
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from 'typebox';
import { publicErrorBody } from '../error-body.ts';

export const OLLAMA_PREFIX = '/api/';

export const OllamaError = Type.Object({ error: Type.String() }, { description: "Ollama's error body." });
export type OllamaError = Static<typeof OllamaError>;

/** True for a request URL under /api/ (the query string ignored). */
export function isOllamaUrl(url: string): boolean {
  return url.startsWith(OLLAMA_PREFIX) || url === '/api' || url.startsWith('/api?');
}

/** An OpenAI error body's message in Ollama's shape; anything else unchanged (null). */
export function toOllamaError(payload: unknown): OllamaError | null {
  if (typeof payload !== 'object' || payload === null) return null;
  const inner = (payload as { error?: unknown }).error;
  if (typeof inner !== 'object' || inner === null) return null;
  const message = (inner as { message?: unknown }).message;
  return typeof message === 'string' ? { error: message } : null;
}

/** Any failure as Ollama's error body (a 500's details stay in the log, as publicErrorBody does). */
export function ollamaErrorOf(e: unknown): OllamaError {
  return { error: publicErrorBody(e).error.message };
}

/** Rewrites every OpenAI error body answered under /api/ into Ollama's shape; register at the root, before the routes. */
export function registerOllamaErrors(app: FastifyInstance): void {
  app.addHook('preSerialization', async (request, reply, payload: unknown) => {
    if (reply.statusCode < 400 || !isOllamaUrl(request.url)) return payload;
    return toOllamaError(payload) ?? payload;
  });
}
