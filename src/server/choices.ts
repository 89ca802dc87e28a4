/**
 * One request, several generations: `n` choices per prompt (and, for /v1/completions, several
 * prompts), admitted together or not at all, their token events merged in arrival order.
 * Choice i of a prompt uses seed + i, so a seeded request is reproducible choice by choice.
 */
import { setMaxListeners } from 'node:events';
import type { Engine, TokenEvent, Usage } from '../engine/engine.ts';
import type { TokenLogprobs } from '../engine/types.ts';
import { InvalidRequestError } from '../errors.ts';
import type { Constraint } from '../engine/grammar/constraint.ts';
import type { GenerationParams } from './request-fields.ts';
import type { ChatLogprobEntry } from './schemas/chat.ts';

/** One event of one choice; `prompt` indexes the request's prompts. */
export interface ChoiceEvent {
  readonly index: number;
  readonly prompt: number;
  readonly event: TokenEvent;
}

/** What watches one generation: it sees every event, then end() once (also when no finish came). */
export interface GenerationTracker {
  event(ev: TokenEvent): void;
  end(): void;
}

/** Sees every generation a request starts (metrics and the request log hook in here). */
export interface ChoiceObserver {
  generation(engine: Engine, prompt: number, promptTokens: number): GenerationTracker;
}

export interface ChoiceOptions {
  /** Top alternatives per generated token, or null for no logprobs. */
  readonly logprobs: number | null;
  /** Top alternatives per prompt token, or null (only /v1/completions' echo asks). */
  readonly promptLogprobs?: number | null;
  /** The request parameter holding the prompt, named in errors (default 'messages'). */
  readonly promptParam?: string;
  /** Constrained decoding for every choice (checked to compile before, Engine.checkConstraint). */
  readonly constraint?: Constraint | null;
}

/**
 * Starts prompts.length x params.n generations. Validation errors (context length, queue
 * full, bad logit_bias ids) throw before anything starts; aborting `signal`, or leaving the
 * returned iteration early, aborts every generation still running.
 */
export function startChoices(
  engine: Engine, prompts: readonly (readonly number[])[], params: GenerationParams, opts: ChoiceOptions, signal: AbortSignal,
  observer?: ChoiceObserver,
): AsyncIterable<ChoiceEvent> {
  for (const [id] of params.sampling.logitBias) {
    if (id >= engine.vocabSize) throw new InvalidRequestError(`logit_bias: token id ${id} is outside the vocabulary (0..${engine.vocabSize - 1})`, 'logit_bias');
  }
  // Every request is checked before any starts: a refusal part-way leaves nothing running.
  const checked = prompts.flatMap((promptIds, p) => Array.from({ length: params.n }, (_, i) => ({
    index: p * params.n + i, prompt: p,
    req: engine.validate({
      promptIds, maxTokens: params.maxTokens, temperature: params.temperature, topP: params.topP,
      seed: params.seed === undefined ? undefined : (params.seed + i) % 2 ** 32,
      sampling: params.sampling, stop: params.stop, ignoreEos: params.ignoreEos, minTokens: params.minTokens, priority: params.priority,
      logprobs: opts.logprobs, promptLogprobs: opts.promptLogprobs ?? null, promptParam: opts.promptParam,
      ...(opts.constraint != null ? { constraint: opts.constraint } : {}),
    }),
  })));
  engine.ensureCapacity(checked.length);
  const inner = new AbortController();
  setMaxListeners(checked.length + 10, inner.signal); // one abort listener per generation
  const abort = (): void => inner.abort();
  if (signal.aborted) abort();
  else signal.addEventListener('abort', abort, { once: true });
  const sources: Source[] = checked.map((c) => ({ index: c.index, prompt: c.prompt, events: engine.generate(c.req, inner.signal) }));
  // Watched only once all have started: a request refused part-way never counts.
  for (const s of sources) s.tracker = observer?.generation(engine, s.prompt, prompts[s.prompt]!.length);
  return merge(sources, () => { abort(); signal.removeEventListener('abort', abort); });
}

interface Source {
  readonly index: number;
  readonly prompt: number;
  readonly events: AsyncIterable<TokenEvent>;
  tracker?: GenerationTracker;
}

async function* merge(sources: readonly Source[], cleanup: () => void): AsyncGenerator<ChoiceEvent> {
  const its = sources.map((s) => s.events[Symbol.asyncIterator]());
  type Next = { i: number; r: IteratorResult<TokenEvent> };
  const next = (i: number): Promise<Next> => its[i]!.next().then((r) => ({ i, r }));
  const pending = new Map<number, Promise<Next>>(its.map((_, i) => [i, next(i)]));
  try {
    while (pending.size > 0) {
      const { i, r } = await Promise.race(pending.values());
      if (r.done === true) { pending.delete(i); continue; }
      pending.set(i, next(i));
      sources[i]!.tracker?.event(r.value);
      yield { index: sources[i]!.index, prompt: sources[i]!.prompt, event: r.value };
    }
  } finally {
    // Abort first: an iterator waiting for its next event then ends promptly.
    cleanup();
    for (const it of its) void it.return?.(undefined).catch(() => undefined);
    for (const s of sources) s.tracker?.end();
  }
}

/**
 * Usage of a whole request: each prompt counted once, every choice's completion summed. A
 * prompt's cached tokens are the fewest any of its choices took from the cache (the choice that
 * computed the prompt: the others reuse its blocks, and the prompt is counted once).
 */
export class UsageCounter {
  private readonly prompts = new Map<number, { tokens: number; cached: number }>();
  private completionTokens = 0;

  add(prompt: number, usage: Usage): void {
    const cached = Math.min(usage.prompt_tokens_details.cached_tokens, this.prompts.get(prompt)?.cached ?? Infinity);
    this.prompts.set(prompt, { tokens: usage.prompt_tokens, cached });
    this.completionTokens += usage.completion_tokens;
  }

  get usage(): Usage {
    let prompt = 0;
    let cached = 0;
    for (const p of this.prompts.values()) { prompt += p.tokens; cached += p.cached; }
    return { prompt_tokens: prompt, completion_tokens: this.completionTokens, total_tokens: prompt + this.completionTokens, prompt_tokens_details: { cached_tokens: cached } };
  }
}

/** OpenAI's chat logprob entry for one token: text, bytes, logprob and alternatives. */
export function chatLogprobEntry(engine: Engine, tokenId: number, lp: TokenLogprobs): ChatLogprobEntry {
  const tokenText = (id: number): { token: string; bytes: number[] } => ({ token: engine.tokenizer.decode([id]), bytes: [...engine.tokenizer.tokenBytes(id)] });
  return {
    ...tokenText(tokenId), logprob: lp.logprob,
    top_logprobs: lp.top.map((t) => ({ ...tokenText(t.id), logprob: t.logprob })),
  };
}
