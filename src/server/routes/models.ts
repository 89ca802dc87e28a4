import type { FastifyInstance } from 'fastify';
import type { Engine } from '../../engine/engine.ts';
import { GemmaServeError } from '../../errors.ts';

export function modelsRoute(app: FastifyInstance, engine: Engine): void {
  const created = Math.floor(Date.now() / 1000);
  const model = { id: engine.modelId, object: 'model', created, owned_by: 'gemma-serve' };
  app.get('/v1/models', async () => ({ object: 'list', data: [model] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    if (request.params.id !== engine.modelId) {
      throw new GemmaServeError(`The model '${request.params.id}' does not exist`, 'model_not_found', 404, 'invalid_request_error', 'model');
    }
    return model;
  });
}
