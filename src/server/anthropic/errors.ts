/**
 * Anthropic's error shape, `{"type": "error", "error": {"type", "message"}}`, for every
 * response under /v1/messages (what Anthropic's clients read), as ollama/errors.ts does for
 * /api/: routes, hooks and handlers answer in OpenAI's shape with the status they choose; one
 * preSerialization hook rewrites the body on the way out. Streams send the same shape as an
 * `error` event (anthropicErrorEvent).
 */
import type { FastifyInstance } from 'fastify';
import { publicErrorBody } from '../error-body.ts';
import type { AnthropicError } from '../schemas/anthropic.ts';
import { isObject } from '../body-fields.ts';

export const ANTHROPIC_PREFIX = '/v1/messages';

const ERROR_TYPES: Readonly<Record<number, string>> = {
  400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error',
  413: 'request_too_large', 429: 'rate_limit_error', 503: 'overloaded_error',
};

/** An OpenAI error body, with its status, in Anthropic's shape. */
export function anthropicError(status: number, message: string): AnthropicError {
  return { type: 'error', error: { type: ERROR_TYPES[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error'), message } };
}

/** The stream's `error` event for a failure after the headers. */
export function anthropicErrorEvent(e: unknown): object {
  const status = (e as { status?: number }).status ?? 500;
  return anthropicError(status, publicErrorBody(e).error.message);
}

/** True for a request URL under /v1/messages (the query string ignored). */
export function isAnthropicUrl(url: string): boolean {
  return url === ANTHROPIC_PREFIX || url.startsWith(`${ANTHROPIC_PREFIX}/`) || url.startsWith(`${ANTHROPIC_PREFIX}?`);
}

/** Rewrites every OpenAI error body answered under /v1/messages into Anthropic's shape; register at the root, before the routes. */
export function registerAnthropicErrors(app: FastifyInstance): void {
  app.addHook('preSerialization', async (request, reply, payload: unknown) => {
    if (reply.statusCode < 400 || !isAnthropicUrl(request.url)) return payload;
    const inner = isObject(payload) ? payload['error'] : undefined;
    return isObject(inner) && typeof inner['message'] === 'string' ? anthropicError(reply.statusCode, inner['message']) : payload;
  });
}
