/**
 * POST /v1/completions (OpenAI's legacy text completions): the prompt as a string, an array of
 * strings, an array of token ids or an array of those; `n` choices per prompt (choice index =
 * prompt * n + i); `echo` puts the prompt before the completion, and with `logprobs` scores
 * the prompt's tokens too (the first token has none). Text prompts get `<bos>` first, as the
 * Hugging Face tokenizer adds it; token prompts are used as they are.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Constraint } from '../../engine/grammar/constraint.ts';
import { outputConstraints } from '../structured-output.ts';
import { Detokenizer } from '../../engine/detokenizer.ts';
import type { Engine } from '../../engine/engine.ts';
import type { TokenLogprobs } from '../../engine/worker.ts';
import { InvalidRequestError } from '../../errors.ts';
import { startChoices, UsageCounter, type ChoiceObserver } from '../choices.ts';
import type { EngineState } from '../engine-state.ts';
import { checkModel, parseGenerationParams, rejectUnsupported, type GenerationParams, type UnsupportedFields } from '../request-fields.ts';
import { postGeneration } from '../generation-route.ts';
import { CompletionRequest, TextCompletion, TextCompletionChunk, type CompletionBody, type LegacyLogprobs } from '../schemas/completions.ts';
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
  /** The output constraint (response_format, structured_outputs, guided_*), or null. */
  readonly constraint: Constraint | null;
}

interface Prompt {
  readonly ids: number[];
  /** What echo shows: a text prompt as given, a token prompt decoded. */
  readonly text: string;
  /** Leading ids that `text` does not show (the `<bos>` added to a text prompt). */
  readonly hidden: number;
}

const UNSUPPORTED: UnsupportedFields = new Map(Object.entries({
  suffix: (v) => v === '',
}));

/** A schema-validated body (CompletionRequest) read into a CompletionRequest, with the checks no schema states. */
export async function parseCompletionRequest(engine: Engine, body: CompletionBody): Promise<CompletionRequest> {
  rejectUnsupported(body, UNSUPPORTED);
  // max_tokens 0 generates nothing: with echo and logprobs, the prompt is scored (lm-eval's loglikelihood).
  const params = parseGenerationParams(body, body.max_tokens);
  const { constraint } = outputConstraints(body as unknown as Readonly<Record<string, unknown>>, { tools: false });
  if (body.best_of != null && body.best_of !== params.n) {
    throw new InvalidRequestError('best_of: only best_of equal to n is supported', 'best_of', 'unsupported_parameter');
  }
  return {
    ...params,
    maxTokens: params.maxTokens ?? DEFAULT_COMPLETION_MAX_TOKENS,
    prompts: await parsePrompts(engine, body.prompt),
    echo: body.echo ?? false,
    logprobs: body.logprobs ?? null,
    constraint,
  };
}

/** The schema has checked the prompt's shape; the vocabulary is the engine's. */
async function parsePrompts(engine: Engine, prompt: CompletionBody['prompt']): Promise<Prompt[]> {
  const fromText = async (text: string): Promise<Prompt> => ({ ids: [engine.tokenizer.bosId, ...await engine.encodeText(text, 'prompt')], text, hidden: 1 });
  const fromIds = (ids: number[]): Prompt => {
    for (const id of ids) {
      if (id >= engine.vocabSize) throw new InvalidRequestError(`prompt: ${id} is not a token id (0..${engine.vocabSize - 1})`, 'prompt');
    }
    return { ids, text: engine.tokenizer.decode(ids), hidden: 0 };
  };
  if (typeof prompt === 'string') return [await fromText(prompt)];
  const [first] = prompt;
  if (typeof first === 'string') return Promise.all((prompt as string[]).map(fromText));
  if (typeof first === 'number') return [fromIds(prompt as number[])];
  return (prompt as number[][]).map(fromIds);
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

async function startCompletion(engine: Engine, body: CompletionBody, signal: AbortSignal, observer?: ChoiceObserver) {
  const req = await parseCompletionRequest(engine, body);
  checkModel(engine.modelNames, req.model);
  const scorePrompt = req.echo && req.logprobs !== null;
  if (req.constraint !== null) await engine.checkConstraint(req.constraint);
  const choices = startChoices(engine, req.prompts.map((p) => p.ids), req, { logprobs: req.logprobs, promptLogprobs: scorePrompt ? req.logprobs : null, promptParam: 'prompt', constraint: req.constraint }, signal, observer);
  const base = { id: `cmpl-${randomUUID().replace(/-/g, '')}`, created: Math.floor(Date.now() / 1000), model: req.model, system_fingerprint: systemFingerprint(engine) };
  return { req, choices, base, scorePrompt };
}

type StartedCompletion = Awaited<ReturnType<typeof startCompletion>>;

async function* completionChunks(engine: Engine, c: StartedCompletion): AsyncGenerator<TextCompletionChunk> {
  const { req, base } = c;
  const lp = new LegacyLogprobsBuilder(engine);
  const total = req.prompts.length * req.n;
  const offsets = new Array<number>(total).fill(0);
  type Choice = TextCompletionChunk['choices'][number];
  const chunk = (index: number, text: string, finishReason: Choice['finish_reason'], logprobs: LegacyLogprobs | null): TextCompletionChunk => ({
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

async function collectCompletion(engine: Engine, c: StartedCompletion): Promise<TextCompletion> {
  const { req, base } = c;
  const total = req.prompts.length * req.n;
  const choices: TextCompletion['choices'] = Array.from({ length: total }, (_, index) => ({
    index, text: '', logprobs: null, finish_reason: 'stop',
  }));
  let usage: TextCompletion['usage'] = null;
  // Reuse the stream's chunks: one code path for texts, offsets and logprobs.
  for await (const chunk of completionChunks(engine, { ...c, req: { ...req, includeUsage: true } })) {
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
  postGeneration(app, '/v1/completions', state, {
    body: CompletionRequest, response: TextCompletion, chunk: TextCompletionChunk, summary: 'Text completion (JSON or server-sent events)', tag: 'OpenAI',
  }, { start: startCompletion, collect: collectCompletion, chunks: completionChunks });
}
