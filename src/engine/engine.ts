/**
 * The main-thread face of inference: decoding, the chat template's and the model's facts here; the
 * forward passes in a worker thread (worker.ts) so the HTTP server stays responsive while
 * a generation runs. The worker reports once per step (StepReport); `generate` streams each
 * generation's token events, with detokenized text deltas.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { ChatMessage, RenderOptions, ToolTemplateMessage } from './chat-template.ts';
import { Detokenizer } from './detokenizer.ts';
import { readManifest } from './manifest.ts';
import { resolveModel, defaultDataDir } from './resolve-model.ts';
import { loadTokenizer } from './tokenizer.ts';
import { TokenTable, type TokenDecoder } from './token-table.ts';
import type { Device } from './session.ts';
import type { Int4Kernel } from './native/q4-graph.ts';
import type { AttentionKernel } from './native/attention-graph.ts';
import type { KvDtype } from './graph-io.ts';
import type { FinishReason, FromWorker, Pooling, SamplerKind, SequenceEvent, TokenLogprobs, ToWorker, WorkerInit } from './types.ts';
import { DEFAULT_SAMPLING, type SamplingParams } from './sampling.ts';
import { StopMatcher } from './stop-strings.ts';
import { TextPool } from './text-pool.ts';
import { checkConstraintShape, DEFAULT_CONSTRAINT_PARAM, type Constraint } from './grammar/constraint.ts';
import type { SchedulerStats } from '../scheduler/types.ts';
import { ContextLengthError, EngineError, InvalidRequestError, QueueFullError } from '../errors.ts';

export interface EngineOptions {
  /** An exported model or a Hugging Face checkpoint (exported once into the data dir). */
  readonly modelDir: string;
  readonly device?: Device;
  readonly kvCacheBytes?: number;
  readonly dataDir?: string;
  /** Served model name; defaults to the model directory's name. */
  readonly modelId?: string;
  /** Further names the model answers to (`--served-model-name` after the first). */
  readonly modelAliases?: readonly string[];
  /** Sequences decoding together (default 64); more wait in order of arrival. */
  readonly maxNumSeqs?: number;
  /** Requests that may wait beyond maxNumSeqs (default 256); more are refused (QueueFullError). */
  readonly maxWaiting?: number;
  /** ONNX Runtime intra-op threads (default: one per physical core, session.ts intraOpThreads()). */
  readonly threads?: number;
  /** CPU int4 matmuls (default `auto`: gemma-serve's kernel where the CPU has AVX-512 VNNI). */
  readonly int4Kernel?: Int4Kernel;
  /** CPU attention (default `auto`: one fused node a layer where the export allows; `ort`: the exported nodes). */
  readonly attentionKernel?: AttentionKernel;
  /** Who samples (default `graph` where the native runner is built, else `js`). */
  readonly sampler?: SamplerKind;
  /** Most tokens one scheduler step computes (default 512, at least maxNumSeqs). */
  readonly maxNumBatchedTokens?: number;
  /** KV cache dtype asked for (`--kv-dtype`): a checkpoint is exported with it; an export must have it. Default: the export's own (fp32 for a checkpoint). */
  readonly kvDtype?: KvDtype;
  /** Replace the model by a ScriptedRunner emitting these token ids (tests, benchmarks). */
  readonly script?: readonly number[];
  /**
   * Tests: every step that computes takes at least this long (the worker waits out the rest), so
   * a generation lasts a known time on any machine (one cancelled "mid-generation" is still
   * running however fast the host). Not a serving option: no CLI flag sets it.
   */
  readonly minStepMs?: number;
  /** Worker threads that template and tokenize prompts off the event loop (default 1). */
  readonly textWorkers?: number;
  /**
   * The old behaviour: special-token strings written in message content (`<start_of_turn>`…)
   * are control tokens. Default false: content is plain text (special-text.ts).
   */
  readonly specialTokensInContent?: boolean;
  /** `--chat-template`: a Jinja file, or a tokenizer_config.json-like JSON, replacing the checkpoint's template. */
  readonly chatTemplate?: string;
  /** Aborting it stops loading (the export, the model, the text workers) and rejects start(). */
  readonly signal?: AbortSignal;
  /** Reuse cached prompt prefixes (default true; the device-resident slot runner has none: Engine.prefixCaching says). */
  readonly prefixCaching?: boolean;
}

