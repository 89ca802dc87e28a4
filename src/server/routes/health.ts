/**
 * GET /health: the process is alive (200 even while the model loads). GET /ready: 200 once the
 * model is loaded and the server admits requests; 503 while loading, after a failed load and
 * while draining, so a load balancer sends traffic only where it can be served.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { EngineState } from '../engine-state.ts';
import { Health, Ready } from '../schemas/probes.ts';

export function healthRoute(app: FastifyInstance, state: EngineState): void {
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.get('/health', { schema: { summary: 'Liveness (no API key)', tags: ['Operations'], response: { 200: Health } } },
    async (): Promise<Health> => ({ status: 'ok' }));
  typed.get('/ready', { schema: { summary: 'Readiness: 200 when serving, 503 while loading, failed or draining (no API key)', tags: ['Operations'], response: { 200: Ready, 503: Ready } } },
    async (_request, reply) => {
      const phase = state.phase;
      return reply.status(phase === 'ready' ? 200 : 503).send({ status: phase });
    });
}
