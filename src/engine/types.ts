/**
 * The engine's boundary types: what the inference worker and the main thread say to each other
 * (WorkerInit, ToWorker, FromWorker) and the pieces of a generation the server sees through
 * TokenEvent (TokenLogprobs, FinishReason). Types only, so the server can name them without
 * loading the worker's entry module.
 */
import type { SamplingParams } from './sampling.ts';
import type { Device } from './session.ts';
import type { Int4Kernel } from './native/q4-graph.ts';
import type { AttentionKernel } from './native/attention-graph.ts';
import type { SchedulerStats } from '../scheduler/types.ts';
import type { Constraint } from './grammar/constraint.ts';

/** The log-probability of one token and, when asked, the top alternatives at its position. */
export interface TokenLogprobs {
  readonly logprob: number;
  readonly top: { id: number; logprob: number }[];
}

/** Why a generation ended: a stop token or string, max tokens, or an abort. */
export type FinishReason = 'stop' | 'length' | 'abort';

/** How an embedding pools its final hidden states: their mean over the input's tokens, or the last token's. */
export type Pooling = 'mean' | 'last';
export const POOLINGS: readonly Pooling[] = ['mean', 'last'];

/** Who samples: `graph` the sampler graph (device-sampler.ts), `js` sampling.ts row by row (the reference). */
export type SamplerKind = 'graph' | 'js';

/** The worker thread's workerData. */
export interface WorkerInit {
  readonly exportDir: string;
  /** The model's end tokens (generation_config's eos_token_id, else config's): the grammars' stop tokens. */
  readonly stopIds: readonly number[];
  readonly device: Device;
  readonly kvCacheBytes?: number;
  /** At most this many sequences run together; later ones wait (priority, then arrival). */
  readonly maxNumSeqs: number;
  /** Most tokens one step computes (default DEFAULT_MAX_NUM_BATCHED_TOKENS). */
  readonly maxNumBatchedTokens?: number;
  /** ONNX Runtime intra-op threads (0 or absent: one per physical core, session.ts intraOpThreads()). */
  readonly threads?: number;
  /** CPU int4 matmuls (ModelRunnerOptions.int4Kernel). */
  readonly int4Kernel?: Int4Kernel;
  /** CPU attention (ModelRunnerOptions.attentionKernel). */
  readonly attentionKernel?: AttentionKernel;
  /** Cache blocks of this many positions. */
  readonly blockSize?: number;
  /** Who samples: the sampler graph on the model's execution provider (default, where the native runner is built) or the JS sampler. */
  readonly sampler?: SamplerKind;
  /** Run a ScriptedRunner emitting these tokens instead of the ONNX model (tests, benchmarks). */
  readonly script?: readonly number[];
  /** EngineOptions.minStepMs. */
  readonly minStepMs?: number;
  /** Reuse cached prompt prefixes where the runner supports it (kv-cache-manager.ts); default false. */
  readonly prefixCaching?: boolean;
}

export interface SubmitMessage {
  readonly type: 'submit';
  readonly id: number;
  readonly promptIds: number[];
  readonly maxTokens: number;
  /** Lower runs sooner; equal priorities are first come, first served. */
  readonly priority: number;
  readonly sampling: SamplingParams;
  readonly seed: number;
  /** Token ids that end the sequence (empty with ignore_eos). */
  readonly stopIds: number[];
  /** Stop ids cannot be sampled before this many tokens are generated. */
  readonly minTokens: number;
  /** null: no logprobs; else how many top alternatives to send with each token. */
  readonly logprobs: number | null;
  /** null: none; else the logprob of every prompt token after the first, with this many alternatives. */
  readonly promptLogprobs: number | null;
  /** Constrained decoding (grammar/constraint.ts): compiled before the sequence is queued. */
  readonly constraint?: Constraint;
  /**
   * An embedding (maxTokens 0): the prompt is prefilled, its final hidden states pooled so and
   * L2-normalised, and the sequence ends with an 'embedding' event after its last chunk.
   */
  readonly pooling?: Pooling;
}

export type ToWorker = SubmitMessage | { readonly type: 'abort'; readonly id: number } | { readonly type: 'close' }
  /** Compile (and cache) a constraint; answered by 'compiled' with the same id. */
  | { readonly type: 'compile'; readonly id: number; readonly constraint: Constraint };

/** What happened to one sequence during a step; a step's events are in the order they happened. */
export type SequenceEvent =
  /**
   * Once, when the scheduler first admits the sequence; `at`: performance.timeOrigin + performance.now() in the worker;
   * `cachedTokens`: prompt tokens taken from the prefix cache (not computed).
   */
  | { readonly type: 'scheduled'; readonly id: number; readonly at: number; readonly cachedTokens: number }
  /** Once, before the first token, when promptLogprobs was asked: entries for prompt tokens 1..n-1. */
  | { readonly type: 'prompt_logprobs'; readonly id: number; readonly logprobs: TokenLogprobs[] }
  | { readonly type: 'token'; readonly id: number; readonly tokenId: number; readonly logprobs?: TokenLogprobs }
  /** The sequence ended; its last event. */
  | { readonly type: 'finish'; readonly id: number; readonly reason: FinishReason; readonly promptTokens: number; readonly completionTokens: number }
  /** An embedding's result, its last event: [hiddenSize] pooled, L2-normalised. */
  | { readonly type: 'embedding'; readonly id: number; readonly embedding: Float32Array; readonly promptTokens: number }
  /** The sequence failed; its last event. `param`: the request parameter at fault (a constraint that does not compile: a 400). */
  | { readonly type: 'error'; readonly id: number; readonly message: string; readonly param?: string };

/** Everything one step produced: the worker's only message while it runs (plus one per idle wait). */
export interface StepReport {
  readonly type: 'step';
  /** [events of the step] every sequence's new tokens (with logprobs), scores, finishes, errors, admissions, in order. */
  readonly events: readonly SequenceEvent[];
  /** The scheduler's counters as planned for this step (observability hooks). */
  readonly stats: SchedulerStats;
  /** The step computed tokens (false: an idle report, or a step that could run nothing). */
  readonly computed: boolean;
  /** Cumulative seconds inside the runner's forward passes (inputs, ORT run, cache writes). */
  readonly forwardSeconds: number;
}

export type FromWorker =
  /** Loaded; `maxSequenceTokens`: the longest sequence the KV cache can hold alone; `prefixCaching`: whether prompt prefixes are reused. */
  | { readonly type: 'ready'; readonly maxSequenceTokens: number; readonly maxRunning: number; readonly int4Swapped: number; readonly attentionFused: number; readonly hiddenSize: number | null; readonly prefixCaching: boolean }
  /** The model could not be loaded. */
  | { readonly type: 'error'; readonly id: null; readonly message: string }
  /** The answer to 'compile': `error` is the refusal, absent when the constraint compiled. */
  | { readonly type: 'compiled'; readonly id: number; readonly error?: { readonly message: string; readonly param: string } }
  | StepReport;
