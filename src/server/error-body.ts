/**
 * OpenAI's error JSON, `{"error": {message, type, param, code}}`: the one shape every refusal
 * and failure takes, over HTTP, in an SSE stream and on the WebSocket. A module of its own so
 * that hooks and routes can answer errors without importing the app that composes them.
 */
import { GemmaServeError } from '../errors.ts';

export interface OpenAiError {
  readonly error: { readonly message: string; readonly type: string; readonly param: string | null; readonly code: string | null };
}

export function errorBody(message: string, type: string, param: string | null, code: string | null): OpenAiError {
  return { error: { message, type, param, code } };
}

/** A GemmaServeError as it is; anything else as a 500 whose details stay in the log. */
export function publicErrorBody(e: unknown): OpenAiError {
  if (e instanceof GemmaServeError) return errorBody(e.message, e.type, e.param, e.code);
  return errorBody('The server had an error while processing your request.', 'server_error', null, 'internal_error');
}
