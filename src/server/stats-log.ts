/**
 * The periodic engine stats line (msg "engine stats"), vLLM's "Avg prompt throughput" line as
 * JSON: prompt and generation tokens/s over the interval, running, waiting, preemptions,
 * KV cache use per layer kind (0..1), the share of each pool held by the prefix cache (blocks
 * kept for reuse that no sequence holds, 0..1) and the prefix cache hit rate over the interval
 * (reused / looked-up prompt tokens; null when nothing was looked up). Written every interval while there is activity (tokens
 * produced, or requests running or waiting), and at least once a minute when idle.
 */
import type { EngineState } from './engine-state.ts';

export const DEFAULT_STATS_INTERVAL_SECONDS = 10;

export interface StatsLogOptions {
  readonly intervalMs: number;
  /** Longest silence when idle (default 60 s). */
  readonly quietMs?: number;
}

export interface TokenTotals {
  readonly promptTokens: number;
  readonly generationTokens: number;
}

/** Starts the line; returns the function that stops it. */
export function startStatsLog(
  log: { info(obj: object, msg: string): void }, state: EngineState, totals: TokenTotals, opts: StatsLogOptions,
): () => void {
  const quietMs = opts.quietMs ?? 60_000;
  let last = { at: performance.now(), prompt: totals.promptTokens, generation: totals.generationTokens, queries: 0, hits: 0 };
  let logged = last.at;
  const tick = (): void => {
    const engine = state.loaded;
    const now = performance.now();
    const seconds = (now - last.at) / 1000;
    const prompt = totals.promptTokens - last.prompt;
    const generation = totals.generationTokens - last.generation;
    const s = engine?.stats ?? null;
    const pc = s?.prefixCache ?? { queries: last.queries, hits: last.hits };
    const [queries, hits] = [pc.queries - last.queries, pc.hits - last.hits];
    last = { at: now, prompt: totals.promptTokens, generation: totals.generationTokens, queries: pc.queries, hits: pc.hits };
    if (engine === null || seconds <= 0) return;
    const active = prompt > 0 || generation > 0 || (s !== null && s.running + s.waiting > 0);
    if (!active && now - logged < quietMs) return;
    logged = now;
    const share = (n: number | undefined, total: number | undefined): number =>
      (n === undefined || total === undefined || total <= 0 ? 0 : Math.round((n / total) * 1e4) / 1e4);
    const use = (u: { usedBlocks: number; totalBlocks: number } | undefined): number => share(u?.usedBlocks, u?.totalBlocks);
    const cached = (u: { cachedBlocks: number; totalBlocks: number } | undefined): number => share(u?.cachedBlocks, u?.totalBlocks);
    log.info({
      promptThroughput: Math.round((prompt / seconds) * 10) / 10,
      generationThroughput: Math.round((generation / seconds) * 10) / 10,
      running: s?.running ?? 0, waiting: s?.waiting ?? 0, preemptions: s?.preemptionsTotal ?? 0,
      kvCacheUsage: { global: use(s?.cache.global), sliding: use(s?.cache.sliding) },
      kvCacheCached: { global: cached(s?.cache.global), sliding: cached(s?.cache.sliding) },
      prefixCacheHitRate: queries > 0 ? share(hits, queries) : null,
    }, 'engine stats');
  };
  const timer = setInterval(tick, opts.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