export const DEFAULT_MAX_NUM_SEQS = 64;
export const DEFAULT_MAX_WAITING = 256;

export interface GenerateRequest {
  readonly promptIds: ArrayLike<number>;
  /** Defaults to the rest of the context. */
  readonly maxTokens?: number;
  readonly temperature?: number;
  readonly topP?: number;
  readonly seed?: number;
  /** Further sampling parameters (temperature and topP above take precedence). */
  readonly sampling?: Partial<SamplingParams>;
  /** Stop strings, matched on the generated text; never part of the output. */
  readonly stop?: readonly string[];
  /** null/undefined: no logprobs; else the number of top alternatives per token. */
  readonly logprobs?: number | null;
  /** null/undefined: none; else the prompt tokens' logprobs (a 'prompt' event) with this many alternatives. */
  readonly promptLogprobs?: number | null;
  /** Lower runs sooner (default 0); equal priorities are first come, first served. */
  readonly priority?: number;
  /** Generate past end-of-sequence tokens (only max tokens and stop strings end it). */
  readonly ignoreEos?: boolean;
  /** No end-of-sequence token and no stop string ends the sequence before this many tokens. */
  readonly minTokens?: number;
  /** The request parameter that holds the prompt, named in errors (default 'messages'). */
  readonly promptParam?: string;
  /**
   * Constrained decoding (docs/API.md "Constrained decoding"): the output is held to this JSON schema / regex /
   * choice / grammar. One that does not compile ends the generation with an InvalidRequestError
   * naming `constraint.param` before any event; `checkConstraint` reports it up front.
   */
  readonly constraint?: Constraint;
}

const VALIDATED = Symbol('validated');

/** A GenerateRequest that passed Engine.validate, with its limits resolved. */
export interface ValidatedRequest extends GenerateRequest {
  readonly [VALIDATED]: true;
  /** A copy owned by the request. */
  readonly promptIds: number[];
  readonly maxTokens: number;
  readonly minTokens: number;
}

export interface Usage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  /** Of the prompt tokens, those taken from the prefix cache instead of computed. */
  readonly prompt_tokens_details: { readonly cached_tokens: number };
}

export type TokenEvent =
  /** First, when promptLogprobs was asked: entries for prompt tokens 1..n-1 (the first has none). */
  | { readonly type: 'prompt'; readonly logprobs: readonly TokenLogprobs[] }
  | { readonly type: 'token'; readonly tokenId: number; readonly text: string; readonly logprobs?: TokenLogprobs }
  /** The scheduler first admitted the sequence, at `at` (this thread's performance.now()), `cachedTokens` of its prompt from the prefix cache; before its first token. */
  | { readonly type: 'scheduled'; readonly at: number; readonly cachedTokens: number }
  /** `text` is what the detokenizer still held back at the end (usually ''). */
  /** `stop`: the stop string that ended it (reason 'stop'), else null (an end token, the length, an abort). */
  | { readonly type: 'finish'; readonly reason: FinishReason; readonly usage: Usage; readonly text: string; readonly stop: string | null };

/** An embedding (Engine.embed): [hiddenSize] pooled, L2-normalised; the input's token count. */
export interface Embedding {
  readonly embedding: Float32Array;
  readonly promptTokens: number;
}

export interface EmbedOptions {
  /** Default 'mean'. */
  readonly pooling?: Pooling;
  /** The request parameter that holds the input, named in errors (default 'input'). */
  readonly param?: string;
  /** Lower runs sooner (default 0). */
  readonly priority?: number;
  readonly signal?: AbortSignal;
}

type Pending = { push(m: SequenceEvent): void; fail(e: Error): void };

export class Engine {
  private nextId = 1;
  private readonly requests = new Map<number, Pending>();
  private closed = false;
  /** Ids of generations submitted to the worker and not yet ended there (running or waiting). */
  private readonly live = new Set<number>();
  private latestStats: SchedulerStats | null = null;
  private forwardSeconds = 0;
  private readonly stepListeners = new Set<(stats: SchedulerStats) => void>();
  /** Pending checkConstraint calls by message id. */
  private readonly compiles = new Map<number, (error?: { message: string; param: string }) => void>();

