/**
 * Ollama's API (its docs/api.md): the bodies of POST /api/generate, /api/chat and /api/show,
 * the `options` object, and the responses of those and of GET /api/tags, /api/ps and
 * /api/version. Optional fields also take null (Python clients send None for "not set").
 * Every documented Ollama option is declared with its type, so a wrong type is a 400 naming
 * it; the ones gemma-serve does not apply are accepted and ignored (ollama/options.ts maps
 * the rest; docs/API.md "Ollama API" has the table).
 */
import { Type, type Static } from 'typebox';
import { OptionalNullable } from './common.ts';

const ignored = (what: string) => ({ description: `Accepted and ignored (${what}).` });
const Int = (description: string) => OptionalNullable(Type.Integer({ description }));
const Num = (description: string, range: { minimum?: number; maximum?: number } = {}) => OptionalNullable(Type.Number({ ...range, description }));

/** Ollama's options (its Modelfile parameters and runner settings). */
export const OllamaOptions = Type.Object({
  num_predict: Int('Most tokens to generate; -1, -2 or 0: until the context is full (Ollama: -1 unlimited, -2 fill the context).'),
  temperature: Num('Default 0.8 (Ollama\'s); 0 is greedy.', { minimum: 0 }),
  top_k: Int('Default 40; 0 or less disables.'),
  top_p: Num('Default 0.9; 1 disables.', { minimum: 0, maximum: 1 }),
  min_p: Num('Default 0; 0 disables.', { minimum: 0, maximum: 1 }),
  seed: Int('Sampling seed (taken mod 2^32); a negative seed is a random one.'),
  stop: OptionalNullable(Type.Union([Type.String(), Type.Array(Type.String())], { description: 'Stop strings; the match is not returned.' })),
  repeat_penalty: Num('llama.cpp\'s repetition penalty over the last repeat_last_n tokens (default 1.1; 1 disables).', { minimum: 0 }),
  repeat_last_n: Int('The window of the three penalties, in tokens of the prompt and output (default 64; 0 disables the penalties; -1: the whole context).'),
  presence_penalty: Num('Subtracted once from every token in the window (default 0).'),
  frequency_penalty: Num('Subtracted per occurrence in the window (default 0).'),
  num_ctx: Int('The context for this request, at most the model\'s (larger is capped there, as Ollama does); default: the model\'s whole context.'),
  num_keep: OptionalNullable(Type.Integer(ignored('no context shifting: a prompt that does not fit is refused'))),
  typical_p: OptionalNullable(Type.Number(ignored('not implemented'))),
  tfs_z: OptionalNullable(Type.Number(ignored('removed from llama.cpp'))),
  mirostat: OptionalNullable(Type.Integer(ignored('not implemented'))),
  mirostat_tau: OptionalNullable(Type.Number(ignored('not implemented'))),
  mirostat_eta: OptionalNullable(Type.Number(ignored('not implemented'))),
  penalize_newline: OptionalNullable(Type.Boolean(ignored('removed from llama.cpp'))),
  numa: OptionalNullable(Type.Boolean(ignored('runner setting'))),
  num_batch: OptionalNullable(Type.Integer(ignored('runner setting: see --max-num-batched-tokens'))),
  num_gpu: OptionalNullable(Type.Integer(ignored('runner setting: see --device'))),
  main_gpu: OptionalNullable(Type.Integer(ignored('runner setting'))),
  low_vram: OptionalNullable(Type.Boolean(ignored('runner setting'))),
  f16_kv: OptionalNullable(Type.Boolean(ignored('runner setting: see --kv-dtype'))),
  logits_all: OptionalNullable(Type.Boolean(ignored('runner setting'))),
  vocab_only: OptionalNullable(Type.Boolean(ignored('runner setting'))),
  use_mmap: OptionalNullable(Type.Boolean(ignored('runner setting'))),
  use_mlock: OptionalNullable(Type.Boolean(ignored('runner setting'))),
  embedding_only: OptionalNullable(Type.Boolean(ignored('runner setting'))),
  num_thread: OptionalNullable(Type.Integer(ignored('runner setting: see --threads'))),
}, { additionalProperties: false, description: "Ollama's options; the runner settings and the samplers gemma-serve lacks are accepted and ignored." });
export type OllamaOptions = Static<typeof OllamaOptions>;

