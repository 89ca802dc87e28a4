/** GET /metrics: Prometheus' text exposition (metrics.ts). No API key needed, as in vLLM. */
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import type { Metrics } from '../metrics.ts';

export function metricsRoute(app: FastifyInstance, metrics: Metrics): void {
  const schema = {
    summary: 'Prometheus metrics (no API key)', tags: ['Operations'],
    // Documents the text; a string payload is sent as it is, never through a serializer.
    response: { 200: { description: "Prometheus' text exposition format.", content: { 'text/plain': { schema: Type.String() } } } },
  };
  app.get('/metrics', { schema }, async (_request, reply) => reply.type(metrics.contentType).send(await metrics.render()));
}
