/**
 * GET /health: the process is alive (200 even while the model loads). GET /ready: 200 once the
 * model is loaded and the server admits requests; 503 while loading, after a failed load and
 * while draining, so a load balancer sends traffic only where it can be served.
 */
import type { FastifyInstance } from 'fastify';
import type { EngineState } from '../engine-state.ts';

export function healthRoute(app: FastifyInstance, state: EngineState): void {
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/ready', async (_request, reply) => {
    const phase = state.phase;
    return reply.status(phase === 'ready' ? 200 : 503).send({ status: phase });
  });
}
