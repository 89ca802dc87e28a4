/**
 * Schema pieces the endpoints share: nullable optional fields (OpenAI's SDKs send null for
 * "not set", so every optional field takes null as absent), the generation and sampling
 * fields of /v1/chat/completions and /v1/completions, chat messages (also taken by /tokenize),
 * usage and the error body. The schemas are the source of truth for the request and response
 * types (Static<typeof X>); Ajv compiles them (schema-errors.ts names the parameter of a failure).
 */
import { Type, type Static, type TSchema } from 'typebox';

/** Most choices per request (vLLM and OpenAI allow 128). */
export const MAX_N = 128;

/** `T`, or null meaning "not set". */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

/** An optional field that also takes null for "not set". */
export const OptionalNullable = <T extends TSchema>(schema: T) => Type.Optional(Nullable(schema));

/**
 * An integer no wider than a double holds exactly: larger ones would be rounded on parse, so
 * they are refused rather than silently changed.
 */
export const SafeInteger = (range: { minimum?: number; maximum?: number }, description?: string) => Type.Integer({
  minimum: range.minimum ?? -Number.MAX_SAFE_INTEGER, maximum: range.maximum ?? Number.MAX_SAFE_INTEGER,
  ...(description === undefined ? {} : { description }),
});

export const TokenId = Type.Integer({ minimum: 0, description: 'A token id of the served model (checked against its vocabulary).' });

/**
 * A known OpenAI field that gemma-serve cannot honour yet. The schema accepts any value; the
 * route refuses (400 unsupported_parameter) every value but the harmless ones named.
 */
export const Unsupported = (harmless: string) => Type.Optional(Type.Unknown({ description: `Not supported yet: only ${harmless} is accepted.` }));

/** Accepted and ignored: they describe the request, they do not change its output. */
export const MetadataFields = {
  user: OptionalNullable(Type.String({ description: 'Accepted and ignored.' })),
  metadata: OptionalNullable(Type.Record(Type.String(), Type.Unknown(), { description: 'Accepted and ignored.' })),
  store: OptionalNullable(Type.Boolean({ description: 'Accepted and ignored (nothing is stored).' })),
  service_tier: OptionalNullable(Type.String({ description: 'Accepted and ignored.' })),
  prompt_cache_key: Type.Optional(Type.Unknown({ description: 'Accepted and ignored (prefix caching is automatic).' })),
  safety_identifier: Type.Optional(Type.Unknown({ description: 'Accepted and ignored.' })),
};

export const StreamOptions = Type.Object({
  include_usage: OptionalNullable(Type.Boolean({ description: 'A last chunk with the usage of the whole request (choices: []).' })),
  continuous_usage_stats: OptionalNullable(Type.Boolean({ description: "vLLM's usage on every chunk: not supported (only false)." })),
}, { additionalProperties: false });

/**
 * The generation and sampling fields both endpoints take. `minMaxTokens`: the smallest
 * max_tokens accepted (0 on /v1/completions: echo-only scoring generates nothing).
 */
export function generationFields(minMaxTokens: number) {
  return {
    model: Type.String({ minLength: 1, description: 'The served model (GET /v1/models); another name is a 404 model_not_found.' }),
    stream: OptionalNullable(Type.Boolean({ description: 'Server-sent events of chunks, ending with data: [DONE].' })),
    stream_options: OptionalNullable(StreamOptions),
    n: OptionalNullable(SafeInteger({ minimum: 1, maximum: MAX_N }, 'Choices to generate; choice i uses seed + i.')),
    max_tokens: OptionalNullable(SafeInteger({ minimum: minMaxTokens }, 'Most tokens to generate.')),
    temperature: OptionalNullable(Type.Number({ minimum: 0, maximum: 2, description: 'Default 1; 0 is greedy.' })),
    top_p: OptionalNullable(Type.Number({ minimum: 0, maximum: 1, description: 'Default 1.' })),
    seed: OptionalNullable(SafeInteger({}, 'Sampling seed (taken mod 2^32); choice i uses seed + i.')),
    stop: OptionalNullable(Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 4 })], { description: 'Up to 4 stop strings; the match is not returned.' })),
    presence_penalty: OptionalNullable(Type.Number({ minimum: -2, maximum: 2 })),
    frequency_penalty: OptionalNullable(Type.Number({ minimum: -2, maximum: 2 })),
    logit_bias: OptionalNullable(Type.Record(Type.String(), Type.Number({ minimum: -100, maximum: 100 }), {
      propertyNames: Type.String({ pattern: '^[0-9]{1,15}$' }),
      description: 'Token id -> bias added to its logit (-100..100).',
    })),
    top_k: OptionalNullable(SafeInteger({ minimum: -1 }, "vLLM's top_k: 0 or -1 disables.")),
    min_p: OptionalNullable(Type.Number({ minimum: 0, maximum: 1, description: "vLLM's min_p: 0 disables." })),
    repetition_penalty: OptionalNullable(Type.Number({ exclusiveMinimum: 0, maximum: 2, description: "vLLM's repetition_penalty: 1 disables." })),
    ignore_eos: OptionalNullable(Type.Boolean({ description: "vLLM's ignore_eos: generate past the end-of-turn token." })),
    min_tokens: OptionalNullable(SafeInteger({ minimum: 0 }, "vLLM's min_tokens: no end before this many tokens.")),
    priority: OptionalNullable(SafeInteger({ minimum: -(2 ** 31), maximum: 2 ** 31 }, "vLLM's priority: lower is scheduled sooner (default 0).")),
    ...MetadataFields,
  };
}

