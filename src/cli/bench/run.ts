/**
 * The load generator: warm-up, then one measured run per level (a number of concurrent
 * clients, or a Poisson request rate), each summarized into the report's `levels`.
 *
 * Concurrency mode: C clients each send a request as soon as their previous one ends.
 * Rate mode: arrivals on a Poisson timeline at R requests/s; at most maxConcurrency are in
 * flight, and an arrival that finds them all busy is sent as soon as one ends. A level stops
 * sending after `durationS` seconds or `requests` requests; the requests still in flight are
 * completed and counted, and the level's wall time runs from its first send to its last end.
 * A level also stops early when its first 10 requests all failed (no point hammering a server
 * that refuses everything).
 */
import type { Writable } from 'node:stream';
import { ConfigError } from '../../errors.ts';
import { streamRequest, Target, type Endpoint, type RequestResult } from './client.ts';
import { ESTIMATE, seededRandom, type Calibration, type Range } from './prompts.ts';
import { sharedPrefix, WorkloadSource, type Workload } from './workloads.ts';
import { mean, percentile, round } from './stats.ts';

export type LoadMode =
  | { readonly kind: 'concurrency'; readonly levels: readonly number[] }
  | { readonly kind: 'rate'; readonly rates: readonly number[]; readonly maxConcurrency: number };

export interface BenchOptions {
  readonly url: string;
  readonly apiKey?: string | undefined;
  /** Default: the first id of GET /v1/models. */
  readonly model?: string | undefined;
  readonly endpoint: Endpoint;
  readonly promptTokens: Range;
  readonly maxTokens: Range;
  readonly ignoreEos: boolean;
  readonly temperature?: number | undefined;
  readonly mode: LoadMode;
  /** Per level: stop sending after this many seconds, or after `requests` requests (exactly one of them). */
  readonly durationS?: number | undefined;
  readonly requests?: number | undefined;
  /** Requests sent before the first level and not counted. */
  readonly warmup: number;
  readonly seed: number;
  /** Per request, seconds. */
  readonly timeoutS: number;
  /** What the requests send (workloads.ts); default `random`. */
  readonly workload?: Workload | undefined;
}

export interface Quantiles {
  readonly p50: number | null;
  readonly p90?: number | null;
  readonly p99: number | null;
  readonly mean: number | null;
  /** e2e only: the slowest request. */
  readonly max?: number | null;
}

/** One level of the report (see docs/BENCHMARKS.md for the meaning of each field). */
export interface LevelReport {
  readonly concurrency: number | null;
  readonly rate: number | null;
  readonly max_concurrency: number;
  readonly duration_s: number;
  readonly requests: number;
  readonly errors: number;
  readonly error_messages: readonly string[];
  readonly requests_per_s: number;
  readonly prompt_tokens_mean: number | null;
  readonly output_tokens: number;
  readonly output_tokens_per_s: number;
  readonly output_tokens_per_s_per_stream: number | null;
  readonly ttft_ms: Quantiles;
  readonly itl_ms: Quantiles;
  readonly e2e_ms: Quantiles;
  readonly usage_reported: number;
  /** Mean usage.prompt_tokens_details.cached_tokens of the requests that reported it (a prefix cache's reuse), else null. */
  readonly cached_tokens_mean: number | null;
  /** Multi-turn: wall time of each conversation that ran all its turns (first send to last end). */
  readonly conversations: { readonly count: number; readonly total_ms: Quantiles } | null;
}

export interface BenchReport {
  readonly tool: 'gemma-serve bench';
  readonly schema: 1;
  readonly started_at: string;
  readonly url: string;
  readonly model: string;
  readonly endpoint: Endpoint;
  readonly mode: LoadMode['kind'];
  readonly options: {
    readonly prompt_tokens: Range;
    readonly max_tokens: Range;
    readonly ignore_eos: boolean;
    readonly temperature: number | null;
    readonly duration_s: number | null;
    readonly requests: number | null;
    readonly warmup: number;
    readonly seed: number;
    readonly timeout_s: number;
    readonly workload: Workload;
  };
  readonly prompt_calibration: { readonly source: Calibration['source']; readonly tokens_per_word: number; readonly overhead_tokens: number };
  readonly warmup: { readonly requests: number; readonly errors: number };
  readonly levels: LevelReport[];
}

/** Where progress and notices go (stderr in the CLI). */
export interface BenchIo {
  readonly progress: Writable & { isTTY?: boolean };
  /** Seconds between progress lines when `progress` is not a TTY (default 5). */
  readonly progressEveryS?: number;
}

/** A level in progress. */
class LevelRun {
  readonly results: RequestResult[] = [];
  issued = 0;
  inFlight = 0;
  readonly startMs = performance.now();
  private readonly inFlightDone = new Set<() => void>();

  constructor(private readonly opts: BenchOptions, private readonly send: () => Promise<RequestResult>) {}

