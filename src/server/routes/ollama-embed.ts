/**
 * Ollama's POST /api/embed ({model, input, truncate} → {model, embeddings, durations,
 * prompt_eval_count}) and its legacy POST /api/embeddings ({model, prompt} → {embedding}),
 * computed as /v1/embeddings computes them (docs/API.md "Embeddings"). An input over the context
 * is cut to it unless `truncate` is false (then a 400). Errors take Ollama's shape,
 * `{"error": "message"}` with the status of the same failure on the OpenAI routes, as
 * everything under /api/ does (ollama/errors.ts).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { EngineState } from '../engine-state.ts';
import { checkModel } from '../request-fields.ts';
import { OllamaEmbeddingsRequest, OllamaEmbeddingsResponse, OllamaEmbedRequest, OllamaEmbedResponse } from '../schemas/embeddings.ts';
import { OllamaError } from '../ollama/errors.ts';
import { checkDimensions, clientGone, embedAll, embeddingInputs, embeddingLimit, tokenizeInputs } from '../embeddings.ts';

const errors = { '4xx': OllamaError, '5xx': OllamaError };

export function ollamaEmbedRoutes(app: FastifyInstance, state: EngineState): void {
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.post('/api/embed', {
    schema: { summary: "Embeddings from the served model (Ollama's /api/embed)", tags: ['Ollama'], body: OllamaEmbedRequest, response: { 200: OllamaEmbedResponse, ...errors } },
  }, async (request, reply): Promise<OllamaEmbedResponse> => {
    const t0 = process.hrtime.bigint();
    const engine = state.require();
    const b = request.body;
    checkModel(engine.modelNames, b.model);
    checkDimensions(engine, b.dimensions);
    const truncateTo = b.truncate === false ? undefined : embeddingLimit(engine, b.options?.['num_ctx']);
    const ids = await tokenizeInputs(engine, embeddingInputs(b.input), 'input', truncateTo);
    const results = await embedAll(engine, ids, { param: 'input', signal: clientGone(reply) });
    return {
      model: b.model,
      embeddings: results.map((r) => Array.from(r.embedding)),
      total_duration: Number(process.hrtime.bigint() - t0),
      load_duration: 0,
      prompt_eval_count: results.reduce((n, r) => n + r.promptTokens, 0),
    };
  });

  typed.post('/api/embeddings', {
    schema: { summary: "An embedding from the served model (Ollama's legacy /api/embeddings)", tags: ['Ollama'], body: OllamaEmbeddingsRequest, response: { 200: OllamaEmbeddingsResponse, ...errors } },
  }, async (request, reply): Promise<OllamaEmbeddingsResponse> => {
    const engine = state.require();
    const b = request.body;
    checkModel(engine.modelNames, b.model);
    const ids = await tokenizeInputs(engine, [b.prompt], 'prompt', embeddingLimit(engine, b.options?.['num_ctx']));
    const [result] = await embedAll(engine, ids, { param: 'prompt', signal: clientGone(reply) });
    return { embedding: Array.from(result!.embedding) };
  });
}
