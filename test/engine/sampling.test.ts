import t from 'tap';
import { DEFAULT_SAMPLING, TokenHistory, jsSoftmaxWeights, processLogits, sample, sampleProcessed } from '../../src/engine/sampling.ts';
import { nativeSoftmaxWeights } from '../../src/engine/native/softmax-weights.ts';
const mulberry32 = (seed: number): (() => number) => { let x = seed; return () => (x = (x * 16807) % 2147483647) / 2147483647; };
import { StopMatcher } from '../../src/engine/stop-strings.ts';

const logits = Float32Array.from([2, 1, 0.5, -1, 3]);

t.test('logit_bias +100 forces a token', async (t) => {
  const p = { ...DEFAULT_SAMPLING, logitBias: [[3, 100]] as [number, number][] };
  const rand = mulberry32(1);
  for (let i = 0; i < 20; i++) t.equal(sample(logits, p, rand), 3);
  t.equal(sample(logits, { ...p, temperature: 0 }, rand), 3);
});

t.test('top_k 1 equals greedy', async (t) => {
  const rand = mulberry32(2);
  for (let i = 0; i < 20; i++) t.equal(sample(logits, { ...DEFAULT_SAMPLING, topK: 1 }, rand), 4);
  t.equal(sample(logits, { ...DEFAULT_SAMPLING, temperature: 0 }, rand), 4);
});

t.test('min_p keeps only tokens near the best', async (t) => {
  const rand = mulberry32(3);
  for (let i = 0; i < 50; i++) t.ok([0, 4].includes(sample(logits, { ...DEFAULT_SAMPLING, minP: 0.3 }, rand)));
});

const prob = (row: Float32Array, id: number): number => {
  const m = Math.max(...row);
  const s = row.reduce((a, x) => a + Math.exp(x - m), 0);
  return Math.exp(row[id]! - m) / s;
};

t.test('repetition penalty lowers a seen token (vLLM semantics)', async (t) => {
  const h = new TokenHistory([4, 3]);
  const out = processLogits(logits, { ...DEFAULT_SAMPLING, repetitionPenalty: 2 }, h);
  t.equal(out[4], 1.5);
  t.equal(out[3], -2);
  t.equal(out[0], 2);
  t.ok(prob(out, 4) < prob(logits, 4));
});

t.test('presence and frequency penalties count output tokens only', async (t) => {
  const h = new TokenHistory([0]);
  h.add(1); h.add(1);
  const out = processLogits(logits, { ...DEFAULT_SAMPLING, presencePenalty: 0.5, frequencyPenalty: 0.25 }, h);
  t.equal(out[0], 2);
  t.equal(out[1], 1 - 0.5 - 0.5);
});

t.test('a penalty window (llama.cpp, Ollama repeat_last_n) penalizes only the last N tokens of prompt and output, counts included', async (t) => {
  // logits = [2, 1, 0.5, -1, 3]; window of 3 over prompt [0, 1] then output 1, 1, 4: holds [1, 1, 4].
  const h = new TokenHistory([0, 1], 3);
  h.add(1); h.add(1); h.add(4);
  t.same([...h.windowCounts!.entries()].sort(), [[1, 2], [4, 1]]);
  const out = processLogits(logits, { ...DEFAULT_SAMPLING, repetitionPenalty: 2, presencePenalty: 0.5, frequencyPenalty: 0.25, penaltyLastN: 3 }, h);
  t.equal(out[0], logits[0], 'token 0 left the window: no penalty');
  t.equal(out[1], logits[1]! / 2 - 0.5 - 2 * 0.25, 'twice in the window: divided, then presence + 2 x frequency');
  t.equal(out[4], logits[4]! / 2 - 0.5 - 0.25);
  t.equal(out[2], logits[2], 'never seen');
});

t.test('penalty window -1 covers the whole sequence, prompt counts included', async (t) => {
  const h = new TokenHistory([2, 2, 0], -1);
  h.add(0);
  const out = processLogits(logits, { ...DEFAULT_SAMPLING, frequencyPenalty: 1, penaltyLastN: -1 }, h);
  t.equal(out[2], logits[2]! - 2);
  t.equal(out[0], logits[0]! - 2);
});

t.test('stop strings across deltas', async (t) => {
  const m = new StopMatcher(['END']);
  t.same(m.push('abc E'), { text: 'abc ', matched: false });
  t.same(m.push('N'), { text: '', matched: false });
  t.same(m.push('Dxyz'), { text: '', matched: true });
  const n = new StopMatcher(['END']);
  t.same(n.push('xE'), { text: 'x', matched: false });
  t.same(n.finish('N'), { text: 'EN', matched: false });
});