  /** Whether another request may be sent. */
  canSend(): boolean {
    const o = this.opts;
    if (this.results.length >= 10 && this.results.every((r) => r.error !== null)) return false;
    return o.requests !== undefined ? this.issued < o.requests : performance.now() - this.startMs < o.durationS! * 1000;
  }

  async one(): Promise<void> {
    this.issued++;
    this.inFlight++;
    try {
      this.results.push(await this.send());
    } finally {
      this.inFlight--;
      for (const done of this.inFlightDone) done();
    }
  }

  /** Resolves when a request in flight ends. */
  nextEnd(): Promise<void> {
    return new Promise((res) => { const done = (): void => { this.inFlightDone.delete(done); res(); }; this.inFlightDone.add(done); });
  }

  get outputTokens(): number {
    return this.results.reduce((a, r) => a + (r.error === null ? r.outputTokens : 0), 0);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, Math.max(0, ms)));

/** C clients, each sending its next request when the previous ends. */
async function runClosedLoop(level: LevelRun, clients: number): Promise<void> {
  await Promise.all(Array.from({ length: clients }, async () => { while (level.canSend()) await level.one(); }));
}

/** Poisson arrivals at `rate`/s, at most `maxConcurrency` in flight. */
async function runOpenLoop(level: LevelRun, rate: number, maxConcurrency: number, rand: () => number): Promise<void> {
  const sent: Promise<void>[] = [];
  let nextAt = level.startMs;
  while (level.canSend()) {
    while (level.inFlight >= maxConcurrency) await level.nextEnd();
    sent.push(level.one());
    nextAt += (-Math.log(1 - rand()) / rate) * 1000; // exponential inter-arrival time
    await sleep(nextAt - performance.now());
  }
  await Promise.all(sent);
}

function quantiles(xs: readonly number[], withP90: boolean): Quantiles {
  return { p50: round(percentile(xs, 50)), ...(withP90 ? { p90: round(percentile(xs, 90)) } : {}), p99: round(percentile(xs, 99)), mean: round(mean(xs)) };
}

/** The report entry of a finished level. */
export function summarizeLevel(results: readonly RequestResult[], wallMs: number, level: { concurrency: number | null; rate: number | null; maxConcurrency: number }, conversationsMs: readonly number[] | null = null): LevelReport {
  const ok = results.filter((r) => r.error === null);
  const failed = results.filter((r) => r.error !== null);
  const durationS = wallMs / 1000;
  const outputTokens = ok.reduce((a, r) => a + r.outputTokens, 0);
  const prompts = ok.map((r) => r.promptTokens).filter((n): n is number => n !== null);
  return {
    concurrency: level.concurrency,
    rate: level.rate,
    max_concurrency: level.maxConcurrency,
    duration_s: round(durationS, 3) ?? 0,
    requests: ok.length,
    errors: failed.length,
    error_messages: [...new Set(failed.map((r) => r.error!))].slice(0, 5),
    requests_per_s: round(ok.length / durationS, 3) ?? 0,
    prompt_tokens_mean: round(mean(prompts), 1),
    output_tokens: outputTokens,
    output_tokens_per_s: round(outputTokens / durationS, 2) ?? 0,
    output_tokens_per_s_per_stream: round(mean(ok.filter((r) => r.e2eMs > 0).map((r) => r.outputTokens / (r.e2eMs / 1000))), 2),
    ttft_ms: quantiles(ok.map((r) => r.ttftMs).filter(Number.isFinite), true),
    itl_ms: quantiles(ok.flatMap((r) => r.gapsMs), false),
    e2e_ms: { ...quantiles(ok.map((r) => r.e2eMs), false), max: ok.length > 0 ? round(Math.max(...ok.map((r) => r.e2eMs))) : null },
    usage_reported: ok.filter((r) => r.usage).length,
    cached_tokens_mean: round(mean(ok.map((r) => r.cachedTokens).filter((n): n is number => n !== null)), 1),
    conversations: conversationsMs === null ? null : { count: conversationsMs.length, total_ms: { ...quantiles(conversationsMs, false), max: conversationsMs.length > 0 ? round(Math.max(...conversationsMs)) : null } },
  };
}

