/**
 * POST /v1/completions (OpenAI's legacy text completions): the prompt as a string, an array of
 * strings, an array of token ids or an array of those; `n` choices per prompt (choice index =
 * prompt * n + i); `echo` puts the prompt before the completion, and with `logprobs` scores
 * the prompt's tokens too (the first token has none). Text prompts get `<bos>` first, as the
 * Hugging Face tokenizer adds it; token prompts are used as they are.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Detokenizer } from '../../engine/detokenizer.ts';
import type { Engine } from '../../engine/engine.ts';
import type { TokenLogprobs } from '../../engine/worker.ts';
import { InvalidRequestError } from '../../errors.ts';
import { startChoices, UsageCounter, type ChoiceObserver } from '../choices.ts';
import type { EngineState } from '../engine-state.ts';
import { checkModel, FieldReader, generationFieldNames, parseGenerationParams, type GenerationParams } from '../request-fields.ts';
import { postGeneration } from '../generation-route.ts';
import { systemFingerprint } from './chat-completions.ts';

/** OpenAI's default for /v1/completions (chat's default is the rest of the context). */
export const DEFAULT_COMPLETION_MAX_TOKENS = 16;

export interface CompletionRequest extends GenerationParams {
  /** Always set: DEFAULT_COMPLETION_MAX_TOKENS when the request has none. */
  readonly maxTokens: number;
  /** Each prompt's token ids and the text echo shows for it. */
  readonly prompts: readonly Prompt[];
  readonly echo: boolean;
  /** null: no logprobs; else the number of top alternatives (0..20). */
  readonly logprobs: number | null;
}

interface Prompt {
  readonly ids: number[];
  /** What echo shows: a text prompt as given, a token prompt decoded. */
  readonly text: string;
  /** Leading ids that `text` does not show (the `<bos>` added to a text prompt). */
  readonly hidden: number;
}

const UNSUPPORTED: Readonly<Record<string, (v: unknown) => boolean>> = {
  suffix: (v) => v === '',
};

export function parseCompletionRequest(engine: Engine, body: unknown): CompletionRequest {
  const r = new FieldReader(body);
  r.checkFields([...generationFieldNames(), 'prompt', 'echo', 'logprobs', 'best_of'], UNSUPPORTED);
  // max_tokens 0 generates nothing: with echo and logprobs, the prompt is scored (lm-eval's loglikelihood).
  const params = parseGenerationParams(r, ['max_tokens'], 0);
  const bestOf = r.int('best_of', 1);
  if (bestOf !== undefined && bestOf !== params.n) {
    throw new InvalidRequestError('best_of: only best_of equal to n is supported', 'best_of', 'unsupported_parameter');
  }
  return {
    ...params,
    maxTokens: params.maxTokens ?? DEFAULT_COMPLETION_MAX_TOKENS,
    prompts: parsePrompts(engine, r.get('prompt')),
    echo: r.bool('echo') ?? false,
    logprobs: r.int('logprobs', 0, 20) ?? null,
  };
}

function parsePrompts(engine: Engine, v: unknown): Prompt[] {
  const bad = (): never => {
    throw new InvalidRequestError('prompt: must be a string, an array of strings, an array of token ids or an array of token id arrays', 'prompt');
  };
  const fromText = (text: string): Prompt => ({ ids: [engine.tokenizer.bosId, ...engine.tokenizer.encode(text)], text, hidden: 1 });
  const fromIds = (ids: unknown[]): Prompt => {
    if (ids.length === 0) throw new InvalidRequestError('prompt: a token id array must not be empty', 'prompt');
    for (const id of ids) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= engine.vocabSize) {
        throw new InvalidRequestError(`prompt: ${JSON.stringify(id)} is not a token id (0..${engine.vocabSize - 1})`, 'prompt');
      }
    }
    const list = ids as number[];
    return { ids: list, text: engine.tokenizer.decode(list), hidden: 0 };
  };
  if (typeof v === 'string') return [fromText(v)];
  if (!Array.isArray(v) || v.length === 0) return bad();
  if (v.every((p) => typeof p === 'string')) return (v as string[]).map(fromText);
  if (v.every((p) => typeof p === 'number')) return [fromIds(v)];
  if (v.every((p) => Array.isArray(p))) return (v as unknown[][]).map(fromIds);
  return bad();
}

/** OpenAI's legacy logprobs object for a run of tokens. */
interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/** Builds legacy logprobs token by token, tracking each choice's text offset. */
class LegacyLogprobsBuilder {
  constructor(private readonly engine: Engine) {}

