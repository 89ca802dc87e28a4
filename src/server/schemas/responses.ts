/**
 * POST /v1/responses (OpenAI's Responses API, stateless): the request body, the response
 * object, and the events a stream sends (documented, not serialized by schema: streams write
 * their own JSON). Input items are checked item by item in src/server/responses.ts, which names
 * the failing item (`input[2].call_id`); the schema fixes the top-level fields.
 */
import { Type, type Static } from 'typebox';
import { ConstraintFields, generationFields, MetadataFields, Nullable, OptionalNullable, SafeInteger, Unsupported } from './common.ts';
import { ChatLogprobEntry } from './chat.ts';

function pick<T extends object, K extends keyof T>(o: T, keys: readonly K[]): Pick<T, K> {
  return Object.fromEntries(keys.map((k) => [k, o[k]])) as Pick<T, K>;
}

export const ResponsesRequest = Type.Object({
  model: Type.String({ minLength: 1, description: 'The served model (GET /v1/models); another name is a 404 model_not_found.' }),
  input: Type.Union([Type.String(), Type.Array(Type.Unknown())], {
    description: 'A user message as text, or a list of items: messages ({role: user | assistant | system | developer, content: text or input_text / output_text parts}), '
      + 'function_call and function_call_output items (a tool-calling turn resent, as the response gave it). Images, files and other item types are refused.',
  }),
  instructions: OptionalNullable(Type.String({ description: 'A system message placed before the input.' })),
  max_output_tokens: OptionalNullable(SafeInteger({ minimum: 1 }, 'Most tokens to generate (default: the rest of the context).')),
  temperature: OptionalNullable(Type.Number({ minimum: 0, maximum: 2, description: 'Default 1; 0 is greedy.' })),
  top_p: OptionalNullable(Type.Number({ minimum: 0, maximum: 1, description: 'Default 1.' })),
  stream: OptionalNullable(Type.Boolean({ description: 'Server-sent events (event: <type>, data: <event>), ending with response.completed or response.incomplete.' })),
  stream_options: OptionalNullable(Type.Object({ include_obfuscation: OptionalNullable(Type.Boolean({ description: 'Accepted and ignored (no obfuscation field is sent).' })) }, { additionalProperties: false })),
  tools: OptionalNullable(Type.Array(Type.Unknown(), { description: 'Functions the model may call: [{type: "function", name, description, parameters, strict}]; other tool types are refused.' })),
  tool_choice: OptionalNullable(Type.Unknown({ description: 'none, auto (default with tools), required, or {type: "function", name}.' })),
  parallel_tool_calls: OptionalNullable(Type.Boolean({ description: 'false: at most one call (default true).' })),
  text: OptionalNullable(Type.Object({
    format: OptionalNullable(Type.Unknown({ description: '{type: "text"} (default), {type: "json_object"}, or {type: "json_schema", name, schema, strict, description}.' })),
    verbosity: Unsupported('null or "medium"'),
  }, { additionalProperties: false })),
  // vLLM's sampling extensions, as on the chat endpoint.
  ...pick(generationFields(1), ['seed', 'top_k', 'min_p', 'repetition_penalty', 'stop', 'ignore_eos', 'priority'] as const),
  structured_outputs: ConstraintFields.structured_outputs,
  ...MetadataFields,
  truncation: Unsupported('null or "disabled"'),
  include: Unsupported('null, or a list of "message.output_text.logprobs" (the output text\'s logprobs, with top_logprobs alternatives) and "reasoning.encrypted_content" (asks nothing: no reasoning items are made)'),
  previous_response_id: Unsupported('null (nothing is stored: resend the conversation as input items)'),
  conversation: Unsupported('null (nothing is stored: resend the conversation as input items)'),
  background: Unsupported('null or false'),
  reasoning: Unsupported('null or an object of nulls (Gemma 2 does not reason)'),
  top_logprobs: OptionalNullable(SafeInteger({ minimum: 0, maximum: 20 }, 'Alternatives per token in the logprobs (needs include ["message.output_text.logprobs"]).')),
  max_tool_calls: Unsupported('null'),
  prompt: Unsupported('null'),
}, { additionalProperties: false });
export type ResponsesBody = Static<typeof ResponsesRequest>;

