/**
 * Validation of a /v1/chat/completions body: every field checked by hand, each failure an
 * InvalidRequestError naming the parameter, unknown fields rejected by name.
 */
import type { ChatMessage } from '../engine/chat-template.ts';
import { InvalidRequestError } from '../errors.ts';
import type { SamplingParams } from '../engine/sampling.ts';

export interface ChatRequest {
  readonly model: string;
  readonly messages: ChatMessage[];
  readonly maxTokens: number | undefined;
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number | undefined;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  readonly stop: string[];
  readonly sampling: Omit<SamplingParams, 'temperature' | 'topP'>;
  /** null: no logprobs; else the number of top alternatives (0..20). */
  readonly logprobs: number | null;
}

const KNOWN = new Set(['model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'seed', 'stream', 'stream_options', 'n', 'user', 'stop', 'top_k', 'min_p', 'presence_penalty', 'frequency_penalty', 'repetition_penalty', 'logit_bias', 'logprobs', 'top_logprobs']);

export function parseChatRequest(body: unknown): ChatRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InvalidRequestError('the request body must be a JSON object');
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).filter((k) => !KNOWN.has(k));
  if (unknown.length > 0) {
    throw new InvalidRequestError(`Unrecognized request argument${unknown.length > 1 ? 's' : ''} supplied: ${unknown.join(', ')}`, unknown[0]!, 'unknown_parameter');
  }
  const model = b['model'];
  if (typeof model !== 'string' || model === '') throw new InvalidRequestError('model: a model name (string) is required', 'model');
  const messages = parseMessages(b['messages']);
  const num = (key: string, min: number, max: number): number | undefined => {
    const v = b[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      throw new InvalidRequestError(`${key}: must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`, key);
    }
    return v;
  };
  const int = (key: string, min: number): number | undefined => {
    const v = b[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new InvalidRequestError(`${key}: must be an integer >= ${min}, got ${JSON.stringify(v)}`, key);
    return v;
  };
  const n = int('n', 1);
  if (n !== undefined && n !== 1) throw new InvalidRequestError('n: only n = 1 is supported', 'n', 'unsupported_value');
  const stream = b['stream'] ?? false;
  if (typeof stream !== 'boolean') throw new InvalidRequestError(`stream: must be a boolean, got ${JSON.stringify(stream)}`, 'stream');
  const so = b['stream_options'];
  let includeUsage = false;
  if (so !== undefined && so !== null) {
    if (typeof so !== 'object' || Array.isArray(so)) throw new InvalidRequestError('stream_options: must be an object', 'stream_options');
    const iu = (so as Record<string, unknown>)['include_usage'];
    if (iu !== undefined && typeof iu !== 'boolean') throw new InvalidRequestError('stream_options.include_usage: must be a boolean', 'stream_options.include_usage');
    includeUsage = iu === true;
  }
  if (b['user'] !== undefined && typeof b['user'] !== 'string') throw new InvalidRequestError('user: must be a string', 'user');
  const seed = int('seed', 0);
  const stop = parseStop(b['stop']);
  const topK = b['top_k'] === -1 ? 0 : int('top_k', 0) ?? 0;
  const repetitionPenalty = num('repetition_penalty', 0, 2) ?? 1;
  if (repetitionPenalty <= 0) throw new InvalidRequestError('repetition_penalty: must be > 0', 'repetition_penalty');
  const sampling = {
    topK,
    minP: num('min_p', 0, 1) ?? 0,
    presencePenalty: num('presence_penalty', -2, 2) ?? 0,
    frequencyPenalty: num('frequency_penalty', -2, 2) ?? 0,
    repetitionPenalty,
    logitBias: parseLogitBias(b['logit_bias']),
  };
  const lpFlag = b['logprobs'];
  if (lpFlag !== undefined && lpFlag !== null && typeof lpFlag !== 'boolean') throw new InvalidRequestError('logprobs: must be a boolean', 'logprobs');
  const topLogprobs = b['top_logprobs'] === undefined || b['top_logprobs'] === null ? undefined : num('top_logprobs', 0, 20);
  if (topLogprobs !== undefined && !Number.isInteger(topLogprobs)) throw new InvalidRequestError('top_logprobs: must be an integer from 0 to 20', 'top_logprobs');
  if (topLogprobs !== undefined && lpFlag !== true) throw new InvalidRequestError('top_logprobs: requires logprobs to be true', 'top_logprobs');
  return {
    model,
    messages,
    maxTokens: int('max_completion_tokens', 1) ?? int('max_tokens', 1),
    temperature: num('temperature', 0, 2) ?? 1,
    topP: num('top_p', 0, 1) ?? 1,
    seed: seed === undefined ? undefined : seed % 2 ** 32,
    stream,
    includeUsage,
    stop,
    sampling,
    logprobs: lpFlag === true ? topLogprobs ?? 0 : null,
  };
}

function parseStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return v === '' ? [] : [v];
  if (!Array.isArray(v) || v.length > 4 || !v.every((s) => typeof s === 'string')) {
    throw new InvalidRequestError('stop: must be a string or an array of up to 4 strings', 'stop');
  }
  return (v as string[]).filter((s) => s !== '');
}

function parseLogitBias(v: unknown): [number, number][] {
  if (v === undefined || v === null) return [];
  if (typeof v !== 'object' || Array.isArray(v)) throw new InvalidRequestError('logit_bias: must be an object mapping token ids to biases', 'logit_bias');
  return Object.entries(v as Record<string, unknown>).map(([k, bias]) => {
    if (!/^\d+$/.test(k) || !Number.isSafeInteger(Number(k))) throw new InvalidRequestError(`logit_bias: ${JSON.stringify(k)} is not a token id`, 'logit_bias');
    if (typeof bias !== 'number' || !Number.isFinite(bias) || bias < -100 || bias > 100) {
      throw new InvalidRequestError(`logit_bias: the bias of ${k} must be a number from -100 to 100`, 'logit_bias');
    }
    return [Number(k), bias];
  });
}

function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw new InvalidRequestError('messages: a non-empty array of messages is required', 'messages');
  return v.map((m: unknown, i) => {
    const p = `messages[${i}]`;
    if (typeof m !== 'object' || m === null) throw new InvalidRequestError(`${p}: must be an object`, p);
    const r = m as Record<string, unknown>;
    let role = r['role'];
    if (role === 'developer') role = 'system';
    if (role !== 'system' && role !== 'user' && role !== 'assistant') {
      throw new InvalidRequestError(`${p}.role: must be system, user or assistant, got ${JSON.stringify(r['role'])}`, `${p}.role`);
    }
    const c = r['content'];
    let content: string;
    if (typeof c === 'string') content = c;
    else if (Array.isArray(c)) {
      content = c.map((part: unknown, j) => {
        const pp = part as Record<string, unknown> | null;
        if (typeof pp !== 'object' || pp === null || pp['type'] !== 'text' || typeof pp['text'] !== 'string') {
          throw new InvalidRequestError(`${p}.content[${j}]: only {type: 'text', text} parts are supported`, `${p}.content`);
        }
        return pp['text'];
      }).join('');
    } else if (c === null && role === 'assistant') content = '';
    else throw new InvalidRequestError(`${p}.content: must be a string or an array of text parts`, `${p}.content`);
    return { role, content };
  });
}
