/** GET /v1/models and GET /v1/models/{id}: the one served model. */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { EngineState } from '../engine-state.ts';
import { checkModel } from '../request-fields.ts';
import { ErrorResponse } from '../schemas/common.ts';
import { Model, ModelList, ModelParams } from '../schemas/models.ts';

const errors = { '4xx': ErrorResponse, '5xx': ErrorResponse };

export function modelsRoute(app: FastifyInstance, state: EngineState): void {
  const created = Math.floor(Date.now() / 1000);
  const describe = (): Model => {
    const engine = state.require();
    return { id: engine.modelId, object: 'model', created, owned_by: 'gemma-serve', max_model_len: engine.contextLength };
  };
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.get('/v1/models', { schema: { summary: 'The served model, as a list', tags: ['OpenAI'], response: { 200: ModelList, ...errors } } },
    async (): Promise<ModelList> => ({ object: 'list', data: [describe()] }));
  typed.get('/v1/models/:id', { schema: { summary: 'The served model', tags: ['OpenAI'], params: ModelParams, response: { 200: Model, ...errors } } },
    async (request): Promise<Model> => {
      checkModel(state.require().modelId, request.params.id);
      return describe();
    });
}
