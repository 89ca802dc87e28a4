/** GET /v1/models and GET /v1/models/{id}: the served model, once under each of its names (model-names.ts). */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { EngineState } from '../engine-state.ts';
import { matchModelName } from '../model-names.ts';
import { checkModel } from '../request-fields.ts';
import { ErrorResponse } from '../schemas/common.ts';
import { Model, ModelList, ModelParams } from '../schemas/models.ts';

const errors = { '4xx': ErrorResponse, '5xx': ErrorResponse };

export function modelsRoute(app: FastifyInstance, state: EngineState): void {
  const created = Math.floor(Date.now() / 1000);
  const describe = (id: string): Model => ({ id, object: 'model', created, owned_by: 'gemma-serve', max_model_len: state.require().contextLength });
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.get('/v1/models', { schema: { summary: 'The served model, as a list', tags: ['OpenAI'], response: { 200: ModelList, ...errors } } },
    async (): Promise<ModelList> => ({ object: 'list', data: state.require().modelNames.map(describe) }));
  typed.get('/v1/models/:id', { schema: { summary: 'The served model', tags: ['OpenAI'], params: ModelParams, response: { 200: Model, ...errors } } },
    async (request): Promise<Model> => {
      const names = state.require().modelNames;
      checkModel(names, request.params.id);
      return describe(matchModelName(names, request.params.id)!);
    });
}
