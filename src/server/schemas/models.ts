/** GET /v1/models and /v1/models/{id}: the one served model. */
import { Type, type Static } from 'typebox';

export const Model = Type.Object({
  id: Type.String(),
  object: Type.Literal('model'),
  created: Type.Integer(),
  owned_by: Type.String(),
  max_model_len: Type.Integer({ description: "vLLM's field: the context length in tokens." }),
});
export type Model = Static<typeof Model>;

export const ModelList = Type.Object({ object: Type.Literal('list'), data: Type.Array(Model) });
export type ModelList = Static<typeof ModelList>;

export const ModelParams = Type.Object({ id: Type.String() });