/** The fields of generationFields() as one object (their Static type is what both parsers read). */
export const GenerationFields = Type.Object(generationFields(0));
export type GenerationBody = Static<typeof GenerationFields>;

export const TextPart = Type.Object({
  type: Type.Literal('text'),
  text: Type.String(),
}, { description: 'A text part; other part types (images, audio, files) are not supported.' });

const Role = Type.Enum(['system', 'developer', 'user', 'assistant', 'tool'], { description: 'developer is read as system; tool: a tool call\'s result (with tool_call_id).' });

/** A call in an assistant message (OpenAI's shape). */
export const ToolCallObject = Type.Object({
  id: Type.String(),
  type: Type.Literal('function'),
  function: Type.Object({ name: Type.String(), arguments: Type.String({ description: 'The arguments as JSON text.' }) }),
});

export const ChatMessage = Type.Object({
  role: Role,
  content: Nullable(Type.Union([Type.String(), Type.Array(TextPart)], { description: 'Text, or text parts joined; null only on an assistant turn.' })),
  name: Unsupported('null (speaker names would change the prompt)'),
  tool_calls: OptionalNullable(Type.Array(ToolCallObject, { description: 'Calls the assistant made (assistant messages).' })),
  tool_call_id: OptionalNullable(Type.String({ description: 'The call a tool message answers.' })),
  function_call: Unsupported('null'),
  refusal: Unsupported('null'),
  audio: Unsupported('null'),
}, {
  additionalProperties: false,
  // Checked before the unknown-field rule: a message of a role we do not serve (tool, function)
  // is refused for its role, not for the fields that role brings.
  allOf: [Type.Object({ role: Role })],
});

export const ChatMessages = Type.Array(ChatMessage, { minItems: 1 });

export const Usage = Type.Object({
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  total_tokens: Type.Integer(),
  prompt_tokens_details: Type.Optional(Type.Object({
    cached_tokens: Type.Integer({ description: 'Prompt tokens taken from the prefix cache instead of computed (for n > 1: the fewest of any choice, the prompt being counted once).' }),
  })),
});

export const ErrorResponse = Type.Object({
  error: Type.Object({
    message: Type.String(),
    type: Type.String(),
    param: Nullable(Type.String()),
    code: Nullable(Type.String()),
  }),
}, { description: "OpenAI's error body." });

export const FinishReason = Type.Enum(['stop', 'length', 'abort', 'tool_calls']);

/**
 * The fields that constrain output (validated in src/server/structured-output.ts, which names
 * the parameter in each 400; docs/API.md "Structured output").
 */
export const ConstraintFields = {
  response_format: OptionalNullable(Type.Unknown({ description: 'OpenAI\'s {type: "text" | "json_object" | "json_schema", json_schema: {name, schema, strict}}.' })),
  structured_outputs: OptionalNullable(Type.Unknown({ description: "vLLM's {json | json_object | regex | choice | grammar}: exactly one." })),
  guided_json: OptionalNullable(Type.Unknown({ description: "vLLM's older field: a JSON Schema (object or JSON text)." })),
  guided_regex: OptionalNullable(Type.Unknown({ description: "vLLM's older field: a regular expression the whole output matches." })),
  guided_choice: OptionalNullable(Type.Unknown({ description: "vLLM's older field: the output is one of these strings." })),
  guided_grammar: OptionalNullable(Type.Unknown({ description: "vLLM's older field: an EBNF grammar (xgrammar's syntax, rule root)." })),
};
