// `gemma-serve bench` against the real server on a tiny model: the JSON report's documented
// fields per level, the SVG chart, rate mode, and failures (a port nobody listens on). Also the
// percentile function and the prompt-length calibration.
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { benchCommand, parseBenchArgs } from '../../src/cli/bench/cli.ts';
import { fitCalibration, parseRange, promptOfTokens, seededRandom } from '../../src/cli/bench/prompts.ts';
import type { BenchReport, LevelReport } from '../../src/cli/bench/run.ts';
import { percentile } from '../../src/cli/bench/stats.ts';
import { WorkloadSource } from '../../src/cli/bench/workloads.ts';
import type { RequestResult } from '../../src/cli/bench/client.ts';
import { main } from '../../src/cli.ts';
import { startTinyServer } from '../server/tiny-server.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-bench-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function sink(): Writable & { text: string } {
  const w = new Writable({ write(chunk, _enc, cb) { w.text += String(chunk); cb(); } }) as Writable & { text: string };
  w.text = '';
  return w;
}

async function bench(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = sink();
  const stderr = sink();
  const code = await benchCommand(argv, { stdout, stderr, progressEveryS: 0.5 });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((res) => srv.close(() => res()));
  return port;
}

const finite = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x);

function checkLevel(tt: Test, l: LevelReport): void {
  for (const key of ['duration_s', 'requests', 'errors', 'requests_per_s', 'output_tokens', 'output_tokens_per_s', 'output_tokens_per_s_per_stream', 'prompt_tokens_mean', 'max_concurrency', 'usage_reported'] as const) {
    tt.ok(finite(l[key]), `${key} is a finite number (${l[key]})`);
  }
  for (const key of ['p50', 'p90', 'p99', 'mean'] as const) tt.ok(finite(l.ttft_ms[key]), `ttft_ms.${key}`);
  for (const key of ['p50', 'p99', 'mean'] as const) tt.ok(finite(l.itl_ms[key]), `itl_ms.${key}`);
  for (const key of ['p50', 'p99', 'mean', 'max'] as const) tt.ok(finite(l.e2e_ms[key]), `e2e_ms.${key}`);
  tt.equal(l.errors, 0, 'no errors');
  tt.same(l.error_messages, []);
  tt.ok(l.requests > 0 && l.output_tokens_per_s > 0 && l.requests_per_s > 0, 'requests completed, tokens/s > 0');
  tt.equal(l.usage_reported, l.requests, 'gemma-serve sends usage on every stream');
  tt.ok(l.ttft_ms.p50! <= l.ttft_ms.p90! && l.ttft_ms.p90! <= l.ttft_ms.p99!, 'TTFT percentiles ordered');
  tt.ok(l.itl_ms.p50! <= l.itl_ms.p99!, 'ITL percentiles ordered');
  // TTFT counts only requests that streamed content (a 2-token completion can decode to no text),
  // e2e every request: their p99s are over different sets, so the bound is the slowest request.
  tt.ok(l.ttft_ms.p99! <= l.e2e_ms.max!, 'TTFT within the request time');
}

