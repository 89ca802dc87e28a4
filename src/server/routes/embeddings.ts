/**
 * OpenAI's POST /v1/embeddings, computed by the served Gemma 2 (docs/API.md "Embeddings"): one
 * L2-normalised vector per input, as floats or base64 (little-endian float32), with the inputs'
 * token counts as usage. `model` must be the served model; `dimensions` only its hidden size.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { EngineState } from '../engine-state.ts';
import { checkModel } from '../request-fields.ts';
import { ErrorResponse } from '../schemas/common.ts';
import { EmbeddingsRequest, EmbeddingsResponse } from '../schemas/embeddings.ts';
import { checkDimensions, clientGone, embedAll, embeddingInputs, tokenizeInputs } from '../embeddings.ts';

const errors = { '4xx': ErrorResponse, '5xx': ErrorResponse };

export function embeddingsRoute(app: FastifyInstance, state: EngineState): void {
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.post('/v1/embeddings', {
    schema: { summary: 'Embeddings from the served model (pooled final hidden states)', tags: ['OpenAI'], body: EmbeddingsRequest, response: { 200: EmbeddingsResponse, ...errors } },
  }, async (request, reply): Promise<EmbeddingsResponse> => {
    const engine = state.require();
    const b = request.body;
    checkModel(engine.modelNames, b.model);
    checkDimensions(engine, b.dimensions);
    const ids = await tokenizeInputs(engine, embeddingInputs(b.input), 'input');
    const results = await embedAll(engine, ids, { pooling: b.pooling ?? undefined, param: 'input', signal: clientGone(reply) });
    const base64 = b.encoding_format === 'base64';
    const tokens = results.reduce((n, r) => n + r.promptTokens, 0);
    return {
      object: 'list',
      data: results.map((r, index) => ({ object: 'embedding', index, embedding: base64 ? float32Base64(r.embedding) : Array.from(r.embedding) })),
      model: engine.modelId,
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
  });
}

/** The vector's float32 bytes, little-endian (what OpenAI's clients decode), in base64. */
function float32Base64(v: Float32Array): string {
  const bytes = Buffer.alloc(v.length * 4);
  v.forEach((x, i) => bytes.writeFloatLE(x, i * 4));
  return bytes.toString('base64');
}