/** The fields /api/generate and /api/chat share. */
const commonFields = {
  model: Type.String({ minLength: 1, description: 'A served model name (GET /api/tags); `name` also means `name:latest`. Another name is a 404.' }),
  stream: OptionalNullable(Type.Boolean({ description: 'Default true: newline-delimited JSON objects, the last with done: true. false: one JSON object.' })),
  format: OptionalNullable(Type.Union([Type.String(), Type.Record(Type.String(), Type.Unknown())], { description: '"json" (any JSON object) or a JSON Schema the output follows (structured output); "" is none.' })),
  options: OptionalNullable(OllamaOptions),
  keep_alive: OptionalNullable(Type.Union([Type.String(), Type.Number()], { description: 'Accepted and ignored: the model stays loaded for the life of the server.' })),
  think: OptionalNullable(Type.Union([Type.Boolean(), Type.String()], { description: 'Gemma 2 does not think: only false is accepted.' })),
  logprobs: OptionalNullable(Type.Boolean({ description: 'Not supported: only false is accepted.' })),
  top_logprobs: OptionalNullable(Type.Integer({ description: 'Not supported: only 0 is accepted.' })),
};

const Images = OptionalNullable(Type.Array(Type.String(), { description: 'Refused unless empty: Gemma 2 reads no images.' }));

export const OllamaGenerateRequest = Type.Object({
  ...commonFields,
  prompt: OptionalNullable(Type.String({ description: 'The prompt; empty (or absent) only loads the model, as in Ollama.' })),
  suffix: OptionalNullable(Type.String({ description: 'Refused unless empty: Gemma 2 has no fill-in-the-middle template.' })),
  system: OptionalNullable(Type.String({ description: 'A system message before the prompt (Gemma\'s template folds it into the user turn).' })),
  template: OptionalNullable(Type.String({ description: 'Refused unless empty: the checkpoint\'s own chat template is used (or none with raw).' })),
  context: OptionalNullable(Type.Array(Type.Integer(), { description: 'Deprecated in Ollama and never returned here: refused unless empty.' })),
  raw: OptionalNullable(Type.Boolean({ description: 'true: the prompt is tokenized as is (after <bos>), no template; system is then refused.' })),
  images: Images,
}, { additionalProperties: false });
export type OllamaGenerateBody = Static<typeof OllamaGenerateRequest>;

export const OllamaToolCall = Type.Object({
  id: OptionalNullable(Type.String()),
  type: OptionalNullable(Type.Literal('function')),
  function: Type.Object({
    index: OptionalNullable(Type.Integer()),
    name: Type.String(),
    arguments: Type.Record(Type.String(), Type.Unknown(), { description: 'The arguments as an object.' }),
  }),
});
export type OllamaToolCall = Static<typeof OllamaToolCall>;

export const OllamaMessage = Type.Object({
  role: Type.Enum(['system', 'user', 'assistant', 'tool']),
  content: Type.String(),
  images: Images,
  thinking: OptionalNullable(Type.String({ description: 'Accepted and ignored (Gemma 2 does not think).' })),
  tool_calls: OptionalNullable(Type.Array(OllamaToolCall, { description: 'Calls an assistant turn made.' })),
  tool_name: OptionalNullable(Type.String({ description: 'On a tool message: the tool whose result it is.' })),
  tool_call_id: OptionalNullable(Type.String({ description: 'On a tool message: the call it answers.' })),
}, { additionalProperties: false });

export const OllamaChatRequest = Type.Object({
  ...commonFields,
  messages: OptionalNullable(Type.Array(OllamaMessage, { description: 'The conversation; empty (or absent) only loads the model, as in Ollama.' })),
  tools: OptionalNullable(Type.Array(Type.Unknown(), { description: 'Functions the model may call (OpenAI\'s tool shape); calls come back in message.tool_calls.' })),
}, { additionalProperties: false });
export type OllamaChatBody = Static<typeof OllamaChatRequest>;

