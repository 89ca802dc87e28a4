/**
 * An Ollama request's settings read into the engine's: `options` mapped onto GenerationParams
 * (Ollama's defaults where a value is absent: temperature 0.8, top_k 40, top_p 0.9,
 * repeat_penalty 1.1 over the last 64 tokens), `num_ctx` and `num_predict` onto the token
 * budget of one prompt, `format` onto a structured-output Constraint, and the fields Gemma 2
 * cannot honour (images, template, suffix, context, think, logprobs) refused by name unless
 * their value changes nothing. docs/API.md "Ollama API" has the mapping table.
 */
import type { Engine } from '../../engine/engine.ts';
import type { Constraint } from '../../engine/grammar/constraint.ts';
import { InvalidRequestError } from '../../errors.ts';
import type { GenerationParams } from '../request-fields.ts';
import type { OllamaOptions } from '../schemas/ollama.ts';

/** Ollama's sampling defaults (its api.DefaultOptions), used where a request leaves them out. */
export const OLLAMA_DEFAULTS = { temperature: 0.8, topK: 40, topP: 0.9, repeatPenalty: 1.1, repeatLastN: 64 } as const;

/** What Ollama's requests share, as validated by their schemas. */
export interface OllamaCommonBody {
  readonly model: string;
  readonly stream?: boolean | null;
  readonly format?: string | Readonly<Record<string, unknown>> | null;
  readonly options?: OllamaOptions | null;
  readonly think?: boolean | string | null;
  readonly logprobs?: boolean | null;
  readonly top_logprobs?: number | null;
}

/** The generation settings of an Ollama request (n is always 1). `numCtx`: the context it asks for, if any. */
export interface OllamaParams extends GenerationParams {
  readonly numCtx: number | undefined;
  readonly constraint: Constraint | null;
}

/** A 400 naming `param`: Ollama's field cannot be honoured by gemma-serve. */
function unsupported(param: string, why: string): InvalidRequestError {
  return new InvalidRequestError(`${param}: ${why}`, param, 'unsupported_parameter');
}

/** Refuses a field whose value would change the output but cannot be honoured (null, '', [] and false change nothing). */
export function refuseUnless(value: unknown, param: string, why: string): void {
  if (value === undefined || value === null || value === '' || value === false) return;
  if (Array.isArray(value) && value.length === 0) return;
  throw unsupported(param, why);
}

export function parseOllamaParams(body: OllamaCommonBody): OllamaParams {
  refuseUnless(body.think, 'think', 'Gemma 2 does not think (only false is accepted)');
  refuseUnless(body.logprobs, 'logprobs', 'not supported on the Ollama API (use /v1/chat/completions)');
  refuseUnless(body.top_logprobs === 0 ? null : body.top_logprobs, 'top_logprobs', 'not supported on the Ollama API (use /v1/chat/completions)');
  const o = body.options ?? {};
  const stop = o.stop ?? [];
  const window = o.repeat_last_n ?? OLLAMA_DEFAULTS.repeatLastN;
  // repeat_last_n 0 turns the penalties off in llama.cpp; -1 means the whole context.
  const penalties = window !== 0;
  if (window < -1) throw new InvalidRequestError(`options.repeat_last_n: must be -1 (the whole context), 0 (off) or a window in tokens, got ${window}`, 'options.repeat_last_n');
  if (o.num_ctx != null && o.num_ctx < 1) throw new InvalidRequestError(`options.num_ctx: must be at least 1, got ${o.num_ctx}`, 'options.num_ctx');
  const seed = o.seed == null || o.seed < 0 ? undefined : o.seed % 2 ** 32;
  return {
    model: body.model,
    // Ollama: -1 generates until the end, -2 fills the context; 0 is no limit in its runner.
    maxTokens: o.num_predict == null || o.num_predict <= 0 ? undefined : o.num_predict,
    temperature: o.temperature ?? OLLAMA_DEFAULTS.temperature,
    topP: o.top_p ?? OLLAMA_DEFAULTS.topP,
    seed,
    n: 1,
    stream: body.stream ?? true,
    includeUsage: false,
    stop: (typeof stop === 'string' ? [stop] : stop).filter((s) => s !== ''),
    sampling: {
      topK: Math.max(0, o.top_k ?? OLLAMA_DEFAULTS.topK),
      minP: o.min_p ?? 0,
      presencePenalty: penalties ? o.presence_penalty ?? 0 : 0,
      frequencyPenalty: penalties ? o.frequency_penalty ?? 0 : 0,
      repetitionPenalty: penalties ? o.repeat_penalty ?? OLLAMA_DEFAULTS.repeatPenalty : 1,
      logitBias: [],
      penaltyLastN: window === -1 ? -1 : window,
    },
    ignoreEos: false,
    minTokens: 0,
    priority: 0,
    numCtx: o.num_ctx ?? undefined,
    constraint: formatConstraint(body.format),
  };
}

/** Ollama's `format`: "json" is any JSON object, an object is a JSON Schema; "" and null are none. */
export function formatConstraint(format: OllamaCommonBody['format']): Constraint | null {
  if (format == null || format === '') return null;
  if (typeof format === 'string') {
    if (format === 'json') return { kind: 'json_object', param: 'format' };
    throw new InvalidRequestError(`format: must be "json" or a JSON Schema object, got ${JSON.stringify(format.slice(0, 40))}`, 'format');
  }
  // Strict as on the OpenAI routes: no properties the schema does not list.
  return { kind: 'json_schema', schema: format, strict: true, param: 'format' };
}

/**
 * The most tokens to generate for a prompt of `promptTokens`: num_predict, cut to what is
 * left of num_ctx (capped at the model's context, as Ollama caps it) and of what the KV cache
 * holds for one sequence, so a long num_predict ends with done_reason length as in Ollama.
 * undefined: the engine's default (the rest of the context). A prompt that leaves no room in
 * num_ctx is a 400 naming options.num_ctx (Ollama would cut the prompt; gemma-serve never
 * drops text silently); one over the model's context is the engine's 400.
 */
export function tokenBudget(engine: Engine, params: OllamaParams, promptTokens: number): number | undefined {
  const ctx = Math.min(params.numCtx ?? engine.contextLength, engine.contextLength);
  if (params.numCtx !== undefined && promptTokens >= ctx) {
    throw new InvalidRequestError(`options.num_ctx: the prompt has ${promptTokens} tokens, which leaves no room in a context of ${ctx}`, 'options.num_ctx', 'context_length_exceeded');
  }
  const room = Math.min(ctx, Math.max(engine.maxSequenceTokens, promptTokens + 1)) - promptTokens;
  if (room <= 0 || (params.maxTokens === undefined && params.numCtx === undefined)) return params.maxTokens;
  return Math.min(params.maxTokens ?? room, room);
}
