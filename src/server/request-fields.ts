/**
 * What /v1/chat/completions and /v1/completions share: reading a JSON body field by field
 * (each failure an InvalidRequestError naming the parameter), the generation and sampling
 * fields both endpoints take, and the rule for fields we do not know or do not support:
 * unknown fields are rejected by name (as OpenAI does); fields that would change the output
 * but are not implemented are rejected by name; metadata-only fields are accepted.
 */
import type { SamplingParams } from '../engine/sampling.ts';
import { GemmaServeError, InvalidRequestError } from '../errors.ts';

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

/** Accepted and ignored: they describe the request, they do not change its output. */
const METADATA_FIELDS = ['user', 'metadata', 'store', 'service_tier', 'prompt_cache_key', 'safety_identifier'];

const GENERATION_FIELDS = [
  'model', 'stream', 'stream_options', 'n', 'max_tokens', 'temperature', 'top_p', 'seed', 'stop',
  'presence_penalty', 'frequency_penalty', 'logit_bias', 'top_k', 'min_p', 'repetition_penalty', 'ignore_eos', 'min_tokens', 'priority',
];

/** Most choices per request (vLLM and OpenAI allow 128). */
export const MAX_N = 128;

/** Typed access to one JSON object's fields; every failure names the field. */
export class FieldReader {
  readonly body: Readonly<Record<string, unknown>>;

  constructor(body: unknown, private readonly prefix = '') {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new InvalidRequestError(prefix === '' ? 'the request body must be a JSON object' : `${prefix}: must be an object`, prefix || null);
    }
    this.body = body as Record<string, unknown>;
  }

  name(key: string): string {
    return this.prefix === '' ? key : `${this.prefix}.${key}`;
  }

  /** null and absent read as undefined. */
  get(key: string): unknown {
    const v = this.body[key];
    return v === null ? undefined : v;
  }

  num(key: string, min: number, max: number): number | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      throw new InvalidRequestError(`${this.name(key)}: must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`, this.name(key));
    }
    return v;
  }

  int(key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
      throw new InvalidRequestError(`${this.name(key)}: must be an integer ${range}, got ${JSON.stringify(v)}`, this.name(key));
    }
    return v;
  }

  bool(key: string): boolean | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw new InvalidRequestError(`${this.name(key)}: must be a boolean, got ${JSON.stringify(v)}`, this.name(key));
    return v;
  }

  str(key: string): string | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new InvalidRequestError(`${this.name(key)}: must be a string, got ${JSON.stringify(v)}`, this.name(key));
    return v;
  }

  /**
   * Rejects fields outside `known` (400 unknown_parameter) and, among known ones, those in
   * `unsupported` whose value is not their harmless default (400 unsupported_parameter).
   */
  checkFields(known: Iterable<string>, unsupported: Readonly<Record<string, (v: unknown) => boolean>> = {}): void {
    const ok = new Set(known);
    const unknown = Object.keys(this.body).filter((k) => !ok.has(k) && !Object.hasOwn(unsupported, k));
    if (unknown.length > 0) {
      throw new InvalidRequestError(
        `Unrecognized request argument${unknown.length > 1 ? 's' : ''} supplied: ${unknown.map((k) => this.name(k)).join(', ')}`,
        this.name(unknown[0]!), 'unknown_parameter');
    }
    for (const [key, harmless] of Object.entries(unsupported)) {
      const v = this.body[key];
      if (v !== undefined && v !== null && !harmless(v)) {
        throw new InvalidRequestError(`${this.name(key)}: not supported by gemma-serve yet`, this.name(key), 'unsupported_parameter');
      }
    }
  }
}

/** The fields generation endpoints accept besides their own. */
export function generationFieldNames(): string[] {
  return [...GENERATION_FIELDS, ...METADATA_FIELDS];
}