/** The counters of a finished response (Ollama's; durations in nanoseconds). */
const Final = {
  done_reason: Type.Optional(Type.String({ description: 'stop, length, or load (an empty request).' })),
  total_duration: Type.Optional(Type.Integer({ description: 'ns from the request\'s start to its end.' })),
  load_duration: Type.Optional(Type.Integer({ description: 'ns spent loading the model for this request: 0 (it is loaded once, at startup).' })),
  prompt_eval_count: Type.Optional(Type.Integer({ description: 'Prompt tokens.' })),
  prompt_eval_duration: Type.Optional(Type.Integer({ description: 'ns from the scheduler admitting the sequence to its first generated token (the prefill).' })),
  eval_count: Type.Optional(Type.Integer({ description: 'Generated tokens.' })),
  eval_duration: Type.Optional(Type.Integer({ description: 'ns from the first generated token to the last.' })),
};

const Base = {
  model: Type.String(),
  created_at: Type.String({ description: 'RFC 3339 time.' }),
  done: Type.Boolean(),
};

export const OllamaGenerateResponse = Type.Object({ ...Base, response: Type.String(), ...Final });
export type OllamaGenerateResponse = Static<typeof OllamaGenerateResponse>;

export const OllamaResponseMessage = Type.Object({
  role: Type.Literal('assistant'),
  content: Type.String(),
  tool_calls: Type.Optional(Type.Array(OllamaToolCall)),
});

export const OllamaChatResponse = Type.Object({ ...Base, message: OllamaResponseMessage, ...Final });
export type OllamaChatResponse = Static<typeof OllamaChatResponse>;

export const OllamaModelDetails = Type.Object({
  parent_model: Type.String(),
  format: Type.String(),
  family: Type.String(),
  families: Type.Array(Type.String()),
  parameter_size: Type.String(),
  quantization_level: Type.String(),
});

export const OllamaModel = Type.Object({
  name: Type.String(),
  model: Type.String(),
  modified_at: Type.String(),
  size: Type.Integer({ description: 'Bytes of the export\'s files.' }),
  digest: Type.String(),
  details: OllamaModelDetails,
});

export const OllamaTags = Type.Object({ models: Type.Array(OllamaModel) });
export type OllamaTags = Static<typeof OllamaTags>;

export const OllamaRunningModel = Type.Object({
  ...OllamaModel.properties,
  expires_at: Type.String({ description: 'Far in the future: the model stays loaded.' }),
  size_vram: Type.Integer({ description: 'Bytes on the GPU (0 on the CPU).' }),
  context_length: Type.Integer(),
});

export const OllamaPs = Type.Object({ models: Type.Array(OllamaRunningModel) });
export type OllamaPs = Static<typeof OllamaPs>;

export const OllamaShowRequest = Type.Object({
  model: OptionalNullable(Type.String({ minLength: 1 })),
  name: OptionalNullable(Type.String({ minLength: 1, description: 'Older clients\' name for model.' })),
  verbose: OptionalNullable(Type.Boolean({ description: 'Accepted; the response is the same.' })),
  system: OptionalNullable(Type.String({ description: 'Accepted and ignored.' })),
  template: OptionalNullable(Type.String({ description: 'Accepted and ignored.' })),
  options: OptionalNullable(Type.Record(Type.String(), Type.Unknown(), { description: 'Accepted and ignored.' })),
}, { additionalProperties: false });
export type OllamaShowBody = Static<typeof OllamaShowRequest>;

export const OllamaShowResponse = Type.Object({
  license: Type.String(),
  modelfile: Type.String(),
  parameters: Type.String(),
  template: Type.String({ description: 'The checkpoint\'s chat template (Jinja, not Go template syntax).' }),
  system: Type.String(),
  details: OllamaModelDetails,
  model_info: Type.Record(Type.String(), Type.Unknown()),
  capabilities: Type.Array(Type.String()),
  modified_at: Type.String(),
});
export type OllamaShowResponse = Static<typeof OllamaShowResponse>;

export const OllamaVersion = Type.Object({ version: Type.String({ description: 'The Ollama API version this server follows.' }) });
