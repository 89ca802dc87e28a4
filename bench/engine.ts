/**
 * The engine alone, no HTTP: prefill speed and decode step time, so engine regressions show
 * without the server in the way.
 *
 *   npm run bench:engine -- [MODEL_DIR] [--prompt 512[,N…]] [--batches 1,4,8,16|none] [--steps 16] [--runs 5] [--int4-kernel auto|ort|gemma-serve] [--attention-kernel auto|ort] [--threads N] [--sampler graph|js] [--json FILE]
 *
 * MODEL_DIR: an export or a checkpoint (exported once into a temporary data dir); none: a tiny
 * random-weight model generated into a temporary dir. What each number includes:
 * - prefill: a lone request of --prompt random token ids (the model's context − 1 if smaller;
 *   each length of a list in turn) and max_tokens 1, timed on the main thread from Engine.generate to its first token event:
 *   the whole prompt in one step (maxNumBatchedTokens ≥ the prompt), logits of the last position,
 *   greedy sampling of one token, and the message round trip to the worker thread. Median of
 *   --runs runs after one unmeasured run. `--batches none`: prefill only.
 * - decode at batch B: B requests of 16-token prompts, greedy, ignore_eos, submitted together so
 *   they decode in lockstep (one row each per step). The step time is the time from the arrival
 *   of the batch's token 2 to that of its last token, over --steps steps: building inputs, the
 *   ORT run, writing K/V, greedy sampling, the worker's scheduling and its messages; not
 *   detokenizing (the main thread, overlapped) and no HTTP. Median of --runs runs; tokens/s =
 *   B / step time. The count of full-batch steps (Engine.onStep) is printed as a check.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeRandomCheckpoint } from '../src/checkpoint/make-random.ts';
import { Engine } from '../src/engine/engine.ts';
import type { SamplerKind } from '../src/engine/types.ts';
import { KvCache } from '../src/engine/kv-cache.ts';
import { readManifest } from '../src/engine/manifest.ts';
import { resolveModel } from '../src/engine/resolve-model.ts';
import { INT4_KERNELS, type Int4Kernel } from '../src/engine/native/q4-graph.ts';
import { ATTENTION_KERNELS, type AttentionKernel } from '../src/engine/native/attention-graph.ts';
import { seededRandom } from '../src/cli/bench/prompts.ts';
import { formatTable, median, round } from '../src/cli/bench/stats.ts';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    prompt: { type: 'string', default: '512' },
    batches: { type: 'string', default: '1,4,8,16' },
    steps: { type: 'string', default: '16' },
    runs: { type: 'string', default: '5' },
    json: { type: 'string' },
    'int4-kernel': { type: 'string', default: 'auto' },
    'attention-kernel': { type: 'string', default: 'auto' },
    threads: { type: 'string', default: '0' },
    sampler: { type: 'string', default: 'graph' },
  },
});
const batches = opts.batches === 'none' ? [] : opts.batches.split(',').map(Number);
const promptLens = opts.prompt.split(',').map(Number);
const steps = Number(opts.steps);
const runs = Number(opts.runs);
const int4Kernel = opts['int4-kernel'] as Int4Kernel;
const attentionKernel = opts['attention-kernel'] as AttentionKernel;
const threads = Number(opts.threads);
const sampler = opts.sampler as SamplerKind;
if (!(['graph', 'js'] as const).includes(sampler as never)) throw new Error('--sampler: graph or js');
if (batches.some((b) => !Number.isInteger(b) || b < 1) || !(steps >= 1) || !(runs >= 1) || promptLens.some((n) => !Number.isInteger(n) || n < 1) || !INT4_KERNELS.includes(int4Kernel) || !ATTENTION_KERNELS.includes(attentionKernel) || !Number.isInteger(threads) || threads < 0) {
  throw new Error('usage: bench/engine.ts [MODEL_DIR] [--prompt 512[,N…]] [--batches 1,4,8,16|none] [--steps 16] [--runs 5] [--int4-kernel auto|ort|gemma-serve] [--attention-kernel auto|ort] [--threads N] [--sampler graph|js] [--json FILE]');
}

const tmp = mkdtempSync(join(tmpdir(), 'gs-bench-engine-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
let modelDir = positionals[0];
if (modelDir === undefined) {
  modelDir = join(tmp, 'tiny');
  makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: modelDir });
}
const exportDir = await resolveModel(modelDir, tmp);
const { config } = readManifest(exportDir);

const DECODE_PROMPT = 16;
const WARM_STEPS = 2;
const maxBatch = Math.max(1, ...batches);
const prefillLens = promptLens.map((n) => Math.min(n, config.maxPositions - 1));
const promptLen = Math.max(...prefillLens);
const decodeLen = DECODE_PROMPT + 1 + WARM_STEPS + steps;
// KV budget (fp32 upper bound): every decode sequence (or the prompt) plus a block of slack per sequence and layer kind.
const bytesPerToken = KvCache.bytesPerToken(config);
const kvCacheBytes = (Math.max(promptLen + 1, maxBatch * decodeLen) + 2 * 16 * (maxBatch + 1)) * bytesPerToken * 2;

const tLoad = performance.now();
const engine = await Engine.start({ modelDir: exportDir, kvCacheBytes, maxNumSeqs: maxBatch, maxWaiting: maxBatch, maxNumBatchedTokens: Math.max(promptLen, maxBatch * DECODE_PROMPT), int4Kernel, attentionKernel, threads, sampler });
const loadS = (performance.now() - tLoad) / 1000;

// Random prompts over the ordinary (non-special) ids.
const allowed: number[] = [];
for (let id = 0; id < Math.min(engine.vocabSize, engine.tokenizer.vocabSize); id++) if (!engine.tokenizer.isSpecial(id)) allowed.push(id);
const rand = seededRandom(1);
const prompt = (n: number): number[] => Array.from({ length: n }, () => allowed[Math.floor(rand() * allowed.length)]!);

async function drain(events: AsyncIterable<{ type: string }>, onToken: () => void = () => {}): Promise<void> {
  for await (const ev of events) if (ev.type === 'token') onToken();
}

// --- Prefill ----------------------------------------------------------------------------------
interface PrefillRow { prompt_tokens: number; runs: number; median_ms: number | null; min_ms: number | null; tokens_per_s: number | null }
const prefill: PrefillRow[] = [];
for (const len of prefillLens) {
  const ms: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const t0 = performance.now();
    let first = NaN;
    await drain(engine.generate({ promptIds: prompt(len), maxTokens: 1, temperature: 0 }), () => { first = performance.now(); });
    if (i > 0) ms.push(first - t0);
  }
  const med = median(ms);
  prefill.push({ prompt_tokens: len, runs, median_ms: round(med, 2), min_ms: round(Math.min(...ms), 2), tokens_per_s: round((len * 1000) / med, 2) });
}

// --- Decode -----------------------------------------------------------------------------------
// Step reports reach the main thread in bursts (its event loop is busy with token messages), so
// single intervals between them say nothing; instead a window of --steps lockstep decode steps is
// timed from the arrival of the last sequence's token WARM_STEPS to that of its last token.
interface DecodeRow { batch: number; step_ms: number | null; min_ms: number | null; tokens_per_s: number | null; per_seq_tokens_per_s: number | null; runs: number; full_steps: number }
const decode: DecodeRow[] = [];
const maxTokens = 1 + WARM_STEPS + steps; // token 0 comes from the prefill step
for (const B of batches) {
  const windows: number[] = [];
  let fullSteps = 0;
  for (let run = 0; run < runs; run++) {
    const off = engine.onStep((s) => { if (s.lastStep.batchSize === B && s.lastStep.numTokens === B) fullSteps++; });
    const arrivals = Array.from({ length: B }, () => [] as number[]);
    await Promise.all(arrivals.map((times) => drain(engine.generate({ promptIds: prompt(DECODE_PROMPT), maxTokens, temperature: 0, ignoreEos: true }), () => times.push(performance.now()))));
    off();
    const latest = (k: number): number => Math.max(...arrivals.map((times) => times[k]!));
    windows.push((latest(maxTokens - 1) - latest(WARM_STEPS)) / (maxTokens - 1 - WARM_STEPS));
  }
  const med = median(windows);
  decode.push({ batch: B, step_ms: round(med, 2), min_ms: round(Math.min(...windows), 2), tokens_per_s: round((B * 1000) / med, 2), per_seq_tokens_per_s: round(1000 / med, 2), runs, full_steps: round(fullSteps / runs, 1)! });
}
const int4Swapped = engine.int4Swapped;
await engine.close();

const result = {
  model: modelDir, export: exportDir,
  config: { numLayers: config.numLayers, hiddenSize: config.hiddenSize, vocabSize: config.vocabSize, maxPositions: config.maxPositions },
  host: { cpus: cpus().length, loadavg_1m: round(loadavg()[0]!, 2) },
  load_s: round(loadS, 2),
  int4_kernel: { asked: int4Kernel, gemma_serve_matmuls: int4Swapped },
  attention_kernel: { asked: attentionKernel, fused_layers: engine.attentionFused },
  // One prompt length: an object, as before lists were taken; several: one per length.
  prefill: prefill.length === 1 ? prefill[0]! : prefill,
  decode,
};

process.stdout.write(`${modelDir}: ${config.numLayers} layers, hidden ${config.hiddenSize}, vocab ${config.vocabSize}; loaded in ${result.load_s} s; `
  + `${result.host.cpus} cpus, load ${result.host.loadavg_1m}; greedy; int4 matmuls: ${int4Swapped > 0 ? `gemma-serve's kernel (${int4Swapped})` : "ONNX Runtime's"}; attention: ${engine.attentionFused > 0 ? `fused (${engine.attentionFused} layers)` : 'exported nodes'}\n`);
process.stdout.write(formatTable(['measure', 'tokens', 'median ms', 'min ms', 'tokens/s', 'per seq tok/s', 'n'], [
  ...prefill.map((p) => [`prefill ${p.prompt_tokens}`, p.prompt_tokens, p.median_ms, p.min_ms, p.tokens_per_s, null, runs]),
  ...decode.map((d) => [`decode batch ${d.batch}`, d.batch, d.step_ms, d.min_ms, d.tokens_per_s, d.per_seq_tokens_per_s, d.runs]),
]));
process.stdout.write('prefill: request → first token of a lone request (one step, last-position logits, sampling, worker round trip);\n'
  + (decode.length === 0 ? '' : `decode: mean step time over ${steps} lockstep steps of B sequences, median of the runs (no HTTP; detokenizing overlapped on the main thread).\n`
    + `full-batch decode steps per run (expect ≥ ${steps + WARM_STEPS}): ${decode.map((d) => `B=${d.batch}: ${d.full_steps}`).join(', ')}\n`));
if (opts.json !== undefined) {
  writeFileSync(opts.json, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`wrote ${opts.json}\n`);
}
