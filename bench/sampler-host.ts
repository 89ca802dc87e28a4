/**
 * Sampling cost per row per step on Gemma's 256,000-token vocabulary: the JS sampler (sampleRow
 * with the native softmax weights, the path before the sampler graph) against the sampler graph
 * (device-sampler.ts), alternated in one run, at batch 1, 64 and 256, greedy and temperature 1:
 * `[SAMPLER_THREADS=2] npx tsx bench/sampler-host.ts [steps]` (the sampler session's intra-op threads).
 * Prints medians over the steps, in µs per row.
 * The graph's time is ONNX Runtime compute on the CPU here (on a GPU it is device time); the
 * JS part of it (packing inputs, reading outputs) is printed separately.
 */
import { availableParallelism } from 'node:os';
import { DeviceSampler, type SampleRow } from '../src/engine/device-sampler.ts';
import { newGeneration } from '../src/engine/generation.ts';
import { nativeSoftmaxWeights } from '../src/engine/native/softmax-weights.ts';
import { DEFAULT_SAMPLING, jsSoftmaxWeights } from '../src/engine/sampling.ts';
import { sampleRow } from '../src/engine/step-sampling.ts';

const V = 256000;
const STEPS = Number(process.argv[2] ?? 7);
const threads = Number(process.env["SAMPLER_THREADS"] ?? Math.min(2, availableParallelism()));
const sampler = DeviceSampler.create({ device: 'cpu', intraOpThreads: threads });
if ('error' in sampler) throw new Error(sampler.error);
const weightsOf = nativeSoftmaxWeights() ?? jsSoftmaxWeights;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

let state = 1;
const rand = (): number => { state = (state * 16807) % 2147483647; return state / 2147483647; };
console.log(`sampler-host: V=${V}, ${STEPS} steps per cell, ORT threads ${threads}; µs per row per step (median)`);
for (const B of [1, 64, 256]) {
  const logits = new Float32Array(B * V);
  for (let i = 0; i < logits.length; i++) logits[i] = (rand() - 0.5) * 20;
  for (const temperature of [0, 1]) {
    const gens = Array.from({ length: B }, (_, i) => newGeneration({
      type: 'submit', id: i, promptIds: [2, 3, 4], maxTokens: 1e9, priority: 0, sampling: { ...DEFAULT_SAMPLING, temperature }, seed: i,
      stopIds: [1], minTokens: 0, logprobs: null, promptLogprobs: null,
    }));
    const rows: SampleRow[] = gens.map((g, i) => ({ g, numOutput: 1, row: i, allowed: null }));
    const js: number[] = [], graph: number[] = [], graphRun: number[] = [];
    for (let s = 0; s < STEPS + 1; s++) {
      let t0 = performance.now();
      for (let i = 0; i < B; i++) sampleRow(gens[i]!, 1, logits.subarray(i * V, (i + 1) * V), weightsOf);
      const tJs = performance.now() - t0;
      t0 = performance.now();
      sampler.sample(logits, V, rows);
      const tGraph = performance.now() - t0;
      if (s === 0) continue; // warm-up (graph sessions are built on first use)
      js.push((tJs * 1000) / B);
      graph.push((tGraph * 1000) / B);
      graphRun.push((sampler.lastRunMs * 1000) / B);
    }
    const host = graph.map((g, i) => g - graphRun[i]!);
    console.log(`batch ${String(B).padStart(3)} ${temperature === 0 ? 'greedy' : 'T=1   '}  JS ${median(js).toFixed(0).padStart(6)}  graph ${median(graph).toFixed(0).padStart(6)} (ORT run ${median(graphRun).toFixed(0)}, host ${median(host).toFixed(1)})`);
  }
}
sampler.release();
