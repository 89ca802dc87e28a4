/** GET /metrics: Prometheus' text exposition (metrics.ts). No API key needed, as in vLLM. */
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../metrics.ts';

export function metricsRoute(app: FastifyInstance, metrics: Metrics): void {
  app.get('/metrics', async (_request, reply) => reply.type(metrics.contentType).send(await metrics.render()));
}
