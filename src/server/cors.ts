/**
 * Minimal CORS, off unless origins are configured ('*' allows any origin). Adds
 * Access-Control-Allow-Origin for a matching Origin and answers preflights (OPTIONS with
 * Access-Control-Request-Method) with 204 before authentication, since browsers send
 * preflights without credentials.
 */
import type { FastifyInstance } from 'fastify';

const ALLOW_METHODS = 'GET, POST, OPTIONS';
const ALLOW_HEADERS = 'authorization, content-type, openai-organization, openai-project, x-stainless-lang, x-stainless-package-version, x-stainless-os, x-stainless-arch, x-stainless-runtime, x-stainless-runtime-version, x-stainless-retry-count, x-stainless-timeout';

export function registerCors(app: FastifyInstance, origins: readonly string[]): void {
  if (origins.length === 0) return;
  const any = origins.includes('*');
  const allowed = new Set(origins);
  app.addHook('onRequest', async (request, reply) => {
    const origin = request.headers.origin;
    if (origin === undefined) return;
    if (!any && !allowed.has(origin)) return;
    reply.header('access-control-allow-origin', any ? '*' : origin);
    if (!any) reply.header('vary', 'Origin');
    if (request.method === 'OPTIONS' && request.headers['access-control-request-method'] !== undefined) {
      const requested = request.headers['access-control-request-headers'];
      reply.header('access-control-allow-methods', ALLOW_METHODS);
      reply.header('access-control-allow-headers', typeof requested === 'string' && requested !== '' ? requested : ALLOW_HEADERS);
      reply.header('access-control-max-age', '600');
      return reply.status(204).send();
    }
  });
}
