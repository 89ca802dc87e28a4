/**
 * Throughput and latency of the continuous-batching engine against the number of concurrent
 * requests. In process: starts the Engine on the model, runs one small warm-up request, then
 * for each concurrency level C submits C greedy requests at once (distinct random prompts of
 * exactly --prompt tokens, special ids excluded; --new tokens each with ignoreEos) and measures
 * aggregate output tokens/s, per-stream tokens/s, time to first token (p50 and p99; with C
 * requests p99 is the max, nearest rank) and the mean step batch size seen in engine.stats.
 * The KV budget is computed from the config so the largest level fits without preemption.
 * Also prints the KV cache bytes per sequence at 100 and 6,000 tokens of context (global vs
 * sliding layers, and all layers global for contrast), from KvCache's block accounting.
 *
 *   npx tsx bench/concurrency.ts EXPORT_OR_CHECKPOINT_DIR [--levels 1,2,4,8,16] [--prompt 128] [--new 128] [--out FILE.json]
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.ts';
import { readManifest } from '../src/engine/manifest.ts';
import { KvCache } from '../src/engine/kv-cache.ts';
import { KvCacheManager } from '../src/scheduler/kv-cache-manager.ts';
import { resolveModel } from '../src/engine/resolve-model.ts';
import type { Gemma2Config } from '../src/checkpoint/config.ts';
import type { SchedulerStats } from '../src/scheduler/types.ts';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    levels: { type: 'string', default: '1,2,4,8,16' },
    prompt: { type: 'string', default: '128' },
    new: { type: 'string', default: '128' },
    out: { type: 'string' },
  },
});
const dir = positionals[0];
if (!dir) throw new Error('usage: bench/concurrency.ts EXPORT_OR_CHECKPOINT_DIR [--levels 1,2,4,8,16] [--prompt 128] [--new 128] [--out FILE.json]');
const levels = opts.levels.split(',').map(Number);
const promptLen = Number(opts.prompt);
const newTokens = Number(opts.new);
if (levels.some((c) => !Number.isInteger(c) || c < 1) || !(promptLen >= 1) || !(newTokens >= 1)) throw new Error('levels, --prompt and --new must be positive integers');
const BLOCK_SIZE = 16; // the engine's default

// --- KV cache accounting (fp32, blockSize 16), from the config -------------------------------
const exportDir = await resolveModel(dir);
const { config } = readManifest(exportDir);
const accounting = new KvCacheManager(KvCache.layout(config, BLOCK_SIZE, { global: 1, sliding: 1 }));
const bytesPerBlockPerLayer = 2 * config.numKvHeads * BLOCK_SIZE * config.headDim * 4; // K and V, fp32
const numGlobal = config.slidingLayers.filter((s) => !s).length;
const numSliding = config.numLayers - numGlobal;
function kvBytes(c: Gemma2Config, len: number): { tokens: number; global: number; sliding: number; total: number; allGlobal: number } {
  const global = accounting.blocksNeeded('global', len) * bytesPerBlockPerLayer * numGlobal;
  const sliding = accounting.blocksNeeded('sliding', len) * bytesPerBlockPerLayer * numSliding;
  const allGlobal = accounting.blocksNeeded('global', len) * bytesPerBlockPerLayer * c.numLayers;
  return { tokens: len, global, sliding, total: global + sliding, allGlobal };
}
const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
const kv = [100, 6000].map((len) => kvBytes(config, len));

// Enough blocks of each kind for the largest level's sequences (plus one spare block each and
// the null block), so nothing is preempted: layoutFromBudget gives both pools floor(bytes / (g + s)).
const maxLevel = Math.max(...levels);
const seqLen = promptLen + newTokens;
const blocksPerSeq = accounting.blocksNeeded('global', seqLen) + 1;
const kvCacheBytes = (maxLevel * blocksPerSeq + 1) * bytesPerBlockPerLayer * config.numLayers;

// --- Engine ---------------------------------------------------------------------------------
const tLoad = performance.now();
const engine = await Engine.start({ modelDir: exportDir, kvCacheBytes, maxNumSeqs: maxLevel, maxWaiting: maxLevel });
const loadS = (performance.now() - tLoad) / 1000;

// Prompts: distinct random ids from the vocabulary, special ids (bos, eos, pad, added) excluded.
const V = Math.min(engine.vocabSize, engine.tokenizer.vocabSize);
const excluded = new Set([config.bosTokenId, config.padTokenId, ...config.eosTokenIds, ...engine.stopIds]);
const allowed: number[] = [];
for (let id = 0; id < V; id++) if (!excluded.has(id) && !engine.tokenizer.isSpecial(id)) allowed.push(id);
let rngState = 0x9e3779b9;
const rand = (): number => { // mulberry32: reproducible prompts
  rngState = (rngState + 0x6d2b79f5) | 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
};
const randomPrompt = (n: number): number[] => Array.from({ length: n }, () => allowed[Math.floor(rand() * allowed.length)]!);

// --- Step batch sizes: engine.stats is replaced by a new object after every scheduled step ---
let lastStats: SchedulerStats | null = null;
let steps: { batchSize: number; numTokens: number }[] = [];
const sampleStats = (): void => {
  const s = engine.stats;
  if (s === null || s === lastStats) return;
  lastStats = s;
  // Steps that ran something (the idle report after the last step has nothing running or waiting).
  if (s.lastStep.batchSize > 0 && s.running + s.waiting > 0) steps.push({ ...s.lastStep });
};

interface RequestTiming { submitMs: number; firstMs: number; finishMs: number; tokens: number }
async function runRequest(promptIds: number[], maxTokens: number): Promise<RequestTiming> {
  const submitMs = performance.now();
  let firstMs = NaN;
  let tokens = 0;
  for await (const ev of engine.generate({ promptIds, maxTokens, ignoreEos: true, temperature: 0 })) {
    sampleStats();
    if (ev.type === 'token') {
      if (tokens === 0) firstMs = performance.now();
      tokens++;
    } else if (ev.type === 'finish') {
      if (ev.usage.completion_tokens !== maxTokens) throw new Error(`expected ${maxTokens} tokens, got ${ev.usage.completion_tokens} (${ev.reason})`);
    }
  }
  return { submitMs, firstMs, finishMs: performance.now(), tokens };
}

/** Nearest rank: with n values, p99 is the max for n <= 100. */
const percentile = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil((p / 100) * xs.length) - 1)]!;
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const r = (x: number, d = 2): number => +x.toFixed(d);