/** Reads and validates the fields both endpoints share. */
/** `minMaxTokens`: the smallest max_tokens accepted (0 on /v1/completions: echo-only scoring). */
export function parseGenerationParams(r: FieldReader, maxTokensKeys: readonly string[] = ['max_tokens'], minMaxTokens = 1): GenerationParams {
  const model = r.get('model');
  if (typeof model !== 'string' || model === '') throw new InvalidRequestError('model: a model name (string) is required', 'model');
  const stream = r.bool('stream') ?? false;
  let includeUsage = false;
  if (r.get('stream_options') !== undefined) {
    const so = new FieldReader(r.get('stream_options'), 'stream_options');
    so.checkFields(['include_usage', 'continuous_usage_stats']);
    if (so.bool('continuous_usage_stats') === true) {
      throw new InvalidRequestError('stream_options.continuous_usage_stats: not supported', 'stream_options.continuous_usage_stats', 'unsupported_parameter');
    }
    includeUsage = so.bool('include_usage') ?? false;
    if (!stream) throw new InvalidRequestError('stream_options: only allowed when stream is true', 'stream_options');
  }
  if (r.get('user') !== undefined) r.str('user');
  if (r.get('metadata') !== undefined && (typeof r.get('metadata') !== 'object' || Array.isArray(r.get('metadata')))) {
    throw new InvalidRequestError('metadata: must be an object of string values', 'metadata');
  }
  if (r.get('store') !== undefined) r.bool('store');
  if (r.get('service_tier') !== undefined) r.str('service_tier');
  const seed = r.int('seed', -(2 ** 63), 2 ** 64);
  const topK = r.get('top_k') === -1 ? 0 : r.int('top_k', 0) ?? 0;
  const repetitionPenalty = r.num('repetition_penalty', 0, 2) ?? 1;
  if (repetitionPenalty <= 0) throw new InvalidRequestError('repetition_penalty: must be > 0', 'repetition_penalty');
  let maxTokens: number | undefined;
  for (const key of maxTokensKeys) maxTokens ??= r.int(key, minMaxTokens);
  return {
    model,
    maxTokens,
    temperature: r.num('temperature', 0, 2) ?? 1,
    topP: r.num('top_p', 0, 1) ?? 1,
    seed: seed === undefined ? undefined : ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32,
    n: r.int('n', 1, MAX_N) ?? 1,
    stream,
    includeUsage,
    stop: parseStop(r.get('stop')),
    sampling: {
      topK,
      minP: r.num('min_p', 0, 1) ?? 0,
      presencePenalty: r.num('presence_penalty', -2, 2) ?? 0,
      frequencyPenalty: r.num('frequency_penalty', -2, 2) ?? 0,
      repetitionPenalty,
      logitBias: parseLogitBias(r.get('logit_bias')),
    },
    ignoreEos: r.bool('ignore_eos') ?? false,
    minTokens: r.int('min_tokens', 0) ?? 0,
    priority: r.int('priority', -(2 ** 31), 2 ** 31) ?? 0,
  };
}

function parseStop(v: unknown): string[] {
  if (v === undefined) return [];
  if (typeof v === 'string') return v === '' ? [] : [v];
  if (!Array.isArray(v) || v.length > 4 || !v.every((s) => typeof s === 'string')) {
    throw new InvalidRequestError('stop: must be a string or an array of up to 4 strings', 'stop');
  }
  return (v as string[]).filter((s) => s !== '');
}

function parseLogitBias(v: unknown): [number, number][] {
  if (v === undefined) return [];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidRequestError('logit_bias: must be an object mapping token ids to biases', 'logit_bias');
  return Object.entries(v as Record<string, unknown>).map(([k, bias]) => {
    if (!/^\d+$/.test(k) || !Number.isSafeInteger(Number(k))) throw new InvalidRequestError(`logit_bias: ${JSON.stringify(k)} is not a token id`, 'logit_bias');
    if (typeof bias !== 'number' || !Number.isFinite(bias) || bias < -100 || bias > 100) {
      throw new InvalidRequestError(`logit_bias: the bias of ${k} must be a number from -100 to 100`, 'logit_bias');
    }
    return [Number(k), bias];
  });
}

/** A 404 model_not_found unless `model` is the one served. */
export function checkModel(served: string, model: string): void {
  if (model !== served) {
    throw new GemmaServeError(`The model '${model}' does not exist. This server serves '${served}'.`, 'model_not_found', 404, 'invalid_request_error', 'model');
  }
}
