/** vLLM's POST /tokenize and POST /detokenize: request bodies and responses. */
import { Type, type Static } from 'typebox';
import { ChatTemplateFields } from './chat.ts';
import { ChatMessages, OptionalNullable, TokenId } from './common.ts';

const Model = OptionalNullable(Type.String({ description: 'When given, the served model.' }));

export const TokenizeRequest = Type.Object({
  model: Model,
  prompt: OptionalNullable(Type.String({ description: 'Text, tokenized as /v1/completions does (exactly one of prompt and messages).' })),
  messages: OptionalNullable(ChatMessages),
  add_special_tokens: OptionalNullable(Type.Boolean({ description: 'With prompt: <bos> first (default true).' })),
  ...ChatTemplateFields,
  return_token_strs: OptionalNullable(Type.Boolean({ description: 'Each token as text too.' })),
}, { additionalProperties: false });
export type TokenizeBody = Static<typeof TokenizeRequest>;

export const TokenizeResponse = Type.Object({
  count: Type.Integer(),
  max_model_len: Type.Integer(),
  tokens: Type.Array(Type.Integer()),
  token_strs: Type.Optional(Type.Array(Type.String())),
});
export type TokenizeResponse = Static<typeof TokenizeResponse>;

export const DetokenizeRequest = Type.Object({
  model: Model,
  tokens: Type.Array(TokenId),
}, { additionalProperties: false });
export type DetokenizeBody = Static<typeof DetokenizeRequest>;

export const DetokenizeResponse = Type.Object({ prompt: Type.String() });
export type DetokenizeResponse = Static<typeof DetokenizeResponse>;