const tWarm = performance.now();
await runRequest(randomPrompt(8), 4);
const warmupS = (performance.now() - tWarm) / 1000;
console.log(`loaded ${exportDir} in ${loadS.toFixed(1)} s (kv budget ${mib(kvCacheBytes)} MiB, maxNumSeqs ${maxLevel}); warm-up ${warmupS.toFixed(1)} s; host ${cpus().length} cpus, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);

const results = [];
for (const C of levels) {
  const prompts = Array.from({ length: C }, () => randomPrompt(promptLen));
  const preemptionsBefore = engine.stats?.preemptionsTotal ?? 0;
  const loadBefore = loadavg()[0]!;
  steps = [];
  const poll = setInterval(sampleStats, 1);
  const t0 = performance.now();
  const timings = await Promise.all(prompts.map((p) => runRequest(p, newTokens)));
  const wallS = (performance.now() - t0) / 1000;
  clearInterval(poll);
  sampleStats();
  const total = timings.reduce((a, t) => a + t.tokens, 0);
  const ttft = timings.map((t) => (t.firstMs - t.submitMs) / 1000);
  const decodeSteps = steps.filter((s) => s.numTokens === s.batchSize); // every row one token
  const row = {
    concurrency: C,
    wall_s: r(wallS),
    output_tokens: total,
    aggregate_tokens_per_s: r(total / wallS, 3),
    // Each request's tokens over its own submit → finish time; and after its first token.
    per_stream_tokens_per_s: r(mean(timings.map((t) => t.tokens / ((t.finishMs - t.submitMs) / 1000))), 3),
    per_stream_decode_tokens_per_s: r(mean(timings.map((t) => (t.tokens - 1) / ((t.finishMs - t.firstMs) / 1000))), 3),
    ttft_p50_s: r(percentile(ttft, 50), 3),
    ttft_p99_s: r(percentile(ttft, 99), 3), // nearest rank: the max of C values
    ttft_min_s: r(Math.min(...ttft), 3),
    steps_seen: steps.length,
    mean_step_batch: r(mean(steps.map((s) => s.batchSize))),
    mean_decode_step_batch: decodeSteps.length > 0 ? r(mean(decodeSteps.map((s) => s.batchSize))) : null,
    preemptions: (engine.stats?.preemptionsTotal ?? 0) - preemptionsBefore,
    loadavg_1m_before: r(loadBefore),
    loadavg_1m_after: r(loadavg()[0]!),
  };
  results.push(row);
  console.log(JSON.stringify(row));
}
await engine.close();

// --- Report ---------------------------------------------------------------------------------
const header = ['C', 'wall s', 'out tok', 'agg tok/s', 'stream tok/s', 'stream decode tok/s', 'TTFT p50 s', 'TTFT p99(max) s', 'mean step batch', 'mean decode batch', 'preempt'];
const table = results.map((x) => [x.concurrency, x.wall_s, x.output_tokens, x.aggregate_tokens_per_s, x.per_stream_tokens_per_s, x.per_stream_decode_tokens_per_s, x.ttft_p50_s, x.ttft_p99_s, x.mean_step_batch, x.mean_decode_step_batch ?? '-', x.preemptions].map(String));
const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padStart(widths[i]!)).join(' | ')} |`;
console.log(`\n${config.numLayers} layers (${numGlobal} global, ${numSliding} sliding, window ${config.slidingWindow}); prompt ${promptLen}, new ${newTokens}, greedy, ignoreEos`);
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const t of table) console.log(line(t));
console.log('TTFT p99 is the nearest-rank 99th percentile: with C <= 100 requests it is the max.');
console.log(`\nKV cache per sequence (fp32, blockSize ${BLOCK_SIZE}: ${bytesPerBlockPerLayer} B per block per layer):`);
for (const k of kv) {
  console.log(`  ${k.tokens} tokens: global ${k.global} B (${mib(k.global)} MiB) + sliding ${k.sliding} B (${mib(k.sliding)} MiB) = ${k.total} B (${mib(k.total)} MiB); all layers global: ${k.allGlobal} B (${mib(k.allGlobal)} MiB)`);
}

if (opts.out) {
  writeFileSync(opts.out, `${JSON.stringify({
    model: exportDir,
    config: { numLayers: config.numLayers, globalLayers: numGlobal, slidingLayers: numSliding, slidingWindow: config.slidingWindow, numKvHeads: config.numKvHeads, headDim: config.headDim, vocabSize: config.vocabSize },
    options: { levels, prompt: promptLen, new: newTokens, greedy: true, ignoreEos: true, kvCacheBytes, maxNumSeqs: maxLevel, blockSize: BLOCK_SIZE },
    host: { cpus: cpus().length, note: 'shared machine: timings are noisy' },
    load_s: r(loadS), warmup_s: r(warmupS),
    levels: results,
    kv_bytes_per_sequence: { bytesPerBlockPerLayer, contexts: kv },
  }, null, 2)}\n`);
  console.log(`wrote ${opts.out}`);
}