  empty(): LegacyLogprobs {
    return { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  }

  push(into: LegacyLogprobs, tokenId: number, lp: TokenLogprobs | null, offset: number): void {
    const decode = (id: number): string => this.engine.tokenizer.decode([id]);
    into.tokens.push(decode(tokenId));
    into.token_logprobs.push(lp === null ? null : lp.logprob);
    into.top_logprobs.push(lp === null ? null : Object.fromEntries(lp.top.map((t) => [decode(t.id), t.logprob])));
    into.text_offset.push(offset);
  }

  /**
   * The echoed prompt's entries: token i > 0 scored by entries[i - 1]. Offsets index the echoed
   * text (the text emitted before the token), so the hidden leading ids (a text prompt's `<bos>`)
   * sit at 0.
   */
  prompt(p: Prompt, entries: readonly TokenLogprobs[]): LegacyLogprobs {
    const out = this.empty();
    // Offsets from an incremental detokenizer: linear in the prompt's length, not a decode per prefix.
    const detokenizer = new Detokenizer(this.engine.tokenizer, false);
    let offset = 0;
    p.ids.forEach((id, i) => {
      this.push(out, id, i === 0 ? null : entries[i - 1] ?? null, offset);
      if (i >= p.hidden) offset += detokenizer.push(id).length;
    });
    return out;
  }
}

function startCompletion(engine: Engine, body: unknown, signal: AbortSignal, observer?: ChoiceObserver) {
  const req = parseCompletionRequest(engine, body);
  checkModel(engine.modelId, req.model);
  const scorePrompt = req.echo && req.logprobs !== null;
  const choices = startChoices(engine, req.prompts.map((p) => p.ids), req, { logprobs: req.logprobs, promptLogprobs: scorePrompt ? req.logprobs : null, promptParam: 'prompt' }, signal, observer);
  const base = { id: `cmpl-${randomUUID().replace(/-/g, '')}`, created: Math.floor(Date.now() / 1000), model: req.model, system_fingerprint: systemFingerprint(engine) };
  return { req, choices, base, scorePrompt };
}

type StartedCompletion = ReturnType<typeof startCompletion>;

async function* completionChunks(engine: Engine, c: StartedCompletion): AsyncGenerator<object> {
  const { req, base } = c;
  const lp = new LegacyLogprobsBuilder(engine);
  const total = req.prompts.length * req.n;
  const offsets = new Array<number>(total).fill(0);
  const chunk = (index: number, text: string, finishReason: string | null, logprobs: LegacyLogprobs | null): object => ({
    ...base, object: 'text_completion',
    choices: [{ index, text, logprobs, finish_reason: finishReason }],
    ...(req.includeUsage ? { usage: null } : {}),
  });
  if (req.echo && !c.scorePrompt) {
    for (let index = 0; index < total; index++) {
      const text = req.prompts[Math.floor(index / req.n)]!.text;
      offsets[index] = text.length;
      yield chunk(index, text, null, null);
    }
  }
  const usage = new UsageCounter();
  for await (const { index, prompt, event: ev } of c.choices) {
    if (ev.type === 'prompt' && req.echo) {
      const p = req.prompts[prompt]!;
      offsets[index] = p.text.length;
      yield chunk(index, p.text, null, lp.prompt(p, ev.logprobs));
    } else if (ev.type === 'token') {
      let logprobs: LegacyLogprobs | null = null;
      if (ev.logprobs) {
        logprobs = lp.empty();
        lp.push(logprobs, ev.tokenId, ev.logprobs, offsets[index]!);
      }
      offsets[index]! += ev.text.length;
      if (logprobs !== null || ev.text !== '') yield chunk(index, ev.text, null, logprobs);
    } else if (ev.type === 'finish') {
      yield chunk(index, ev.text, ev.reason, null);
      usage.add(prompt, ev.usage);
    }
  }
  if (req.includeUsage) yield { ...base, object: 'text_completion', choices: [], usage: usage.usage };
}

async function collectCompletion(engine: Engine, c: StartedCompletion): Promise<object> {
  const { req, base } = c;
  const total = req.prompts.length * req.n;
  const choices = Array.from({ length: total }, (_, index) => ({
    index, text: '', logprobs: null as LegacyLogprobs | null, finish_reason: 'stop',
  }));
  let usage: object | null = null;
  // Reuse the stream's chunks: one code path for texts, offsets and logprobs.
  for await (const ch of completionChunks(engine, { ...c, req: { ...req, includeUsage: true } })) {
    const chunk = ch as { choices: { index: number; text: string; logprobs: LegacyLogprobs | null; finish_reason: string | null }[]; usage?: object | null };
    const [part] = chunk.choices;
    if (part === undefined) { usage = chunk.usage ?? null; continue; }
    const into = choices[part.index]!;
    into.text += part.text;
    if (req.logprobs !== null) {
      into.logprobs ??= { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
      if (part.logprobs !== null) {
        into.logprobs.tokens.push(...part.logprobs.tokens);
        into.logprobs.token_logprobs.push(...part.logprobs.token_logprobs);
        into.logprobs.top_logprobs.push(...part.logprobs.top_logprobs);
        into.logprobs.text_offset.push(...part.logprobs.text_offset);
      }
    }
    if (part.finish_reason !== null) into.finish_reason = part.finish_reason;
  }
  return { ...base, object: 'text_completion', choices, usage };
}

export function completionsRoute(app: FastifyInstance, state: EngineState): void {
  postGeneration(app, '/v1/completions', state, { start: startCompletion, collect: collectCompletion, chunks: completionChunks });
}
