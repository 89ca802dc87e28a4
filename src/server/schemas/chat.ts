/**
 * /v1/chat/completions (and its WebSocket twin): the request body, the chat.completion
 * response, and the chat.completion.chunk objects a stream sends (documented, not
 * serialized by schema: streams write their own JSON).
 */
import { Type, type Static } from 'typebox';
import { ChatMessages, ConstraintFields, FinishReason, generationFields, Nullable, OptionalNullable, SafeInteger, ToolCallObject, Unsupported, Usage } from './common.ts';

/** vLLM's chat template fields (chat completions, the WebSocket, /tokenize with messages). */
export const ChatTemplateFields = {
  add_generation_prompt: OptionalNullable(Type.Boolean({ description: "End the prompt with the opening of the model's turn (default true; false when continue_final_message is true)." })),
  continue_final_message: OptionalNullable(Type.Boolean({ description: 'Assistant prefill: the last message is left open and the model continues it (not with add_generation_prompt: true).' })),
  chat_template_kwargs: OptionalNullable(Type.Record(Type.String(), Type.Unknown(), { description: 'Further variables for the chat template (docs/API.md "Chat template").' })),
};

export const ChatCompletionRequest = Type.Object({
  ...generationFields(1),
  messages: ChatMessages,
  max_completion_tokens: OptionalNullable(SafeInteger({ minimum: 1 }, 'Most tokens to generate (max_tokens is read when this is absent).')),
  logprobs: OptionalNullable(Type.Boolean({ description: 'Log probabilities of the generated tokens.' })),
  top_logprobs: OptionalNullable(SafeInteger({ minimum: 0, maximum: 20 }, 'Alternatives per token (needs logprobs: true).')),
  tools: OptionalNullable(Type.Unknown({ description: 'Functions the model may call: [{type: "function", function: {name, description, parameters}}] (docs/API.md "Tool calling").' })),
  tool_choice: OptionalNullable(Type.Unknown({ description: 'none, auto (default with tools), required, or {type: "function", function: {name}}.' })),
  parallel_tool_calls: OptionalNullable(Type.Unknown({ description: 'false: at most one call (default true).' })),
  ...ChatTemplateFields,
  ...ConstraintFields,
  functions: Unsupported('[]'),
  function_call: Unsupported('"none"'),
  modalities: Unsupported('["text"]'),
  audio: Unsupported('null'),
  prediction: Unsupported('null'),
  reasoning_effort: Unsupported('null'),
  web_search_options: Unsupported('null'),
  verbosity: Unsupported('null'),
}, { additionalProperties: false });
export type ChatCompletionBody = Static<typeof ChatCompletionRequest>;

// Property order is the JSON's: the response serializer writes properties in schema order.
const TokenText = {
  token: Type.String(),
  bytes: Type.Array(Type.Integer({ description: "The token's UTF-8 bytes." })),
  logprob: Type.Number(),
};

export const ChatLogprobEntry = Type.Object({
  ...TokenText,
  top_logprobs: Type.Array(Type.Object(TokenText)),
});
export type ChatLogprobEntry = Static<typeof ChatLogprobEntry>;

const ChoiceLogprobs = Nullable(Type.Object({ content: Type.Array(ChatLogprobEntry), refusal: Type.Null() }));

/** What every object of one completion repeats. */
export const CompletionBase = {
  id: Type.String(),
  created: Type.Integer({ description: 'Unix seconds.' }),
  model: Type.String(),
  system_fingerprint: Type.String(),
};

export const ChatCompletion = Type.Object({
  ...CompletionBase,
  object: Type.Literal('chat.completion'),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    message: Type.Object({
      role: Type.Literal('assistant'),
      content: Nullable(Type.String({ description: 'null when the message is only tool calls.' })),
      refusal: Type.Null(),
      tool_calls: Type.Optional(Type.Array(ToolCallObject)),
    }),
    logprobs: ChoiceLogprobs,
    finish_reason: FinishReason,
    stop_reason: Nullable(Type.String({ description: "vLLM's stop_reason: the stop string that ended the choice; null for an end token, the length or tool calls." })),
  })),
  usage: Usage,
});
export type ChatCompletion = Static<typeof ChatCompletion>;

export const ChatCompletionChunk = Type.Object({
  ...CompletionBase,
  object: Type.Literal('chat.completion.chunk'),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    delta: Type.Object({
      role: Type.Optional(Type.Literal('assistant')),
      content: Type.Optional(Type.String()),
      tool_calls: Type.Optional(Type.Array(Type.Object({
        index: Type.Integer({ description: 'The call this delta belongs to.' }),
        id: Type.Optional(Type.String()),
        type: Type.Optional(Type.Literal('function')),
        function: Type.Object({ name: Type.Optional(Type.String()), arguments: Type.Optional(Type.String()) }),
      }), { description: 'The first delta of a call has id, type and name; later ones add to its arguments.' })),
    }),
    logprobs: ChoiceLogprobs,
    finish_reason: Nullable(FinishReason),
    stop_reason: Type.Optional(Nullable(Type.String({ description: "vLLM's stop_reason, on the finish chunk: the stop string that ended the choice, else null." }))),
  }), { description: 'One choice per chunk; empty in the last chunk when stream_options.include_usage is set.' }),
  usage: Type.Optional(Nullable(Usage)),
}, { description: 'One server-sent event (data: <chunk>) of a streamed chat completion; the stream ends with data: [DONE].' });
export type ChatCompletionChunk = Static<typeof ChatCompletionChunk>;
