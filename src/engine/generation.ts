/**
 * A request's generation state in the worker, kept across preemptions: its sampling generator
 * (seeded mulberry32, so a preempted and recomputed sequence draws the same numbers and a seed
 * fixes the output), its stop ids and token history, and how far its prompt was scored.
 */
import { TokenHistory } from './sampling.ts';
import type { SubmitMessage, TokenLogprobs } from './types.ts';
import type { SequenceGrammar } from './grammar/matcher.ts';
import { EmbeddingPool } from './embedding-pool.ts';

export interface Generation {
  readonly req: SubmitMessage;
  readonly rand: () => number;
  readonly stop: ReadonlySet<number>;
  readonly history: TokenHistory;
  /** Prompt positions whose next-token logprobs were computed (promptLogprobs); the prompt's length once sent. */
  scored: number;
  readonly promptEntries: TokenLogprobs[];
  /** The 'scheduled' event was sent. */
  scheduled: boolean;
  /** The constraint's state (constrained decoding), or null. */
  readonly grammar: SequenceGrammar | null;
  /** An embedding's pooled hidden states (req.pooling), or null for a generation. */
  readonly pool: EmbeddingPool | null;
}

/** `hiddenSize`: the runner's (an embedding needs one). */
export function newGeneration(req: SubmitMessage, grammar: SequenceGrammar | null = null, hiddenSize?: number): Generation {
  const pool = req.pooling !== undefined && hiddenSize !== undefined ? new EmbeddingPool(req.pooling, hiddenSize) : null;
  return { req, rand: mulberry32(req.seed), stop: new Set(req.stopIds), history: new TokenHistory(req.promptIds, req.sampling.penaltyLastN), scored: 0, promptEntries: [], scheduled: false, grammar, pool };
}

/** mulberry32: a tiny seeded PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
