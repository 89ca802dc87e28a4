/**
 * What /v1/chat/completions and /v1/completions share after schema validation
 * (schemas/common.ts): the generation and sampling fields read into GenerationParams with
 * their defaults, the rules no schema states (stream_options only with stream; known OpenAI
 * fields refused unless their value is harmless), and the served-model check.
 */
import type { SamplingParams } from '../engine/sampling.ts';
import { GemmaServeError, InvalidRequestError } from '../errors.ts';
import { matchModelName } from './model-names.ts';
import type { GenerationBody } from './schemas/common.ts';

/** Generation settings common to both endpoints, validated. */
export interface GenerationParams {
  readonly model: string;
  /** undefined: the rest of the context. */
  readonly maxTokens: number | undefined;
  readonly temperature: number;
  readonly topP: number;
  /** Choice i of n uses seed + i (mod 2^32). */
  readonly seed: number | undefined;
  readonly n: number;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  readonly stop: string[];
  readonly sampling: Omit<SamplingParams, 'temperature' | 'topP'>;
  readonly ignoreEos: boolean;
  readonly minTokens: number;
  /** vLLM's `priority`: lower is scheduled sooner (default 0). */
  readonly priority: number;
}

/** Known OpenAI fields we cannot honour yet, each with the test for the values that change nothing. */
export type UnsupportedFields = ReadonlyMap<string, (v: unknown) => boolean>;

/**
 * A 400 unsupported_parameter for the first field of `unsupported` set (not null) to a value
 * that is not harmless. `prefix` names the object (`messages[0]`), '' for the body. Walks the
 * body's own keys (a dozen) rather than every unsupported field: this runs per request and per message.
 */
export function rejectUnsupported(body: Readonly<Record<string, unknown>>, unsupported: UnsupportedFields, prefix = ''): void {
  for (const key in body) {
    const harmless = unsupported.get(key);
    if (harmless === undefined) continue;
    const v = body[key];
    if (v !== undefined && v !== null && !harmless(v)) {
      const name = prefix === '' ? key : `${prefix}.${key}`;
      throw new InvalidRequestError(`${name}: not supported by gemma-serve yet`, name, 'unsupported_parameter');
    }
  }
}

/** The shared fields of a schema-validated body, with their defaults. `maxTokens`: the body's max_tokens (or chat's max_completion_tokens). */
export function parseGenerationParams(body: GenerationBody, maxTokens: number | null | undefined): GenerationParams {
  const stream = body.stream ?? false;
  const so = body.stream_options;
  if (so != null) {
    if (so.continuous_usage_stats === true) {
      throw new InvalidRequestError('stream_options.continuous_usage_stats: not supported', 'stream_options.continuous_usage_stats', 'unsupported_parameter');
    }
    if (!stream) throw new InvalidRequestError('stream_options: only allowed when stream is true', 'stream_options');
  }
  const stop = body.stop ?? [];
  return {
    model: body.model,
    maxTokens: maxTokens ?? undefined,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    seed: body.seed == null ? undefined : ((body.seed % 2 ** 32) + 2 ** 32) % 2 ** 32,
    n: body.n ?? 1,
    stream,
    includeUsage: so?.include_usage ?? false,
    stop: (typeof stop === 'string' ? [stop] : stop).filter((s) => s !== ''),
    sampling: {
      topK: body.top_k === -1 ? 0 : body.top_k ?? 0,
      minP: body.min_p ?? 0,
      presencePenalty: body.presence_penalty ?? 0,
      frequencyPenalty: body.frequency_penalty ?? 0,
      repetitionPenalty: body.repetition_penalty ?? 1,
      logitBias: Object.entries(body.logit_bias ?? {}).map(([id, bias]) => [Number(id), bias]),
    },
    ignoreEos: body.ignore_eos ?? false,
    minTokens: body.min_tokens ?? 0,
    priority: body.priority ?? 0,
  };
}

/** A 404 model_not_found unless `model` is one of the served names (model-names.ts: `name` also matches `name:latest`). */
export function checkModel(served: readonly string[], model: string): void {
  if (matchModelName(served, model) === undefined) {
    const names = served.map((n) => `'${n}'`).join(', ');
    throw new GemmaServeError(`The model '${model}' does not exist. This server serves ${names}.`, 'model_not_found', 404, 'invalid_request_error', 'model');
  }
}
