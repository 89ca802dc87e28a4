/**
 * /v1/completions (OpenAI's legacy text completions): the request body and the
 * text_completion object, which is also what each streamed chunk is.
 */
import { Type, type Static } from 'typebox';
import { CompletionBase } from './chat.ts';
import { ConstraintFields, FinishReason, generationFields, Nullable, OptionalNullable, SafeInteger, TokenId, Unsupported, Usage } from './common.ts';

const TokenIds = Type.Array(TokenId, { minItems: 1 });

export const CompletionRequest = Type.Object({
  ...generationFields(0),
  prompt: Type.Union([
    Type.String(),
    Type.Array(Type.String(), { minItems: 1 }),
    TokenIds,
    Type.Array(TokenIds, { minItems: 1 }),
  ], { description: 'A string, strings, token ids or arrays of token ids; text prompts get <bos> first.' }),
  echo: OptionalNullable(Type.Boolean({ description: 'The prompt before the completion (scored too with logprobs).' })),
  logprobs: OptionalNullable(SafeInteger({ minimum: 0, maximum: 20 }, 'Alternatives per token.')),
  best_of: OptionalNullable(SafeInteger({ minimum: 1 }, 'Only equal to n is supported.')),
  suffix: Unsupported('""'),
  ...ConstraintFields,
}, { additionalProperties: false });
export type CompletionBody = Static<typeof CompletionRequest>;

/** OpenAI's legacy logprobs object for a run of tokens. */
export const LegacyLogprobs = Type.Object({
  tokens: Type.Array(Type.String()),
  token_logprobs: Type.Array(Nullable(Type.Number())),
  top_logprobs: Type.Array(Nullable(Type.Record(Type.String(), Type.Number()))),
  text_offset: Type.Array(Type.Integer()),
});
export type LegacyLogprobs = Static<typeof LegacyLogprobs>;

const choice = <F extends typeof FinishReason | ReturnType<typeof Nullable<typeof FinishReason>>>(finishReason: F) => Type.Object({
  index: Type.Integer({ description: 'prompt * n + choice' }),
  text: Type.String(),
  logprobs: Nullable(LegacyLogprobs),
  finish_reason: finishReason,
});

export const TextCompletion = Type.Object({
  ...CompletionBase,
  object: Type.Literal('text_completion'),
  choices: Type.Array(choice(FinishReason)),
  usage: Nullable(Usage),
});
export type TextCompletion = Static<typeof TextCompletion>;

export const TextCompletionChunk = Type.Object({
  ...CompletionBase,
  object: Type.Literal('text_completion'),
  choices: Type.Array(choice(Nullable(FinishReason)), { description: 'One choice per chunk; empty in the last chunk when stream_options.include_usage is set.' }),
  usage: Type.Optional(Nullable(Usage)),
}, { description: 'One server-sent event (data: <chunk>) of a streamed completion; the stream ends with data: [DONE].' });
export type TextCompletionChunk = Static<typeof TextCompletionChunk>;