  private constructor(
    private readonly worker: Worker,
    private readonly text: TextPool,
    /** Ids to text on this thread (encoding happens in the text workers: encodeChat, encodeText). */
    readonly tokenizer: TokenDecoder,
    /** The chat template takes a `tools` variable (reported by the text workers, which load it). */
    readonly handlesTools: boolean,
    readonly modelId: string,
    readonly contextLength: number,
    /** The model's vocabulary (logits per position); token ids are below it. */
    readonly vocabSize: number,
    readonly stopIds: readonly number[],
    readonly exportDir: string,
    /** Most requests admitted at once: running plus waiting. */
    readonly capacity: number,
    /** The longest sequence (prompt + completion) the KV cache holds on its own. */
    readonly maxSequenceTokens: number,
    /** Sequences that run at once: --max-num-seqs, or fewer where the runner has fewer cache slots. */
    readonly maxRunning: number,
    /** Int4 matmuls the model runs with gemma-serve's kernel (0: ONNX Runtime's MatMulNBits, or no int4 weights). */
    readonly int4Swapped: number,
    /** Layers whose attention runs as gemma-serve's fused node (0: the exported nodes). */
    readonly attentionFused: number,
    /** Every name the model answers to: modelId first, then its aliases. */
    readonly modelNames: readonly string[],
    /** Floats per embedding (the model's hidden size); null: the export has no hidden-state output. */
    readonly embeddingSize: number | null,
    /** Whether prompt prefixes are reused (asked for, and the runner supports it). */
    readonly prefixCaching: boolean,
  ) {
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'compiled') { this.compiles.get(m.id)?.(m.error); this.compiles.delete(m.id); return; }
      if (m.type !== 'step') return; // 'ready' and load errors are Engine.start's
      // Counters first, as the worker planned them, then the step's events in order.
      this.latestStats = m.stats;
      this.forwardSeconds = m.forwardSeconds;
      if (m.computed) for (const listener of this.stepListeners) listener(m.stats);
      for (const ev of m.events) {
        this.requests.get(ev.id)?.push(ev);
        // The last event of a generation: its queue holds it, so the entry can go even if
        // the generation is never iterated (e.g. started, then abandoned before reading).
        if (ev.type === 'finish' || ev.type === 'error' || ev.type === 'embedding') { this.live.delete(ev.id); this.requests.delete(ev.id); }
      }
    });
    const failAll = (e: Error): void => {
      for (const p of this.requests.values()) p.fail(e);
      this.requests.clear();
      this.live.clear();
    };
    worker.on('error', (e) => failAll(new EngineError(`inference worker failed: ${e.message}`, 'engine_error', 500, { cause: e })));
    worker.on('exit', () => { if (!this.closed) failAll(new EngineError('inference worker exited')); });
  }

  static async start(opts: EngineOptions): Promise<Engine> {
    const exportDir = await resolveModel(opts.modelDir, opts.dataDir ?? defaultDataDir(), opts.kvDtype, opts.device ?? 'cpu', opts.signal);
    const { config } = readManifest(exportDir);
    const file = (name: string): string | null => (existsSync(join(exportDir, name)) ? join(exportDir, name) : null);
    const tokenizerJson = file('tokenizer.json');
    if (tokenizerJson === null) throw new EngineError(`${exportDir}: tokenizer.json is missing`, 'invalid_checkpoint');
    const stopIds = generationEos(file('generation_config.json')) ?? [...config.eosTokenIds];
    const textPool = TextPool.start({ tokenizerJson, tokenizerConfig: file('tokenizer_config.json'), chatTemplate: opts.chatTemplate ?? null, specialTokensInContent: opts.specialTokensInContent ?? false }, opts.textWorkers ?? 1);
    textPool.catch(() => undefined); // awaited below

    const maxNumSeqs = opts.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS;
    const maxWaiting = opts.maxWaiting ?? DEFAULT_MAX_WAITING;
    const init: WorkerInit = { exportDir, stopIds, device: opts.device ?? 'cpu', kvCacheBytes: opts.kvCacheBytes, maxNumSeqs, maxNumBatchedTokens: opts.maxNumBatchedTokens, threads: opts.threads, int4Kernel: opts.int4Kernel, attentionKernel: opts.attentionKernel, prefixCaching: opts.prefixCaching ?? true, sampler: opts.sampler, ...(opts.script ? { script: [...opts.script] } : {}), ...(opts.minStepMs !== undefined ? { minStepMs: opts.minStepMs } : {}) };
    // Compiled (dist/, what the package runs) the worker is the plain worker.js beside this
    // module. From source (.ts under tsx: tests, development) worker-boot.mjs registers tsx in
    // the thread first, so it runs the same under tsx's CLI or tap's loader; execArgv is not
    // inherited to avoid a second loader.
    const workerFile = import.meta.url.endsWith('.ts') ? './worker-boot.mjs' : './worker.js';
    const worker = new Worker(new URL(workerFile, import.meta.url), { workerData: init, execArgv: [] });
    const onAbort = (): void => void worker.terminate();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    type Facts = { maxSequenceTokens: number; maxRunning: number; int4Swapped: number; attentionFused: number; hiddenSize: number | null; prefixCaching: boolean };
    const loaded = new Promise<Facts>((res, rej) => {
      const onMessage = (m: FromWorker): void => {
        if (m.type === 'ready') { cleanup(); res(m); }
        else if (m.type === 'error' && m.id === null) { cleanup(); rej(new EngineError(`cannot load the model: ${m.message}`)); }
      };
      const onError = (e: Error): void => { cleanup(); rej(new EngineError(`inference worker failed to start: ${e.message}`, 'engine_error', 500, { cause: e })); };
      const onExit = (code: number): void => { cleanup(); rej(new EngineError(`inference worker exited (code ${code}) before loading the model`)); };
      const cleanup = (): void => { worker.off('message', onMessage); worker.off('error', onError); worker.off('exit', onExit); };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    });
    let text: TextPool;
    let facts: Facts;
    try {
      [facts, text] = await Promise.all([loaded, textPool]);
    } catch (e) {
      await Promise.all([worker.terminate(), textPool.then((p) => p.close(), () => undefined)]);
      throw e;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    if (opts.signal?.aborted === true) {
      await Promise.all([worker.terminate(), text.close()]);
      throw new EngineError('loading was stopped', 'engine_closed', 503);
    }
    const { maxSequenceTokens, maxRunning, int4Swapped, attentionFused, hiddenSize, prefixCaching } = facts;
    // Decoding needs no tokenizer here: a text worker described every token's text (token-table.ts).
    // A decoder the table cannot reproduce is the exception, and costs the load on this thread.
    const tokenizer: TokenDecoder = text.table !== null ? new TokenTable(text.table) : loadTokenizer(tokenizerJson, file('tokenizer_config.json'));
    const modelId = opts.modelId ?? basename(resolve(opts.modelDir));
    return new Engine(worker, text, tokenizer, text.handlesTools, modelId, config.maxPositions, config.vocabSize, stopIds, exportDir, maxNumSeqs + maxWaiting, maxSequenceTokens, maxRunning, int4Swapped, attentionFused, [...new Set([modelId, ...opts.modelAliases ?? []])], hiddenSize, prefixCaching);
  }

  /** The scheduler's counters after its latest step (null before the first). */
  /**
   * Seconds the worker has spent in forward passes (building inputs, the ONNX Runtime run,
   * writing the cache), as of its last step: against wall time under load, what is left is the
   * server's own work (scheduling, sampling, messages, detokenizing, HTTP) and idling.
   */
  get forwardSecondsTotal(): number {
    return this.forwardSeconds;
  }

  get stats(): SchedulerStats | null {
    return this.latestStats;
  }

  /** Calls `listener` with the scheduler's stats once per step that computes tokens; returns the unsubscribe. */
  onStep(listener: (stats: SchedulerStats) => void): () => void {
    this.stepListeners.add(listener);
    return () => { this.stepListeners.delete(listener); };
  }

  /** Generations admitted and not yet ended. */
  get inFlight(): number {
    return this.live.size;
  }

  /** Throws QueueFullError unless `count` more generations can be admitted now. */
  ensureCapacity(count: number): void {
    // More than can ever be admitted at once is the request's fault, not a load to retry.
    if (count > this.capacity) throw new InvalidRequestError(`n: ${count} generations can never be admitted together (at most ${this.capacity}: --max-num-seqs + --max-waiting)`, 'n');
    if (this.live.size + count > this.capacity) throw new QueueFullError(this.capacity);
  }

  /**
   * Checks a request against the model and the cache without starting it: ContextLengthError
   * when the prompt plus max tokens does not fit the context, InvalidRequestError when it does
   * not fit the KV cache alone or min_tokens exceeds max_tokens. Lets a caller check several
   * requests before starting any.
   */
  validate(req: GenerateRequest): ValidatedRequest {
    if (VALIDATED in req) return req as ValidatedRequest;
    const param = req.promptParam ?? 'messages';
    const promptIds = Array.from(req.promptIds);
    if (promptIds.length === 0) throw new InvalidRequestError('the prompt is empty', param);
    // By default a completion may fill the context, or what the KV cache can hold of it.
    const room = Math.min(this.contextLength, Math.max(this.maxSequenceTokens, promptIds.length + 1)) - promptIds.length;
    const maxTokens = req.maxTokens ?? room;
    if (promptIds.length + Math.max(maxTokens, 0) > this.contextLength || room <= 0) {
      throw new ContextLengthError(promptIds.length, req.maxTokens ?? 0, this.contextLength, param);
    }
    if (promptIds.length + maxTokens > this.maxSequenceTokens) {
      throw new InvalidRequestError(
        `The KV cache holds at most ${this.maxSequenceTokens} tokens per sequence (--kv-cache-memory); this request needs ${promptIds.length + maxTokens} (${promptIds.length} in the prompt, ${maxTokens} for the completion). Please reduce the prompt or max_tokens.`,
        'max_tokens', 'kv_cache_too_small');
    }
    const minTokens = req.minTokens ?? 0;
    if (minTokens > maxTokens) throw new InvalidRequestError(`min_tokens (${minTokens}) must not exceed max_tokens (${maxTokens})`, 'min_tokens');
    if (req.constraint !== undefined) checkShape(req.constraint);
    return { ...req, [VALIDATED]: true, promptIds, maxTokens, minTokens };
  }

  /**
   * Validates (see validate; a validated request is not checked again), then streams the
   * generation. Aborting `signal`, or leaving the loop early, aborts the sequence in the worker.
   */
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<TokenEvent> {
    if (this.closed) throw new EngineError('the engine is closed', 'engine_closed', 503);
    const req = this.validate(request);
    const { promptIds, maxTokens, minTokens } = req;
    this.ensureCapacity(1);
    const id = this.nextId++;
    const queue: SequenceEvent[] = [];
    let error: Error | null = null;
    let notify: (() => void) | null = null;
    this.requests.set(id, {
      push: (m) => { queue.push(m); notify?.(); },
      fail: (e) => { error = e; notify?.(); },
    });
    const post = (m: ToWorker): void => this.worker.postMessage(m);
    this.live.add(id);
    post({
      type: 'submit', id, promptIds, maxTokens, priority: req.priority ?? 0,
      sampling: { ...DEFAULT_SAMPLING, ...req.sampling, temperature: req.temperature ?? req.sampling?.temperature ?? 1, topP: req.topP ?? req.sampling?.topP ?? 1 },
      logprobs: req.logprobs ?? null,
      promptLogprobs: req.promptLogprobs ?? null,
      seed: req.seed ?? Math.floor(Math.random() * 2 ** 32),
      stopIds: req.ignoreEos === true ? [] : [...this.stopIds],
      minTokens,
      ...(req.constraint !== undefined ? { constraint: req.constraint } : {}),
    });
    let done = false;
    const abort = (): void => { if (!done) post({ type: 'abort', id }); };
    if (signal?.aborted) abort();
    else signal?.addEventListener('abort', abort, { once: true });
    const detok = new Detokenizer(this.tokenizer);
    const stop = new StopMatcher(req.stop ?? []);
    const watchHeldText = (req.stop ?? []).some((s) => s !== '');
    let received = 0;
    let cachedTokens = 0;
    const self = this;

    return {
      async *[Symbol.asyncIterator]() {
        try {
          for (;;) {
            const m = queue.shift();
            if (m === undefined) {
              if (error !== null) throw error;
              await new Promise<void>((res) => { notify = res; });
              notify = null;
              continue;
            }
            if (m.type === 'scheduled') {
              cachedTokens = m.cachedTokens;
              yield { type: 'scheduled', at: m.at - performance.timeOrigin, cachedTokens };
            } else if (m.type === 'prompt_logprobs') {
              yield { type: 'prompt', logprobs: m.logprobs };
            } else if (m.type === 'token') {
              received++;
              const delta = detok.push(m.tokenId);
              // Before min_tokens, stop strings do not end the sequence (vLLM's semantics).
              let { text, matched } = received <= minTokens ? { text: delta, matched: false } : stop.push(delta);
              // A held byte run (detokenizer.ts) may already spell a stop string: ending the
              // sequence here gives the run exactly the text pending() shows, so end it.
              if (watchHeldText && !matched && received > minTokens && stop.wouldMatch(detok.pending())) {
                const rest = stop.push(detok.flush());
                text += rest.text;
                matched = rest.matched;
              }
              yield { type: 'token', tokenId: m.tokenId, text, ...(m.logprobs ? { logprobs: m.logprobs } : {}) };
              if (matched) {
                // A stop string: finish here; the finally block aborts the sequence in the worker.
                yield {
                  type: 'finish', reason: 'stop', text: '', stop: stop.matchedStop,
                  usage: usage(promptIds.length, received, cachedTokens),
                };
                return;
              }
            } else if (m.type === 'finish') {
              done = true;
              const { text, matched } = stop.finish(detok.flush());
              yield {
                type: 'finish', reason: matched ? 'stop' : m.reason, text, stop: matched ? stop.matchedStop : null,
                usage: usage(m.promptTokens, m.completionTokens, cachedTokens),
              };
              return;
            } else if (m.type === 'error') {
              done = true;
              throw m.param !== undefined ? new InvalidRequestError(m.message, m.param) : new EngineError(m.message);
            }
          }
        } finally {
          abort();
          done = true;
          signal?.removeEventListener('abort', abort);
          self.requests.delete(id);
        }
      },
    };
  }

  /**
   * The embedding of `promptIds` (docs/API.md "Embeddings"): a prefill-only sequence, batched by
   * the scheduler with the other traffic, whose final hidden states are pooled and L2-normalised
   * in the worker; its cache is free as soon as its last chunk ran. Refused: an empty input, one
   * over the context or the KV cache (400), an export without the hidden-state output (501), a
   * full queue (429). Aborting `signal` drops the sequence and rejects.
   */
  embed(promptIds: ArrayLike<number>, opts: EmbedOptions = {}): Promise<Embedding> {
    if (this.closed) return Promise.reject(new EngineError('the engine is closed', 'engine_closed', 503));
    const param = opts.param ?? 'input';
    const ids = Array.from(promptIds);
    if (this.embeddingSize === null) {
      return Promise.reject(new EngineError(`${this.exportDir} was exported without the hidden-state output embeddings need (graph io 1): export the checkpoint again (a checkpoint served by its path is re-exported automatically)`, 'embeddings_unsupported', 501));
    }
    if (ids.length === 0) return Promise.reject(new InvalidRequestError('the input is empty', param));
    if (ids.length > this.contextLength) return Promise.reject(new ContextLengthError(ids.length, 0, this.contextLength, param));
    if (ids.length > this.maxSequenceTokens) return Promise.reject(new InvalidRequestError(`The KV cache holds at most ${this.maxSequenceTokens} tokens per sequence (--kv-cache-memory); this input has ${ids.length}.`, param, 'kv_cache_too_small'));
    const bad = ids.find((t) => !Number.isInteger(t) || t < 0 || t >= this.vocabSize);
    if (bad !== undefined) return Promise.reject(new InvalidRequestError(`${param}: ${bad} is not a token id (0..${this.vocabSize - 1})`, param));
    try { this.ensureCapacity(1); } catch (e) { return Promise.reject(e as Error); }
    const id = this.nextId++;
    const abort = (): void => this.worker.postMessage({ type: 'abort', id } satisfies ToWorker);
    return new Promise<Embedding>((res, rej) => {
      this.requests.set(id, {
        push: (m) => {
          if (m.type === 'embedding') res({ embedding: m.embedding, promptTokens: m.promptTokens });
          else if (m.type === 'error') rej(new EngineError(m.message));
          else if (m.type === 'finish') rej(new EngineError('the embedding was aborted', 'aborted', 499));
        },
        fail: rej,
      });
      this.live.add(id);
      this.worker.postMessage({
        type: 'submit', id, promptIds: ids, maxTokens: 0, priority: opts.priority ?? 0, sampling: DEFAULT_SAMPLING, seed: 0,
        stopIds: [], minTokens: 0, logprobs: null, promptLogprobs: null, pooling: opts.pooling ?? 'mean',
      } satisfies ToWorker);
      if (opts.signal?.aborted === true) abort();
      else opts.signal?.addEventListener('abort', abort, { once: true });
    }).finally(() => {
      opts.signal?.removeEventListener('abort', abort);
      this.requests.delete(id);
    });
  }

  /**
   * A chat rendered by the template and tokenized, in a text worker (never on this thread).
   * A prompt whose characters alone prove it longer than the context (no token covers more than
   * `tokenizer.maxPieceChars` characters) is refused at once, before any tokenizing.
   */
  encodeChat(messages: readonly ToolTemplateMessage[], options: RenderOptions, param = 'messages'): Promise<Int32Array> {
    let chars = 0;
    for (const m of messages) chars += m.content.length;
    this.checkCharacters(chars, param);
    return this.text.encodeChat(messages, options);
  }

  /**
   * Plain text tokenized in a text worker (no BOS). `param` set: a prompt, refused at once when
   * its characters prove it longer than the context (as encodeChat); null: any length (/tokenize).
   */
  encodeText(text: string, param: string | null = 'prompt'): Promise<Int32Array> {
    if (param !== null) this.checkCharacters(text.length, param);
    return this.text.encode(text);
  }

  /** A chat rendered and tokenized in a text worker without the length bound (/tokenize). */
  tokenizeChat(messages: readonly ChatMessage[], options: RenderOptions): Promise<Int32Array> {
    return this.text.encodeChat(messages, options);
  }

  private checkCharacters(chars: number, param: string): void {
    const atLeast = Math.ceil(chars / this.tokenizer.maxPieceChars);
    if (atLeast > this.contextLength) throw new ContextLengthError(atLeast, 0, this.contextLength, param, true);
  }

  /**
   * Compiles `constraint` in the inference worker (it stays in the worker's grammar cache, so a
   * generate() with it right after does not compile again); rejects with an InvalidRequestError
   * naming `constraint.param` when it cannot be compiled. Lets a server answer 400 before it
   * starts a stream. Never compiles on this thread.
   */
  async checkConstraint(constraint: Constraint): Promise<void> {
    if (this.closed) throw new EngineError('the engine is closed', 'engine_closed', 503);
    checkShape(constraint);
    const id = this.nextId++;
    const error = await new Promise<{ message: string; param: string } | undefined>((res, rej) => {
      this.compiles.set(id, res);
      this.requests.set(id, { push: (m) => { if (m.type === 'error') { this.compiles.delete(id); this.requests.delete(id); rej(new EngineError(m.message)); } }, fail: rej });
      this.worker.postMessage({ type: 'compile', id, constraint } satisfies ToWorker);
    }).finally(() => { this.requests.delete(id); this.compiles.delete(id); });
    if (error !== undefined) throw new InvalidRequestError(error.message, error.param);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Fail what is in flight before anything is awaited: a generation must not run on to its end
    // while the text pool shuts down.
    for (const p of this.requests.values()) p.fail(new EngineError('the engine is closed', 'engine_closed', 503));
    this.requests.clear();
    await this.text.close();
    this.worker.postMessage({ type: 'close' } satisfies ToWorker);
    const exited = new Promise<void>((res) => this.worker.once('exit', () => res()));
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** The constraint's fields have the types its kind needs (what a server schema would already ensure). */
function checkShape(c: Constraint): void {
  const problem = checkConstraintShape(c);
  if (problem !== null) throw new InvalidRequestError(`${c.param ?? DEFAULT_CONSTRAINT_PARAM}: ${problem}`, c.param ?? DEFAULT_CONSTRAINT_PARAM);
}

function generationEos(path: string | null): number[] | null {
  if (path === null) return null;
  try {
    const eos = (JSON.parse(readFileSync(path, 'utf8')) as { eos_token_id?: unknown }).eos_token_id;
    const list = Array.isArray(eos) ? eos : eos === undefined ? [] : [eos];
    const ids = list.filter((v): v is number => typeof v === 'number' && Number.isInteger(v));
    return ids.length > 0 ? ids : null;
  } catch {
    return null;
  }
}

/** OpenAI's usage object of one generation. */
function usage(promptTokens: number, completionTokens: number, cachedTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens, prompt_tokens_details: { cached_tokens: cachedTokens } };
}