/** Runs the benchmark; resolves to the report. Throws a ConfigError when the server cannot be reached for its model list. */
export async function runBench(opts: BenchOptions, io: BenchIo): Promise<BenchReport> {
  if ((opts.durationS === undefined) === (opts.requests === undefined)) throw new ConfigError('give exactly one of durationS and requests');
  const startedAt = new Date().toISOString();
  const target = new Target(opts.url, opts.apiKey);
  const abort = new AbortController();
  try {
    const model = opts.model ?? (await target.listModels())[0];
    if (model === undefined) throw new ConfigError(`${target.baseUrl}/v1/models lists no model; pass --model`, 'model');
    const rand = seededRandom(opts.seed);
    const calibration = await target.calibrate(model, rand).catch(() => ESTIMATE);
    const workload = opts.workload ?? { kind: 'random' };
    const prefix = sharedPrefix(workload, calibration, rand);
    const newSource = (): WorkloadSource => new WorkloadSource(workload, opts, calibration, rand, prefix);
    const sender = (source: WorkloadSource) => async (): Promise<RequestResult> => {
      const next = source.next();
      const result = await streamRequest(target, {
        endpoint: opts.endpoint, model, ignoreEos: opts.ignoreEos, temperature: opts.temperature,
        prompt: next.prompt, history: next.history, maxTokens: next.maxTokens,
      }, AbortSignal.any([abort.signal, AbortSignal.timeout(opts.timeoutS * 1000)]));
      next.settle(result);
      return result;
    };
    const send = sender(newSource());

    const progress = new Progress(io);
    // Warm-up: as concurrent as the first level, not counted.
    const firstWidth = opts.mode.kind === 'concurrency' ? opts.mode.levels[0]! : opts.mode.maxConcurrency;
    const warm = await runWarmup(opts.warmup, Math.max(1, Math.min(opts.warmup, firstWidth)), send, progress);

    const levels: LevelReport[] = [];
    const points = opts.mode.kind === 'concurrency'
      ? opts.mode.levels.map((c) => ({ concurrency: c, rate: null, maxConcurrency: c }))
      : opts.mode.rates.map((r) => ({ concurrency: null, rate: r, maxConcurrency: (opts.mode as { maxConcurrency: number }).maxConcurrency }));
    for (const point of points) {
      const source = newSource();
      const level = new LevelRun(opts, sender(source));
      const label = point.concurrency !== null ? `concurrency ${point.concurrency}` : `rate ${point.rate}/s`;
      const stop = progress.track(label, level, opts);
      if (point.rate === null) await runClosedLoop(level, point.maxConcurrency);
      else await runOpenLoop(level, point.rate, point.maxConcurrency, rand);
      stop();
      levels.push(summarizeLevel(level.results, performance.now() - level.startMs, point, workload.kind === 'multi-turn' ? source.conversationsMs : null));
    }
    return {
      tool: 'gemma-serve bench', schema: 1, started_at: startedAt,
      url: target.baseUrl, model, endpoint: opts.endpoint, mode: opts.mode.kind,
      options: {
        prompt_tokens: opts.promptTokens, max_tokens: opts.maxTokens, ignore_eos: opts.ignoreEos, temperature: opts.temperature ?? null,
        duration_s: opts.durationS ?? null, requests: opts.requests ?? null, warmup: opts.warmup, seed: opts.seed, timeout_s: opts.timeoutS, workload,
      },
      prompt_calibration: { source: calibration.source, tokens_per_word: round(calibration.tokensPerWord, 4) ?? 0, overhead_tokens: round(calibration.overheadTokens, 2) ?? 0 },
      warmup: { requests: opts.warmup, errors: warm.errors },
      levels,
    };
  } finally {
    abort.abort();
    await target.close();
  }
}

async function runWarmup(count: number, width: number, send: () => Promise<RequestResult>, progress: Progress): Promise<{ errors: number }> {
  if (count === 0) return { errors: 0 };
  progress.note(`warm-up: ${count} request(s), ${width} at a time`);
  let next = 0;
  let errors = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < count) {
      next++;
      if ((await send()).error !== null) errors++;
    }
  }));
  return { errors };
}

/** The progress line on stderr: rewritten in place on a TTY, else one line every few seconds. */
class Progress {
  constructor(private readonly io: BenchIo) {}

  note(text: string): void {
    this.io.progress.write(`${text}\n`);
  }

  /** Starts reporting a level; the returned function prints its final line and stops. */
  track(label: string, level: LevelRun, opts: BenchOptions): () => void {
    const tty = this.io.progress.isTTY === true;
    const line = (): string => {
      const elapsed = (performance.now() - level.startMs) / 1000;
      const limit = opts.requests !== undefined ? `${level.issued}/${opts.requests} sent` : `${elapsed.toFixed(1)}/${opts.durationS} s`;
      const errors = level.results.filter((r) => r.error !== null).length;
      return `${label}: ${limit}, ${level.results.length - errors} done, ${errors} errors, ${level.inFlight} in flight, `
        + `${level.outputTokens} tokens (${(level.outputTokens / Math.max(elapsed, 1e-3)).toFixed(1)} tok/s)`;
    };
    const write = (final: boolean): void => { this.io.progress.write(tty ? `\r\x1b[K${line()}${final ? '\n' : ''}` : `${line()}\n`); };
    const timer = setInterval(() => write(false), tty ? 250 : (this.io.progressEveryS ?? 5) * 1000);
    return () => { clearInterval(timer); write(true); };
  }
}
