/**
 * Prometheus metrics (GET /metrics), named after vLLM V1's: the same meanings and bucket
 * boundaries under the prefix `gemma_serve:`, or vLLM's exact names (`vllm:`) with
 * `--metrics-names vllm` so dashboards and autoscaling rules written for vLLM work unchanged.
 * Every engine series carries `model_name`. Fed by hooks, never by polling the routes:
 *   - generation(): one tracker per generation, fed every token event (choices.ts);
 *   - the engine's step listener: tokens per step (iteration_tokens_total);
 *   - http(): one call per finished HTTP response (request-log.ts);
 *   - at scrape time: running / waiting / cache use / preemptions from the scheduler's stats.
 * Request-level histograms are observed when a generation ends, as vLLM does; a generation
 * that ends without a finish event (client gone, cut at shutdown, engine error) counts as
 * finished_reason="abort". A request with n choices counts n generations (each is prefilled).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine } from '../engine/engine.ts';
import type { GenerationTracker } from './choices.ts';
import type { EngineState } from './engine-state.ts';

export type MetricsNames = 'gemma_serve' | 'vllm';
export const METRICS_NAMES: readonly MetricsNames[] = ['gemma_serve', 'vllm'];

/** vLLM's buckets (vllm/v1/metrics/loggers.py). */
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const REQUEST_LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];
const ITERATION_TOKEN_BUCKETS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];
/** Not vLLM's (its HTTP metrics come from prometheus-fastapi-instrumentator). */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/** vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to `max`. */
export function buckets125(max: number): number[] {
  const out: number[] = [];
  for (let exp = 1; ; exp *= 10) {
    for (const m of [1, 2, 5]) {
      if (m * exp > max) return out;
      out.push(m * exp);
    }
  }
}


export interface MetricsOptions {
  readonly state: EngineState;
  readonly names?: MetricsNames;
  /** Node process metrics (prom-client's default collectors). Default true. */
  readonly processMetrics?: boolean;
}

const ms = (a: number, b: number): number => Math.max(0, b - a) / 1000;

/** Increments `counter` from `seen` up to the cumulative `total`; returns the new high-water mark. */
function catchUp(counter: Counter<'model_name'>, labels: { model_name: string }, total: number, seen: number): number {
  counter.inc(labels, Math.max(0, total - seen));
  return Math.max(total, seen);
}

export class Metrics {
  readonly registry = new Registry();
  private readonly prefix: string;
  private readonly state: EngineState;
  private readonly promptTokens: Counter<'model_name'>;
  private readonly generationTokens: Counter<'model_name'>;
  private readonly success: Counter<'model_name' | 'finished_reason'>;
  private readonly preemptions: Counter<'model_name'>;
  private readonly prefixQueries: Counter<'model_name'>;
  private readonly prefixHits: Counter<'model_name'>;
  private prefixSeen = { queries: 0, hits: 0 };
  private readonly forward: Counter<'model_name'>;
  private forwardSeen = 0;
  private readonly hist: Record<'ttft' | 'itl' | 'e2e' | 'queue' | 'inference' | 'prefill' | 'decode' | 'iteration', Histogram<'model_name'>>;
  private tokenHists: { prompt: Histogram<'model_name'>; generation: Histogram<'model_name'> } | null = null;
  private readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  private readonly httpDuration: Histogram<'route' | 'method' | 'status'>;
  private preemptionsSeen = 0;
  private stepEngine: Engine | null = null;
  private unsubscribeStep: (() => void) | null = null;
  /** Running totals, for the periodic stats log line. */
  readonly totals = { promptTokens: 0, generationTokens: 0 };

