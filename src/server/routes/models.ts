/** GET /v1/models and GET /v1/models/{id}: the one served model. */
import type { FastifyInstance } from 'fastify';
import type { EngineState } from '../engine-state.ts';
import { checkModel } from '../request-fields.ts';

export function modelsRoute(app: FastifyInstance, state: EngineState): void {
  const created = Math.floor(Date.now() / 1000);
  const describe = (): object => {
    const engine = state.require();
    return { id: engine.modelId, object: 'model', created, owned_by: 'gemma-serve', max_model_len: engine.contextLength };
  };
  app.get('/v1/models', async () => ({ object: 'list', data: [describe()] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    checkModel(state.require().modelId, request.params.id);
    return describe();
  });
}
