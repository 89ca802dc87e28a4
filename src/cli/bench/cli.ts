/**
 * `gemma-serve bench`: flags → BenchOptions, run, then the table (stdout), the JSON report
 * (--out) and the SVG chart (--chart). Exit code 0 when every counted request succeeded, 1 when
 * any failed (the report and chart are still written) or the server could not be reached.
 */
import { writeFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { UsageError, parseFlags } from '../usage.ts';
import { renderChart } from './chart.ts';
import { parseRange } from './prompts.ts';
import { runBench, type BenchOptions, type BenchReport, type LoadMode } from './run.ts';
import { parseWorkload } from './workloads.ts';
import { formatTable } from './stats.ts';

export interface BenchCliIo {
  readonly stdout: Writable;
  readonly stderr: Writable & { isTTY?: boolean };
  readonly progressEveryS?: number;
}

function positive(flag: string, text: string | undefined, integer: boolean): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new UsageError(`--${flag}: expected a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(text)}`);
  return n;
}

function list(flag: string, text: string, integer: boolean): number[] {
  return text.split(',').map((part) => positive(flag, part.trim(), integer)!);
}

/** Parses the bench command line. */
export function parseBenchArgs(argv: string[]): BenchOptions & { out?: string | undefined; chart?: string | undefined } {
  const v = parseFlags('bench', argv, {
    url: { type: 'string', default: 'http://127.0.0.1:8000' },
    model: { type: 'string' },
    'api-key': { type: 'string' },
    endpoint: { type: 'string', default: 'chat' },
    'prompt-tokens': { type: 'string', default: '128' },
    'max-tokens': { type: 'string', default: '128' },
    'ignore-eos': { type: 'boolean', default: false },
    temperature: { type: 'string' },
    concurrency: { type: 'string' },
    rate: { type: 'string' },
    'max-concurrency': { type: 'string' },
    duration: { type: 'string' },
    requests: { type: 'string' },
    warmup: { type: 'string', default: '2' },
    seed: { type: 'string', default: '0' },
    timeout: { type: 'string', default: '300' },
    out: { type: 'string' },
    chart: { type: 'string' },
    workload: { type: 'string', default: 'random' },
    'shared-prefix-tokens': { type: 'string' },
    turns: { type: 'string' },
  });
  if (v.endpoint !== 'chat' && v.endpoint !== 'completions') throw new UsageError(`--endpoint: chat or completions, got ${JSON.stringify(v.endpoint)}`);
  if (v.concurrency !== undefined && v.rate !== undefined) throw new UsageError('bench: give --concurrency or --rate, not both');
  if (v['max-concurrency'] !== undefined && v.rate === undefined) throw new UsageError('bench: --max-concurrency goes with --rate');
  if (v.duration !== undefined && v.requests !== undefined) throw new UsageError('bench: give --duration or --requests, not both');
  const mode: LoadMode = v.rate !== undefined
    ? { kind: 'rate', rates: list('rate', v.rate, false), maxConcurrency: positive('max-concurrency', v['max-concurrency'] ?? '64', true)! }
    : { kind: 'concurrency', levels: list('concurrency', v.concurrency ?? '1,2,4,8', true) };
  const temperature = v.temperature === undefined ? undefined : Number(v.temperature);
  if (temperature !== undefined && !(temperature >= 0)) throw new UsageError(`--temperature: expected a number ≥ 0, got ${JSON.stringify(v.temperature)}`);
  const warmup = Number(v.warmup);
  const seed = Number(v.seed);
  if (!Number.isInteger(warmup) || warmup < 0) throw new UsageError(`--warmup: expected an integer ≥ 0, got ${JSON.stringify(v.warmup)}`);
  if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed: expected an integer ≥ 0, got ${JSON.stringify(v.seed)}`);
  const envKey = (process.env['GEMMA_SERVE_API_KEY'] ?? '').split(',').map((k) => k.trim()).find((k) => k !== '');
  const requests = positive('requests', v.requests, true);
  const workload = parseWorkload(v.workload, positive('shared-prefix-tokens', v['shared-prefix-tokens'], true), positive('turns', v.turns, true), v.endpoint);
  return {
    url: v.url, apiKey: v['api-key'] ?? envKey, model: v.model, endpoint: v.endpoint,
    promptTokens: parseRange('prompt-tokens', v['prompt-tokens']), maxTokens: parseRange('max-tokens', v['max-tokens']),
    ignoreEos: v['ignore-eos'], temperature, mode,
    durationS: requests === undefined ? positive('duration', v.duration ?? '30', false) : undefined, requests,
    warmup, seed, timeoutS: positive('timeout', v.timeout, false)!, out: v.out, chart: v.chart, workload,
  };
}

/** The end-of-run table. */
export function reportTable(report: BenchReport): string {
  const w = report.options.workload;
  const extra = w.kind === 'random' ? [] : w.kind === 'shared-prefix' ? ['cached/req'] : ['cached/req', 'conv', 'conv p50'];
  const header = [report.mode === 'rate' ? 'rate/s' : 'conc', 'reqs', 'errs', 'req/s', 'out tok/s', 'tok/s/stream',
    'TTFT p50', 'TTFT p90', 'TTFT p99', 'ITL p50', 'ITL p99', ...extra];
  const rows = report.levels.map((l) => [report.mode === 'rate' ? l.rate : l.concurrency, l.requests, l.errors, l.requests_per_s,
    l.output_tokens_per_s, l.output_tokens_per_s_per_stream, l.ttft_ms.p50, l.ttft_ms.p90 ?? null, l.ttft_ms.p99, l.itl_ms.p50, l.itl_ms.p99,
    ...(w.kind === 'random' ? [] : [l.cached_tokens_mean]), ...(w.kind === 'multi-turn' ? [l.conversations?.count ?? 0, l.conversations?.total_ms.p50 ?? null] : [])]);
  const what = w.kind === 'random' ? '' : w.kind === 'shared-prefix' ? `, a shared prefix of ${w.prefixTokens} tokens` : `, ${w.turns}-turn conversations`;
  return `${report.model} at ${report.url} (${report.endpoint}${what}); latencies in ms\n${formatTable(header, rows)}`;
}

/** The `bench` subcommand. */
export async function benchCommand(argv: string[], io: BenchCliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const { out, chart, ...opts } = parseBenchArgs(argv);
  const report = await runBench(opts, { progress: io.stderr, progressEveryS: io.progressEveryS });
  io.stdout.write(reportTable(report));
  if (out !== undefined) {
    writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
    io.stderr.write(`wrote ${out}\n`);
  }
  if (chart !== undefined) {
    writeFileSync(chart, renderChart(report));
    io.stderr.write(`wrote ${chart}\n`);
  }
  const failed = report.levels.reduce((a, l) => a + l.errors, 0);
  if (failed > 0) {
    const first = report.levels.flatMap((l) => l.error_messages)[0];
    io.stderr.write(`error: ${failed} request(s) failed; first: ${first}\n`);
    return 1;
  }
  return 0;
}
