/**
 * API-key authentication: `Authorization: Bearer <key>` checked against the configured keys
 * in constant time (SHA-256 digests of both sides compared with timingSafeEqual, so neither
 * the content nor the length of a key leaks through timing). No keys configured = open.
 * A WebSocket upgrade may instead offer the key as the subprotocol `openai-insecure-api-key.KEY`
 * (browsers cannot set headers on a WebSocket; OpenAI's Realtime API takes keys the same way).
 * Every route except GET /health and GET /ready (probes), GET /metrics (Prometheus scrapes,
 * as vLLM serves them: counts only, no request content), GET /openapi.json (the API's
 * description, no data) and GET / (Ollama's "Ollama is running", which its clients probe)
 * needs a key once keys are configured; Ollama's /api/* routes do (its clients send Bearer keys).
 * Under /v1/messages the key may come as `x-api-key`, as Anthropic's clients send it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { errorBody } from './error-body.ts';
import { isAnthropicUrl } from './anthropic/errors.ts';

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** True when `presented` equals one of `keys`; every key is compared (no early exit). */
export function keyMatches(presented: string, keyDigests: readonly Buffer[]): boolean {
  const d = digest(presented);
  let ok = false;
  for (const k of keyDigests) ok = timingSafeEqual(d, k) || ok;
  return ok;
}

export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer[ \t]+(.+)$/i.exec(header.trim());
  return m ? m[1]!.trim() : undefined;
}

/** The subprotocol prefix that carries a key on a browser's WebSocket upgrade (as OpenAI's Realtime API). */
export const WS_KEY_PROTOCOL_PREFIX = 'openai-insecure-api-key.';

/**
 * A key offered as the WebSocket subprotocol `openai-insecure-api-key.KEY`: browsers cannot set
 * an Authorization header on a WebSocket, only subprotocols.
 */
export function subprotocolKey(header: string | string[] | undefined): string | undefined {
  const offered = (Array.isArray(header) ? header.join(',') : header ?? '').split(',').map((p) => p.trim());
  const hit = offered.find((p) => p.startsWith(WS_KEY_PROTOCOL_PREFIX));
  return hit === undefined ? undefined : hit.slice(WS_KEY_PROTOCOL_PREFIX.length);
}

function apiKeyHeader(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' ? v.trim() : undefined;
}

const OPEN_PATHS = new Set(['/', '/health', '/ready', '/metrics', '/openapi.json']);

export function registerAuth(app: FastifyInstance, apiKeys: readonly string[]): void {
  if (apiKeys.length === 0) return;
  const keyDigests = apiKeys.map(digest);
  app.addHook('onRequest', async (request, reply) => {
    const path = request.url.split('?', 1)[0];
    if (OPEN_PATHS.has(path ?? '')) return;
    const upgrade = request.headers.upgrade?.toLowerCase() === 'websocket';
    const token = bearerToken(request.headers.authorization)
      ?? (upgrade ? subprotocolKey(request.headers['sec-websocket-protocol']) : undefined)
      // Anthropic's clients send their key as x-api-key.
      ?? (isAnthropicUrl(path ?? '') ? apiKeyHeader(request.headers['x-api-key']) : undefined);
    if (token === undefined || token === '') {
      return reply.status(401).send(errorBody(
        "Missing API key. Provide it in an Authorization header as 'Bearer YOUR_KEY'.",
        'invalid_request_error', null, 'invalid_api_key'));
    }
    if (!keyMatches(token, keyDigests)) {
      return reply.status(401).send(errorBody('Incorrect API key provided.', 'invalid_request_error', null, 'invalid_api_key'));
    }
  });
}