t.test('percentile: linear interpolation between closest ranks', async (tt) => {
  tt.equal(percentile([5], 50), 5);
  tt.equal(percentile([1, 2], 50), 1.5);
  tt.equal(percentile([3, 1, 2, 4], 0), 1);
  tt.equal(percentile([3, 1, 2, 4], 100), 4);
  tt.equal(percentile([4, 1, 3, 2], 50), 2.5, 'unsorted input');
  tt.ok(Math.abs(percentile([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 90) - 91) < 1e-9, 'p90 of 10..100');
  tt.ok(Math.abs(percentile(Array.from({ length: 101 }, (_, i) => i), 99) - 99) < 1e-9, 'p99 of 0..100');
  tt.ok(Number.isNaN(percentile([], 50)), 'no values: NaN');
  tt.throws(() => percentile([1], 101));
});

t.test('prompt sizing: ranges, calibration', async (tt) => {
  tt.same(parseRange('prompt-tokens', '64'), { min: 64, max: 64 });
  tt.same(parseRange('prompt-tokens', '64:512'), { min: 64, max: 512 });
  tt.throws(() => parseRange('prompt-tokens', '512:64'));
  tt.throws(() => parseRange('prompt-tokens', '0'));
  const cal = fitCalibration(10, 16, 30, 46); // 1.5 tokens/word, 1 token of overhead
  tt.equal(cal.tokensPerWord, 1.5);
  tt.equal(cal.overheadTokens, 1);
  tt.equal(promptOfTokens(151, cal, seededRandom(1)).split(' ').length, 100);
  tt.throws(() => parseBenchArgs(['--concurrency', '1', '--rate', '2']), /not both/);
  tt.throws(() => parseBenchArgs(['--concurrency', '0']), /positive/);
});

t.test('against the tiny server', async (tt) => {
  const server = await startTinyServer('bench');

  tt.test('concurrency sweep for a duration: report, chart, table', async (t2) => {
    const out = join(dir, 'report.json');
    const chart = join(dir, 'chart.svg');
    const r = await bench(['--url', server.baseURL, '--concurrency', '1,2', '--duration', '1.5', '--prompt-tokens', '24',
      '--max-tokens', '6', '--ignore-eos', '--warmup', '2', '--out', out, '--chart', chart]);
    t2.equal(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
    t2.equal(report.tool, 'gemma-serve bench');
    t2.equal(report.model, server.model, 'the model defaults to the first of /v1/models');
    t2.equal(report.mode, 'concurrency');
    t2.equal(report.prompt_calibration.source, 'tokenize', 'calibrated with POST /tokenize');
    t2.same(report.levels.map((l) => l.concurrency), [1, 2]);
    for (const l of report.levels) {
      checkLevel(t2, l);
      t2.equal(l.output_tokens, 6 * l.requests, 'ignore_eos: every request makes max_tokens tokens');
      t2.ok(l.duration_s >= 1.5, 'the level ran for its duration');
      t2.ok(Math.abs(l.prompt_tokens_mean! - 24) <= 12, `prompt of about 24 tokens (${l.prompt_tokens_mean}, chat template included)`);
    }
    const svg = readFileSync(chart, 'utf8');
    t2.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    t2.match(svg, /<\/svg>\n$/);
    for (const s of ['aggregate', 'per stream (mean)', 'TTFT p50', 'TTFT p99', 'ITL p50', 'ITL p99']) t2.match(svg, `data-series="${s}"`, s);
    t2.equal((svg.match(/<polyline /g) ?? []).length, 7, 'seven series');
    t2.equal((svg.match(/<circle /g) ?? []).length, 14, 'a point per series and level');
    t2.equal((svg.match(/<(?:svg|g|text|title|circle)\b/g) ?? []).length, (svg.match(/<\/(?:svg|g|text|title|circle)>/g) ?? []).length, 'tags balanced');
    t2.match(r.stdout, /conc\s+reqs\s+errs\s+req\/s\s+out tok\/s/);
    t2.match(r.stderr, /concurrency 2: .* done, 0 errors/, 'progress lines');
  });

  tt.test('shared-prefix workload: a fixed prefix, distinct questions; the server\'s prefix cache reuses it', async (t2) => {
    const out = join(dir, 'shared.json');
    const r = await bench(['--url', server.baseURL, '--endpoint', 'completions', '--workload', 'shared-prefix', '--shared-prefix-tokens', '80',
      '--concurrency', '2', '--requests', '6', '--prompt-tokens', '10', '--max-tokens', '3', '--ignore-eos', '--warmup', '1', '--out', out]);
    t2.equal(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
    t2.same(report.options.workload, { kind: 'shared-prefix', prefixTokens: 80 });
    const [l] = report.levels;
    checkLevel(t2, l!);
    t2.ok(l!.prompt_tokens_mean! > 40, `prompts of the prefix and a question (${l!.prompt_tokens_mean} tokens)`);
    // Warmed by the warm-up request: every counted request reuses the prefix's full blocks (all
    // but the question, of about 10 tokens, and the partial block the prefix ends in).
    t2.ok(l!.cached_tokens_mean! >= l!.prompt_tokens_mean! - 2 * 16, `cached tokens per request ${l!.cached_tokens_mean} of ${l!.prompt_tokens_mean}`);
    t2.match(r.stdout, /a shared prefix of 80 tokens/);
    t2.match(r.stdout, /cached\/req/);
  });

  tt.test('multi-turn workload: conversations resend their history', async (t2) => {
    const out = join(dir, 'turns.json');
    // One client: its 6 requests are exactly two conversations of 3 turns. With two clients the
    // count depends on timing (one that runs ahead finishes its conversation and starts a third
    // while the other is still on its second turn): the scripted test below covers that case.
    const r = await bench(['--url', server.baseURL, '--workload', 'multi-turn', '--turns', '3', '--concurrency', '1', '--requests', '6',
      '--prompt-tokens', '12', '--max-tokens', '8', '--ignore-eos', '--warmup', '0', '--out', out]);
    t2.equal(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
    const [l] = report.levels;
    checkLevel(t2, l!);
    t2.equal(l!.conversations?.count, 2, 'two conversations of 3 turns each');
    t2.ok(l!.conversations!.total_ms.p50! > 0, 'their wall time');
    t2.ok(l!.cached_tokens_mean! > 0, `later turns reuse the history (${l!.cached_tokens_mean} cached per request)`);
    t2.ok(l!.prompt_tokens_mean! > 20, 'histories grow the prompts');
    t2.throws(() => parseBenchArgs(['--workload', 'multi-turn', '--endpoint', 'completions']), /needs --endpoint chat/);
    t2.throws(() => parseBenchArgs(['--workload', 'nope']), /--workload/);
  });

  tt.test('rate mode with a request count, completions endpoint', async (t2) => {
    const out = join(dir, 'rate.json');
    const r = await bench(['--url', `${server.baseURL}/v1`, '--model', server.model, '--endpoint', 'completions', '--rate', '20',
      '--max-concurrency', '3', '--requests', '6', '--prompt-tokens', '8:32', '--max-tokens', '2:5', '--ignore-eos', '--warmup', '0', '--out', out]);
    t2.equal(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
    t2.equal(report.mode, 'rate');
    const [l] = report.levels;
    t2.equal(l!.rate, 20);
    t2.equal(l!.max_concurrency, 3);
    t2.equal(l!.requests, 6, 'exactly --requests requests counted');
    checkLevel(t2, l!);
    t2.ok(l!.output_tokens >= 12 && l!.output_tokens <= 30, 'sampled output lengths within 2..5 each');
  });
});

t.test('multi-turn source: a client that runs ahead starts a new conversation; only finished ones are counted', (tt) => {
  const source = new WorkloadSource({ kind: 'multi-turn', turns: 3 }, { promptTokens: { min: 4, max: 4 }, maxTokens: { min: 2, max: 2 } },
    { source: 'estimate', tokensPerWord: 1, overheadTokens: 0 }, seededRandom(3), '');
  const t0 = performance.now(); // the source stamps a conversation's start with performance.now()
  const result = (text: string, atMs: number): RequestResult => ({
    error: null, startMs: t0 + atMs, ttftMs: 1, e2eMs: 10, gapsMs: [], outputTokens: 2, promptTokens: null, cachedTokens: null, usage: true, text,
  });
  const before = performance.now() - t0;
  const a1 = source.next(); // A's start is stamped in here
  const after = performance.now() - t0;
  const b1 = source.next(); // client 2 holds conversation B
  tt.same([a1.history.length, b1.history.length], [0, 0], 'two new conversations');
  a1.settle(result('a1', 0));
  const a2 = source.next();
  tt.equal(a2.history.length, 2, 'client 1 goes on with A (its first turn and reply resent)');
  tt.same(a2.history.map((m) => m.content), [a1.prompt, 'a1']);
  a2.settle(result('a2', 20));
  const a3 = source.next();
  tt.equal(a3.history.length, 4);
  a3.settle(result('a3', 40));
  tt.equal(source.conversationsMs.length, 1, 'A finished its 3 turns');
  // First send (stamped inside the first next()) to the end of the third turn (t0 + 40 + 10).
  const wall = source.conversationsMs[0]!;
  tt.ok(wall >= 50 - after && wall <= 50 - before, `its wall time spans its turns (${wall} ms)`);
  const c1 = source.next();
  tt.equal(c1.history.length, 0, 'B is still in flight: client 1 starts conversation C');
  b1.settle(result('b1', 0));
  const b2 = source.next();
  tt.same(b2.history.map((m) => m.content), [b1.prompt, 'b1'], 'B goes on with its own history');
  b2.settle({ ...result('', 30), error: 'HTTP 500' });
  tt.equal(source.next().history.length, 0, 'a failed turn ends its conversation (B is not resumed)');
  c1.settle(result('c1', 60));
  tt.equal(source.conversationsMs.length, 1, 'unfinished conversations are not counted');
  tt.end();
});

t.test('a port nobody listens on', async (tt) => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  const out = join(dir, 'fail.json');
  const r = await bench(['--url', url, '--model', 'm', '--concurrency', '2', '--requests', '4', '--warmup', '1', '--out', out]);
  tt.equal(r.code, 1, 'non-zero exit');
  const report = JSON.parse(readFileSync(out, 'utf8')) as BenchReport;
  tt.equal(report.levels[0]!.requests, 0);
  tt.equal(report.levels[0]!.errors, 4, 'every request counted as an error');
  tt.match(report.levels[0]!.error_messages[0], /ECONNREFUSED/);
  tt.match(r.stderr, /4 request\(s\) failed; first: .*ECONNREFUSED/);

  // Without --model the model list is needed first: a clear message through the CLI, exit 1.
  const errors: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((s: string) => { errors.push(String(s)); return true; }) as typeof process.stderr.write;
  let code: number;
  try {
    code = await main(['bench', '--url', url, '--requests', '1', '--concurrency', '1']);
  } finally {
    process.stderr.write = write;
  }
  tt.equal(code, 1);
  tt.match(errors.join(''), new RegExp(`error: cannot connect to ${url.replace(/[.]/g, '\\.')} \\(.*ECONNREFUSED`));
});
