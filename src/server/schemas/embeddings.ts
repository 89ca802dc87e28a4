/**
 * The embeddings endpoints' bodies and responses: OpenAI's POST /v1/embeddings, Ollama's
 * POST /api/embed and its legacy POST /api/embeddings (docs/API.md "Embeddings"). The Ollama
 * routes answer errors as Ollama does, `{"error": "message"}` (ollama/errors.ts OllamaError).
 */
import { Type, type Static } from 'typebox';
import { OptionalNullable, SafeInteger, TokenId } from './common.ts';

const Pooling = Type.Union([Type.Literal('mean'), Type.Literal('last')], { description: "gemma-serve's extension: how the final hidden states are pooled (default mean)." });

export const EmbeddingsRequest = Type.Object({
  model: Type.String({ minLength: 1, description: 'The served model (GET /v1/models); another name is a 404 model_not_found.' }),
  input: Type.Union([
    Type.String(),
    Type.Array(Type.String()),
    Type.Array(TokenId),
    Type.Array(Type.Array(TokenId)),
  ], { description: 'A text, texts, token ids, or arrays of token ids; one embedding each. Texts get <bos> first.' }),
  encoding_format: OptionalNullable(Type.Union([Type.Literal('float'), Type.Literal('base64')], { description: 'float (default) or base64 (little-endian float32).' })),
  dimensions: OptionalNullable(SafeInteger({ minimum: 1 }, 'Only the model\'s hidden size: gemma-serve does not shorten embeddings.')),
  user: OptionalNullable(Type.String({ description: 'Accepted and ignored.' })),
  pooling: OptionalNullable(Pooling),
}, { additionalProperties: false });
export type EmbeddingsBody = Static<typeof EmbeddingsRequest>;

export const EmbeddingsResponse = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(Type.Object({
    object: Type.Literal('embedding'),
    index: Type.Integer(),
    embedding: Type.Union([Type.Array(Type.Number()), Type.String()], { description: 'L2-normalised; a base64 string with encoding_format base64.' }),
  })),
  model: Type.String(),
  usage: Type.Object({ prompt_tokens: Type.Integer(), total_tokens: Type.Integer() }),
});
export type EmbeddingsResponse = Static<typeof EmbeddingsResponse>;

/** Ollama's error body. */

const OllamaOptions = OptionalNullable(Type.Record(Type.String(), Type.Unknown(), { description: "Ollama's model options: num_ctx bounds the input (with truncate); the others do not apply to embeddings and are ignored." }));
const KeepAlive = OptionalNullable(Type.Union([Type.String(), Type.Number()], { description: 'Accepted and ignored: the model stays loaded.' }));

export const OllamaEmbedRequest = Type.Object({
  model: Type.String({ minLength: 1, description: 'The served model.' }),
  input: Type.Union([Type.String(), Type.Array(Type.String())], { description: 'A text or texts; one embedding each.' }),
  truncate: OptionalNullable(Type.Boolean({ description: 'Default true: an input over the context is cut to it; false: a 400.' })),
  dimensions: OptionalNullable(SafeInteger({ minimum: 1 }, "Only the model's hidden size.")),
  options: OllamaOptions,
  keep_alive: KeepAlive,
}, { additionalProperties: false });
export type OllamaEmbedBody = Static<typeof OllamaEmbedRequest>;

export const OllamaEmbedResponse = Type.Object({
  model: Type.String(),
  embeddings: Type.Array(Type.Array(Type.Number())),
  /** Nanoseconds. */
  total_duration: Type.Integer(),
  load_duration: Type.Integer(),
  prompt_eval_count: Type.Integer(),
});
export type OllamaEmbedResponse = Static<typeof OllamaEmbedResponse>;

export const OllamaEmbeddingsRequest = Type.Object({
  model: Type.String({ minLength: 1, description: 'The served model.' }),
  prompt: Type.String({ description: 'The text to embed (cut to the context when longer).' }),
  options: OllamaOptions,
  keep_alive: KeepAlive,
}, { additionalProperties: false });
export type OllamaEmbeddingsBody = Static<typeof OllamaEmbeddingsRequest>;

export const OllamaEmbeddingsResponse = Type.Object({ embedding: Type.Array(Type.Number()) });
export type OllamaEmbeddingsResponse = Static<typeof OllamaEmbeddingsResponse>;