const OutputText = Type.Object({
  type: Type.Literal('output_text'),
  text: Type.String(),
  annotations: Type.Array(Type.Unknown(), { description: 'Always empty.' }),
  logprobs: Type.Array(ChatLogprobEntry, { description: 'With include ["message.output_text.logprobs"]: each token\'s, as chat\'s logprobs.content; else empty.' }),
});

export const ResponseMessageItem = Type.Object({
  type: Type.Literal('message'),
  id: Type.String(),
  status: Type.Enum(['in_progress', 'completed', 'incomplete']),
  role: Type.Literal('assistant'),
  content: Type.Array(OutputText),
});

export const ResponseFunctionCallItem = Type.Object({
  type: Type.Literal('function_call'),
  id: Type.String(),
  call_id: Type.String({ description: 'What a function_call_output item answering it names.' }),
  name: Type.String(),
  arguments: Type.String({ description: 'The arguments as JSON text.' }),
  status: Type.Enum(['in_progress', 'completed', 'incomplete']),
});

export const ResponseItem = Type.Union([ResponseMessageItem, ResponseFunctionCallItem]);
export type ResponseItem = Static<typeof ResponseItem>;

export const ResponseUsage = Type.Object({
  input_tokens: Type.Integer(),
  input_tokens_details: Type.Object({ cached_tokens: Type.Integer({ description: 'Input tokens taken from the prefix cache.' }) }),
  output_tokens: Type.Integer(),
  output_tokens_details: Type.Object({ reasoning_tokens: Type.Integer({ description: 'Always 0.' }) }),
  total_tokens: Type.Integer(),
});

// Property order is the JSON's: the response serializer writes properties in schema order.
export const ResponseObject = Type.Object({
  id: Type.String(),
  object: Type.Literal('response'),
  created_at: Type.Integer({ description: 'Unix seconds.' }),
  status: Type.Enum(['in_progress', 'completed', 'incomplete', 'cancelled'], { description: 'incomplete: cut by max_output_tokens.' }),
  background: Type.Boolean(),
  error: Type.Null(),
  incomplete_details: Nullable(Type.Object({ reason: Type.Literal('max_output_tokens') })),
  instructions: Nullable(Type.String()),
  max_output_tokens: Nullable(Type.Integer()),
  model: Type.String(),
  output: Type.Array(ResponseItem),
  parallel_tool_calls: Type.Boolean(),
  previous_response_id: Type.Null(),
  reasoning: Type.Object({ effort: Type.Null(), summary: Type.Null() }),
  store: Type.Boolean({ description: 'Always false: nothing is stored.' }),
  temperature: Type.Number(),
  text: Type.Object({ format: Type.Unknown() }),
  tool_choice: Type.Unknown(),
  tools: Type.Array(Type.Unknown()),
  top_p: Type.Number(),
  truncation: Type.Literal('disabled'),
  usage: Nullable(ResponseUsage),
  user: Nullable(Type.String()),
  metadata: Type.Record(Type.String(), Type.Unknown()),
});
export type ResponseObject = Static<typeof ResponseObject>;

export const ResponseStreamEvent = Type.Object({
  type: Type.String({ description: 'response.created, response.in_progress, response.output_item.added, response.content_part.added, response.output_text.delta, '
    + 'response.output_text.done, response.content_part.done, response.function_call_arguments.delta, response.function_call_arguments.done, '
    + 'response.output_item.done, then response.completed or response.incomplete; error on a failure after the headers.' }),
  sequence_number: Type.Integer({ description: 'The event\'s place in the stream, from 0.' }),
}, { additionalProperties: true, description: 'One server-sent event (event: <type>, data: <event>) of a streamed response; the stream ends after response.completed, response.incomplete or error (no [DONE]).' });
export type ResponseStreamEvent = Static<typeof ResponseStreamEvent>;
