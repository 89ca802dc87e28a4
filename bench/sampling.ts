/**
 * Time one draw from a 256,000-entry logit row (Gemma's vocabulary) per sampling setting:
 * `npx tsx bench/sampling.ts`. Prints the median of 15 draws and the first picks.
 */
import { sampleProcessed, DEFAULT_SAMPLING } from '../src/engine/sampling.ts';
import { nativeSoftmaxWeights } from '../src/engine/native/softmax-weights.ts';

const V = 256000;
const logits = new Float32Array(V);
let state = 1;
const rand = (): number => { state = (state * 16807) % 2147483647; return state / 2147483647; };
for (let i = 0; i < V; i++) logits[i] = (rand() - 0.5) * 20;
for (const p of [{}, { topP: 0.9 }, { topK: 40 }, { minP: 0.05 }, { topK: 50, topP: 0.95 }]) {
  const params = { ...DEFAULT_SAMPLING, temperature: 0.8, ...p };
  const times: number[] = [];
  const picks: number[] = [];
  for (let k = 0; k < 15; k++) {
    const t0 = performance.now();
    picks.push(sampleProcessed(logits, params, rand));
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(`${JSON.stringify(p).padEnd(26)} median ${times[7]!.toFixed(2)} ms  picks ${picks.slice(0, 5).join(',')}`);
}

// The same draws with the native runner's float32 softmax weights (when it is built).
const native = nativeSoftmaxWeights();
if (native === null) {
  console.log('native softmax weights: not available (the native runner is not built)');
} else {
  for (const p of [{}, { topP: 0.9 }, { topK: 40 }, { minP: 0.05 }, { topK: 50, topP: 0.95 }]) {
    const params = { ...DEFAULT_SAMPLING, temperature: 0.8, ...p };
    const times: number[] = [];
    for (let k = 0; k < 15; k++) {
      const t0 = performance.now();
      sampleProcessed(logits, params, rand, native);
      times.push(performance.now() - t0);
    }
    console.log(`native ${JSON.stringify(p).padEnd(26)} median ${times.sort((a, b) => a - b)[7]!.toFixed(2)} ms`);
  }
}
