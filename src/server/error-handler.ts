/**
 * The one error handler: every failure a route or hook throws becomes OpenAI's error JSON.
 * GemmaServeErrors keep their status, type, code and param (schema validation failures arrive
 * as InvalidRequestErrors, schema-errors.ts); Fastify's own client errors (malformed JSON,
 * body too large) keep their status; anything else is a 500 whose details stay in the log.
 * Unknown URLs are 404s in the same shape.
 */
import type { FastifyInstance } from 'fastify';
import { GemmaServeError } from '../errors.ts';
import { errorBody, publicErrorBody } from './error-body.ts';
import { closeAfterBody } from './linger.ts';

export function registerErrorHandler(app: FastifyInstance, bodyLimit: number): void {
  app.setErrorHandler((err: Error, request, reply) => {
    if (err instanceof GemmaServeError) {
      if (err.status >= 500) request.log.error({ err }, err.message);
      const retryAfter = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
      if (retryAfter !== undefined) reply.header('retry-after', String(retryAfter));
      return reply.status(err.status).send(publicErrorBody(err));
    }
    const status = (err as { statusCode?: number }).statusCode;
    if ((err as { code?: string }).code === 'FST_ERR_CTP_BODY_TOO_LARGE' || status === 413) {
      // The body is still arriving: read it (discarded) before closing, or the 413 may be lost.
      if (!request.raw.complete) closeAfterBody(request.raw, reply.raw);
      return reply.status(413).send(errorBody(`Request body too large: the limit is ${bodyLimit} bytes.`, 'invalid_request_error', null, 'request_too_large'));
    }
    if (typeof status === 'number' && status >= 400 && status < 500) {
      // Fastify's own client errors: malformed JSON, wrong content type, body too large.
      return reply.status(status).send(errorBody(err.message, 'invalid_request_error', null, (err as { code?: string }).code ?? null));
    }
    request.log.error({ err }, 'internal error');
    return reply.status(500).send(publicErrorBody(err));
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send(errorBody(`Unknown request URL: ${request.method} ${request.url}`, 'invalid_request_error', null, 'unknown_url'));
  });
}