  constructor(opts: MetricsOptions) {
    this.state = opts.state;
    this.prefix = opts.names === 'vllm' ? 'vllm:' : 'gemma_serve:';
    const registers = [this.registry];
    const labelNames = ['model_name'] as const;
    const counter = <L extends string>(name: string, help: string, labels: readonly L[]): Counter<L> =>
      new Counter({ name: this.prefix + name, help, labelNames: labels, registers });
    const histogram = (name: string, help: string, buckets: number[]): Histogram<'model_name'> =>
      new Histogram({ name: this.prefix + name, help, labelNames, buckets, registers });
    const gauge = (name: string, help: string, collect: (g: Gauge<'model_name'>, engine: Engine) => void, extra: readonly string[] = []): void => {
      const self = this;
      new Gauge({
        name, help, labelNames: [...labelNames, ...extra], registers,
        collect() {
          this.reset();
          const engine = self.state.loaded;
          if (engine !== null) collect(this as Gauge<'model_name'>, engine);
        },
      });
    };
    const stats = (e: Engine) => e.stats ?? { running: 0, waiting: 0, preemptionsTotal: 0, cache: { global: { usedBlocks: 0, totalBlocks: 1 }, sliding: { usedBlocks: 0, totalBlocks: 1 } } };
    const usage = (u: { usedBlocks: number; totalBlocks: number }): number => (u.totalBlocks > 0 ? u.usedBlocks / u.totalBlocks : 0);
    gauge(this.prefix + 'num_requests_running', 'Number of requests in model execution batches.', (g, e) => g.set({ model_name: e.modelId }, stats(e).running));
    gauge(this.prefix + 'num_requests_waiting', 'Number of requests waiting to be processed.', (g, e) => g.set({ model_name: e.modelId }, stats(e).waiting));
    // Overall use is the fuller of the two pools: a sequence needs room in both to be admitted.
    // The per-layer-type split is beyond vLLM: in vllm mode it stays under gemma_serve: so that
    // vllm:kv_cache_usage_perc is one series per model, as vLLM's dashboards expect.
    const byKind = (g: Gauge<string>, e: Engine): void => {
      const c = stats(e).cache;
      g.set({ model_name: e.modelId, layer_type: 'global' }, usage(c.global));
      g.set({ model_name: e.modelId, layer_type: 'sliding' }, usage(c.sliding));
    };
    const overall = (g: Gauge<string>, e: Engine): void => {
      const c = stats(e).cache;
      g.set({ model_name: e.modelId }, Math.max(usage(c.global), usage(c.sliding)));
    };
    const kvHelp = 'KV-cache usage. 1 means 100 percent usage. Without layer_type: the fuller of the global and sliding-window pools.';
    if (opts.names === 'vllm') {
      gauge('vllm:kv_cache_usage_perc', kvHelp, overall);
      gauge('gemma_serve:kv_cache_usage_perc', 'KV-cache usage of the global or sliding-window layers\' pool (0..1).', byKind, ['layer_type']);
    } else {
      gauge('gemma_serve:kv_cache_usage_perc', kvHelp, (g, e) => { overall(g, e); byKind(g, e); }, ['layer_type']);
    }
    this.preemptions = counter('num_preemptions_total', 'Cumulative number of preemptions from the engine.', labelNames);
    this.forward = new Counter({
      name: 'gemma_serve:model_forward_seconds_total', labelNames, registers,
      help: 'Seconds spent in model forward passes (inputs, ONNX Runtime run, KV cache writes); its rate against wall time is the share of the step spent in the model.',
    });
    // vLLM's prefix cache counters, in tokens (first admissions of sequences that looked the cache up).
    this.prefixQueries = counter('prefix_cache_queries_total', 'Prefix cache queries, in terms of number of queried tokens.', labelNames);
    this.prefixHits = counter('prefix_cache_hits_total', 'Prefix cache hits, in terms of number of cached tokens.', labelNames);
    // Computed tokens: a prompt's tokens taken from the prefix cache are not counted.
    this.promptTokens = counter('prompt_tokens_total', 'Number of prefill tokens processed.', labelNames);
    this.generationTokens = counter('generation_tokens_total', 'Number of generation tokens processed.', labelNames);
    this.success = counter('request_success_total', 'Count of successfully processed requests.', ['model_name', 'finished_reason']);
    this.hist = {
      ttft: histogram('time_to_first_token_seconds', 'Histogram of time to first token in seconds.', TTFT_BUCKETS),
      itl: histogram('inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', ITL_BUCKETS),
      e2e: histogram('e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', REQUEST_LATENCY_BUCKETS),
      queue: histogram('request_queue_time_seconds', 'Histogram of time spent in WAITING phase for request.', REQUEST_LATENCY_BUCKETS),
      inference: histogram('request_inference_time_seconds', 'Histogram of time spent in RUNNING phase for request.', REQUEST_LATENCY_BUCKETS),
      prefill: histogram('request_prefill_time_seconds', 'Histogram of time spent in PREFILL phase for request.', REQUEST_LATENCY_BUCKETS),
      decode: histogram('request_decode_time_seconds', 'Histogram of time spent in DECODE phase for request.', REQUEST_LATENCY_BUCKETS),
      iteration: histogram('iteration_tokens_total', 'Histogram of number of tokens per engine_step.', ITERATION_TOKEN_BUCKETS),
    };
    this.httpRequests = new Counter({
      name: 'gemma_serve:http_requests_total', help: 'HTTP requests by route template, method and status code.', labelNames: ['route', 'method', 'status'], registers,
    });
    this.httpDuration = new Histogram({
      name: 'gemma_serve:http_request_duration_seconds', help: 'HTTP request duration (to the last byte of the response) in seconds.',
      labelNames: ['route', 'method', 'status'], buckets: HTTP_BUCKETS, registers,
    });
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** The text exposition, after bringing engine-fed series up to date. */
  async render(): Promise<string> {
    const engine = this.state.loaded;
    if (engine !== null) {
      this.attach(engine);
      this.tokenHistograms(engine);
      // Counters brought up to the engine's cumulative totals (inc by 0 shows the series from the start).
      const labels = { model_name: engine.modelId };
      this.preemptionsSeen = catchUp(this.preemptions, labels, engine.stats?.preemptionsTotal ?? 0, this.preemptionsSeen);
      this.forwardSeen = catchUp(this.forward, labels, engine.forwardSecondsTotal, this.forwardSeen);
      const pc = engine.stats?.prefixCache;
      this.prefixSeen = {
        queries: catchUp(this.prefixQueries, labels, pc?.queries ?? 0, this.prefixSeen.queries),
        hits: catchUp(this.prefixHits, labels, pc?.hits ?? 0, this.prefixSeen.hits),
      };
    }
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** One HTTP response, finished or cut off. `route` is the route's template. */
  http(route: string, method: string, status: number, seconds: number): void {
    const labels = { route, method, status: String(status) };
    this.httpRequests.inc(labels);
    this.httpDuration.observe(labels, seconds);
  }

  /** Starts tracking one generation of a request that arrived at `arrival` (performance.now()). */
  generation(engine: Engine, arrival: number, promptTokens: number): GenerationTracker {
    this.attach(engine);
    const labels = { model_name: engine.modelId };
    const hists = this.tokenHistograms(engine);
    let scheduledAt: number | null = null;
    let cachedTokens = 0;
    let firstAt: number | null = null;
    let lastAt = 0;
    let tokens = 0;
    let ended = false;
    /** `count` tokens arrived at `now` (the first one ends the prefill: the prompt counts then). */
    const tokensAt = (now: number, count: number): void => {
      if (count <= 0) return;
      if (firstAt === null) {
        firstAt = now;
        this.hist.ttft.observe(labels, ms(arrival, now));
        this.promptTokens.inc(labels, promptTokens - cachedTokens);
        this.totals.promptTokens += promptTokens - cachedTokens;
      } else {
        this.hist.itl.observe(labels, ms(lastAt, now));
      }
      lastAt = now;
      tokens += count;
      this.generationTokens.inc(labels, count);
      this.totals.generationTokens += count;
    };
    const finish = (reason: string, completionTokens: number): void => {
      if (ended) return;
      ended = true;
      const now = performance.now();
      // The engine counts tokens it never sends as events (an end-of-sequence token).
      tokensAt(now, completionTokens - tokens);
      const scheduled = scheduledAt ?? now;
      this.success.inc({ ...labels, finished_reason: reason });
      this.hist.e2e.observe(labels, ms(arrival, now));
      this.hist.queue.observe(labels, ms(arrival, scheduled));
      this.hist.prefill.observe(labels, ms(scheduled, firstAt ?? now));
      this.hist.decode.observe(labels, ms(firstAt ?? now, firstAt === null ? now : lastAt));
      this.hist.inference.observe(labels, ms(scheduled, firstAt === null ? now : lastAt));
      hists.prompt.observe(labels, promptTokens);
      hists.generation.observe(labels, tokens);
    };
    return {
      event: (ev) => {
        if (ended) return;
        if (ev.type === 'scheduled') { scheduledAt = ev.at; cachedTokens = ev.cachedTokens; }
        else if (ev.type === 'token') tokensAt(performance.now(), 1);
        else if (ev.type === 'finish') finish(ev.reason, ev.usage.completion_tokens);
      },
      end: () => finish('abort', tokens),
    };
  }

  /** Observes every step's token count from `engine` (once per engine). */
  private attach(engine: Engine): void {
    if (this.stepEngine === engine) return;
    this.stepEngine = engine;
    this.unsubscribeStep?.();
    this.unsubscribeStep = engine.onStep((s) => this.hist.iteration.observe({ model_name: engine.modelId }, s.lastStep.numTokens));
  }

  /** Stops observing the engine's steps (the app closed; the engine may outlive it). */
  detach(): void {
    this.unsubscribeStep?.();
    this.unsubscribeStep = null;
    this.stepEngine = null;
  }

  /** Per-request token-count histograms: vLLM's 1-2-5 buckets up to the context length. */
  private tokenHistograms(engine: Engine): { prompt: Histogram<'model_name'>; generation: Histogram<'model_name'> } {
    this.tokenHists ??= {
      prompt: new Histogram({ name: this.prefix + 'request_prompt_tokens', help: 'Number of prefill tokens processed.', labelNames: ['model_name'], buckets: buckets125(engine.contextLength), registers: [this.registry] }),
      generation: new Histogram({ name: this.prefix + 'request_generation_tokens', help: 'Number of generation tokens processed.', labelNames: ['model_name'], buckets: buckets125(engine.contextLength), registers: [this.registry] }),
    };
    return this.tokenHists;
  }
}
