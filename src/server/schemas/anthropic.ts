/**
 * Anthropic's Messages API (POST /v1/messages, POST /v1/messages/count_tokens): the request
 * bodies, the message object, the stream's events (documented, not serialized by schema) and
 * Anthropic's error body. Message content blocks are checked block by block in
 * src/server/anthropic.ts, which names the failing one (`messages[1].content[0].tool_use_id`).
 */
import { Type, type Static } from 'typebox';
import { Nullable, OptionalNullable, SafeInteger, Unsupported } from './common.ts';

const MessagesFields = {
  model: Type.String({ minLength: 1, description: 'The served model (GET /v1/models); another name is a 404 not_found_error.' }),
  messages: Type.Array(Type.Unknown(), {
    minItems: 1,
    description: 'Turns of role user or assistant; content as text or blocks: text, tool_use (assistant), tool_result (user). Images, documents and thinking blocks are refused.',
  }),
  system: OptionalNullable(Type.Union([Type.String(), Type.Array(Type.Unknown())], { description: 'A system prompt: text, or text blocks joined by a newline.' })),
  tools: OptionalNullable(Type.Array(Type.Unknown(), { description: 'Client tools: [{name, description, input_schema}]; server tools (web search, code execution, ...) are refused.' })),
  tool_choice: OptionalNullable(Type.Unknown({ description: '{type: auto | any | tool (with name) | none, disable_parallel_tool_use}.' })),
};

export const MessagesRequest = Type.Object({
  ...MessagesFields,
  max_tokens: SafeInteger({ minimum: 1 }, 'Most tokens to generate (required, as in Anthropic\'s API).'),
  stop_sequences: OptionalNullable(Type.Array(Type.String(), { maxItems: 4, description: 'Up to 4 strings that end the message (stop_reason stop_sequence); the match is not returned.' })),
  stream: OptionalNullable(Type.Boolean({ description: 'Server-sent events: message_start, content blocks, message_delta, message_stop.' })),
  // Sampling fields of Anthropic's earlier API versions (its current clients no longer send them).
  temperature: OptionalNullable(Type.Number({ minimum: 0, maximum: 1, description: 'Default 1; 0 is greedy.' })),
  top_p: OptionalNullable(Type.Number({ minimum: 0, maximum: 1 })),
  top_k: OptionalNullable(SafeInteger({ minimum: 0 }, '0 disables.')),
  output_config: OptionalNullable(Type.Object({
    format: OptionalNullable(Type.Unknown({ description: '{type: "json_schema", schema}: the text is JSON valid against the schema (a grammar masks every token).' })),
    effort: Unsupported('null (Gemma 2 has no effort levels)'),
  }, { additionalProperties: false })),
  metadata: OptionalNullable(Type.Object({ user_id: OptionalNullable(Type.String()) }, { description: 'Accepted and ignored.' })),
  service_tier: OptionalNullable(Type.String({ description: 'Accepted and ignored.' })),
  cache_control: Type.Optional(Type.Unknown({ description: 'Accepted and ignored (prefix caching is automatic).' })),
  inference_geo: OptionalNullable(Type.String({ description: 'Accepted and ignored (inference runs on this server).' })),
  user_profile_id: OptionalNullable(Type.String({ description: 'Accepted and ignored.' })),
  workspace_id: OptionalNullable(Type.String({ description: 'Accepted and ignored.' })),
  speed: Unsupported('null or "standard"'),
  diagnostics: Unsupported('null'),
  thinking: Unsupported('null or {type: "disabled"} (Gemma 2 does not think)'),
  container: Unsupported('null'),
  mcp_servers: Unsupported('null or []'),
}, { additionalProperties: false });
export type MessagesBody = Static<typeof MessagesRequest>;

export const CountTokensRequest = Type.Object({
  ...MessagesFields,
  output_config: MessagesRequest.properties.output_config,
  cache_control: MessagesRequest.properties.cache_control,
  thinking: Unsupported('null or {type: "disabled"}'),
  mcp_servers: Unsupported('null or []'),
}, { additionalProperties: false });
export type CountTokensBody = Static<typeof CountTokensRequest>;

export const CountTokensResponse = Type.Object({
  input_tokens: Type.Integer({ description: 'The prompt\'s tokens: the chat template, the tool instructions and every turn.' }),
});

const TextBlock = Type.Object({ type: Type.Literal('text'), text: Type.String() });
const ToolUseBlock = Type.Object({
  type: Type.Literal('tool_use'),
  id: Type.String({ description: 'What the tool_result answering it names.' }),
  name: Type.String(),
  input: Type.Unknown({ description: 'The arguments (an object; {} when max_tokens cut them).' }),
});
export const ContentBlock = Type.Union([TextBlock, ToolUseBlock]);
export type ContentBlock = Static<typeof ContentBlock>;

export const StopReason = Type.Enum(['end_turn', 'max_tokens', 'stop_sequence', 'tool_use']);
export type StopReason = Static<typeof StopReason>;

export const MessagesUsage = Type.Object({
  input_tokens: Type.Integer({ description: 'Prompt tokens computed (those not read from the prefix cache).' }),
  output_tokens: Type.Integer(),
  cache_creation_input_tokens: Type.Integer({ description: 'Always 0: the prefix cache fills itself.' }),
  cache_read_input_tokens: Type.Integer({ description: 'Prompt tokens read from the prefix cache.' }),
});
export type MessagesUsage = Static<typeof MessagesUsage>;

// Property order is the JSON's: the response serializer writes properties in schema order.
export const MessageObject = Type.Object({
  id: Type.String(),
  type: Type.Literal('message'),
  role: Type.Literal('assistant'),
  model: Type.String(),
  content: Type.Array(ContentBlock),
  stop_reason: Nullable(StopReason),
  stop_sequence: Nullable(Type.String({ description: 'The stop sequence that matched (stop_reason stop_sequence).' })),
  usage: MessagesUsage,
});
export type MessageObject = Static<typeof MessageObject>;

export const MessagesStreamEvent = Type.Object({
  type: Type.String({ description: 'message_start, ping, content_block_start, content_block_delta (text_delta or input_json_delta), content_block_stop, message_delta, message_stop; error on a failure after the headers.' }),
}, { additionalProperties: true, description: 'One server-sent event (event: <type>, data: <event>) of a streamed message; the stream ends after message_stop or error.' });
export type MessagesStreamEvent = Static<typeof MessagesStreamEvent> & Readonly<Record<string, unknown>>;

export const AnthropicError = Type.Object({
  type: Type.Literal('error'),
  error: Type.Object({ type: Type.String({ description: 'invalid_request_error, authentication_error, not_found_error, request_too_large, rate_limit_error, api_error, overloaded_error.' }), message: Type.String() }),
}, { description: "Anthropic's error body." });
export type AnthropicError = Static<typeof AnthropicError>;
