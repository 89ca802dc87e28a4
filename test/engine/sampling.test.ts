import t from 'tap';
import { DEFAULT_SAMPLING, TokenHistory, processLogits, sample } from '../../src/engine/sampling.ts';
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

t.test('stop strings across deltas', async (t) => {
  const m = new StopMatcher(['END']);
  t.same(m.push('abc E'), { text: 'abc ', matched: false });
  t.same(m.push('N'), { text: '', matched: false });
  t.same(m.push('Dxyz'), { text: '', matched: true });
  const n = new StopMatcher(['END']);
  t.same(n.push('xE'), { text: 'x', matched: false });
  t.same(n.finish('N'), { text: 'EN', matched: false });
});
