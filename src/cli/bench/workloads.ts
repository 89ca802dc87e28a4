/**
 * What the load generator sends, request by request (`--workload`):
 *  - `random`: a fresh prompt of random words each time (no two share a prefix);
 *  - `shared-prefix`: one fixed text of `--shared-prefix-tokens` tokens, then a distinct
 *    question of `--prompt-tokens` tokens (RAG chains and agents resending their instructions);
 *  - `multi-turn`: conversations of `--turns` turns, each resending its whole history (the
 *    replies it streamed) with a new user message of `--prompt-tokens` tokens (chat clients).
 * Both of the latter measure a server's prefix cache: run them against it with the cache on
 * and off. A source lives for one level, so conversations never span levels.
 */
import type { Range } from './prompts.ts';
import { promptOfTokens, sampleRange, type Calibration } from './prompts.ts';
import type { ChatTurn, RequestResult } from './client.ts';
import { UsageError } from '../usage.ts';

export type Workload =
  | { readonly kind: 'random' }
  | { readonly kind: 'shared-prefix'; readonly prefixTokens: number }
  | { readonly kind: 'multi-turn'; readonly turns: number };

export const WORKLOADS = ['random', 'shared-prefix', 'multi-turn'] as const;

/** One request to send, and what to do with its result. */
export interface PlannedRequest {
  /** The user text (completions: the whole prompt). */
  readonly prompt: string;
  /** Turns before it (multi-turn, chat only). */
  readonly history: readonly ChatTurn[];
  readonly maxTokens: number;
  /** Takes the request's result (multi-turn keeps the reply for the next turn). */
  settle(result: RequestResult): void;
}

interface Conversation {
  readonly history: ChatTurn[];
  readonly startMs: number;
  turns: number;
}

/** Hands out a level's requests. */
export class WorkloadSource {
  private readonly idle: Conversation[] = [];
  private readonly prefix: string;
  /** Wall times (first send to last end, ms) of conversations that ran all their turns. */
  readonly conversationsMs: number[] = [];

  constructor(
    private readonly workload: Workload,
    private readonly sizes: { readonly promptTokens: Range; readonly maxTokens: Range },
    private readonly calibration: Calibration,
    private readonly rand: () => number,
    /** The shared text; the same for every level of a run. */
    prefix: string,
  ) {
    this.prefix = prefix;
  }

  next(): PlannedRequest {
    const question = promptOfTokens(sampleRange(this.sizes.promptTokens, this.rand), this.calibration, this.rand);
    const maxTokens = sampleRange(this.sizes.maxTokens, this.rand);
    const w = this.workload;
    if (w.kind === 'random') return { prompt: question, history: [], maxTokens, settle: () => undefined };
    if (w.kind === 'shared-prefix') return { prompt: `${this.prefix}\n\n${question}`, history: [], maxTokens, settle: () => undefined };
    const conv = this.idle.shift() ?? { history: [], startMs: performance.now(), turns: 0 };
    return {
      prompt: question, history: [...conv.history], maxTokens,
      settle: (r) => {
        if (r.error !== null) return; // a failed turn ends its conversation
        conv.history.push({ role: 'user', content: question }, { role: 'assistant', content: r.text });
        if (++conv.turns >= w.turns) this.conversationsMs.push(r.startMs + r.e2eMs - conv.startMs);
        else this.idle.push(conv);
      },
    };
  }
}

/** The shared prefix of a run (empty unless `shared-prefix`). */
export function sharedPrefix(workload: Workload, calibration: Calibration, rand: () => number): string {
  return workload.kind === 'shared-prefix' ? promptOfTokens(workload.prefixTokens, calibration, rand) : '';
}

/** The workload named by the flags. */
export function parseWorkload(kind: string, prefixTokens: number | undefined, turns: number | undefined, endpoint: string): Workload {
  if (kind === 'random') return { kind };
  if (kind === 'shared-prefix') return { kind, prefixTokens: prefixTokens ?? 2000 };
  if (kind === 'multi-turn') {
    if (endpoint !== 'chat') throw new UsageError('--workload multi-turn needs --endpoint chat');
    return { kind, turns: turns ?? 10 };
  }
  throw new UsageError(`--workload: ${WORKLOADS.join(', ')}; got ${JSON.stringify(kind)}`);
}