/** The definition: sort the whole vocabulary, cut by top-k, top-p, min-p, draw along the order. */
function sampleBySortingAll(logits: Float32Array, p: typeof DEFAULT_SAMPLING, u: number): number {
  const max = Math.max(...logits);
  const probs = Array.from(logits, (x) => Math.exp((x - max) / p.temperature));
  const order = probs.map((_, i) => i).sort((a, b) => probs[b]! - probs[a]! || a - b);
  let keep = p.topK > 0 ? Math.min(p.topK, order.length) : order.length;
  const kept = order.slice(0, keep).reduce((a, i) => a + probs[i]!, 0);
  if (p.topP < 1) {
    let acc = 0;
    for (let i = 0; i < keep; i++) { acc += probs[order[i]!]! / kept; if (acc >= p.topP) { keep = i + 1; break; } }
  }
  if (p.minP > 0) { let k = 1; while (k < keep && probs[order[k]!]! >= p.minP * probs[order[0]!]!) k++; keep = k; }
  let r = u * order.slice(0, keep).reduce((a, i) => a + probs[i]!, 0);
  for (let i = 0; i < keep; i++) { r -= probs[order[i]!]!; if (r < 0) return order[i]!; }
  return order[keep - 1]!;
}

t.test('filtered sampling sorts only candidates yet picks what sorting everything picks', async (t) => {
  const gen = mulberry32(7);
  const cases = [{ topK: 5 }, { topK: 300 }, { topP: 0.9 }, { topP: 0.3 }, { minP: 0.1 }, { topK: 40, topP: 0.8 }, { topP: 0.95, minP: 0.2 }, { topK: 20, minP: 0.5 }];
  for (const c of cases) {
    for (let trial = 0; trial < 25; trial++) {
      const logits = Float32Array.from({ length: 3000 }, () => (gen() - 0.5) * (trial % 2 === 0 ? 8 : 30));
      const p = { ...DEFAULT_SAMPLING, temperature: 0.7, ...c };
      const u = gen();
      t.equal(sample(logits, p, () => u), sampleBySortingAll(logits, p, u), `${JSON.stringify(c)} trial ${trial}`);
    }
  }
});

t.test('unfiltered sampling follows the softmax', async (t) => {
  const rand = mulberry32(11);
  const counts = new Array<number>(logits.length).fill(0);
  const N = 20000;
  for (let i = 0; i < N; i++) counts[sample(logits, DEFAULT_SAMPLING, rand)]!++;
  const z = Array.from(logits).reduce((a, x) => a + Math.exp(x), 0);
  logits.forEach((x, i) => t.ok(Math.abs(counts[i]! / N - Math.exp(x) / z) < 0.015, `token ${i}: ${counts[i]! / N} vs ${(Math.exp(x) / z).toFixed(3)}`));
});

t.test('top-p candidates reach the nucleus across probability scales', async (t) => {
  // 1 token at p=1, 10 at e^-1 (above 1/16), 100 at e^-4 (below 1/16): the 0.9 nucleus needs
  // some of the last group, which a search stopping at the first group would miss.
  const logits = Float32Array.from([0, ...new Array<number>(10).fill(-1), ...new Array<number>(100).fill(-4)]);
  const p = { ...DEFAULT_SAMPLING, topP: 0.9 };
  for (const u of [0.1, 0.5, 0.8, 0.95, 0.999]) t.equal(sample(logits, p, () => u), sampleBySortingAll(logits, p, u), `u ${u}`);
  t.ok(sample(logits, p, () => 0.999) >= 11, 'a token of the third group can be drawn');
});

t.test("the native runner's float32 softmax weights: what the float64 ones give, draw for draw", async (t) => {
  const native = nativeSoftmaxWeights();
  if (native === null) {
    t.fail('the native runner is not built (npm ci builds it)');
    return;
  }
  const gen = mulberry32(5);
  const row = Float32Array.from({ length: 256000 }, () => (gen() - 0.5) * 40);
  for (const T of [0.3, 1, 1.7]) {
    const a = native(row, T).slice();
    const b = jsSoftmaxWeights(row, T);
    let worst = 0;
    for (let i = 0; i < a.length; i++) if (b[i]! > 1e-30) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / b[i]!);
    t.ok(worst < 1e-5, `T ${T}: max relative difference ${worst.toExponential(2)}`);
    t.equal(Math.max(...a.subarray(0, 1000)) <= 1, true, 'the largest weight is at most 1');
  }
  const cases = [{}, { topK: 5 }, { topP: 0.9 }, { minP: 0.1 }, { topK: 40, topP: 0.8 }];
  for (const c of cases) {
    for (let trial = 0; trial < 20; trial++) {
      const logits = Float32Array.from({ length: 3000 }, () => (gen() - 0.5) * (trial % 2 === 0 ? 8 : 30));
      const p = { ...DEFAULT_SAMPLING, temperature: 0.7, ...c };
      const u = gen();
      t.equal(sampleProcessed(logits, p, () => u, native), sampleProcessed(logits, p, () => u), `${JSON.stringify(c)} trial ${trial}`);
    }
  }
});
