// The sampler graph (device-sampler.ts) against the JS reference (sampling.ts, step-sampling.ts)
// over randomized parameter sets, each field alone and all combined. Ids must be identical for
// greedy rows and for draws whose uniform is not within DELTA of a boundary (the JS reference
// picks the same id at u - DELTA and u + DELTA, DELTA = 1e-6 of the mass: the graph's float32
// softmax and float64 two-level running sums move a boundary by ~1e-7); logprobs within 1e-4;
// top-logprob ids identical. A row whose nucleus is wider than the candidates must fall back.
// Every batch is also sampled from the same logits left in another native session's device
// memory (the runner's handoff, StepOutput.device; rows stored out of order): the results must be
// identical to the host array's, and readRows must copy back exactly the rows asked for.
import t, { type Test } from 'tap';
import { DeviceSampler, MAX_CANDIDATES, type SampleRow } from '../../src/engine/device-sampler.ts';
import { buildRowReaderGraph, drawBlock, SamplerIO } from '../../src/engine/sampler-graph.ts';
import { NativeSession, OnnxType } from '../../src/engine/native/ort-native.ts';
import type { DeviceLogits } from '../../src/scheduler/runner-contract.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newGeneration, mulberry32, type Generation } from '../../src/engine/generation.ts';
import { DEFAULT_SAMPLING, jsSoftmaxWeights, processLogits, sampleProcessed, type SamplingParams } from '../../src/engine/sampling.ts';
import { logSoftmax, topLogprobs } from '../../src/engine/logprobs.ts';
import type { SubmitMessage } from '../../src/engine/types.ts';

const DELTA = 1e-6;

interface RowSpec {
  readonly sampling: SamplingParams;
  readonly logprobs: number | null;
  readonly allowed: Int32Array | null;
  readonly minTokens: number;
  readonly history: { prompt: number[]; output: number[] };
}

function request(id: number, spec: RowSpec, seed: number): SubmitMessage {
  return {
    type: 'submit', id, promptIds: spec.history.prompt, maxTokens: 100, priority: 0, sampling: spec.sampling, seed,
    stopIds: [1], minTokens: spec.minTokens, logprobs: spec.logprobs, promptLogprobs: null,
  };
}

function generation(id: number, spec: RowSpec, seed: number): Generation {
  const g = newGeneration(request(id, spec, seed));
  for (const tok of spec.history.output) g.history.add(tok);
  return g;
}

/** What the JS reference samples for one row (the step loop's path: stop ids, mask, sampleRow's steps). */
function reference(row: Float32Array, spec: RowSpec, g: Generation): { ids: number[]; greedy: boolean; lp: Float64Array; processed: Float32Array } {
  const masked = new Float32Array(row);
  if (spec.history.output.length < spec.minTokens) masked[1] = -Infinity;
  if (spec.allowed !== null) for (let i = 0; i < masked.length; i++) if (((spec.allowed[i >> 5]! >>> (i & 31)) & 1) === 0) masked[i] = -Infinity;
  const processed = processLogits(masked, spec.sampling, g.history);
  const lp = logSoftmax(processed);
  if (spec.sampling.temperature <= 0) return { ids: [sampleProcessed(processed, spec.sampling, () => 0, jsSoftmaxWeights)], greedy: true, lp, processed };
  const u = g.rand();
  const ids = [u - DELTA, u, u + DELTA].map((v) => sampleProcessed(processed, spec.sampling, () => Math.min(Math.max(v, 0), 1 - 1e-12), jsSoftmaxWeights));
  return { ids, greedy: false, lp, processed };
}

function randomLogits(V: number, rand: () => number): Float32Array {
  const row = new Float32Array(V);
  for (let i = 0; i < V; i++) row[i] = (rand() + rand() + rand() - 1.5) * 6;
  // Exact ties: the order among equal logits is by id in both samplers.
  for (let i = 0; i < 5; i++) row[Math.floor(rand() * V)] = row[Math.floor(rand() * V)]!;
  return row;
}

type Field = 'temperature' | 'greedy' | 'topK' | 'topP' | 'minP' | 'repetition' | 'presence' | 'frequency' | 'bias' | 'mask' | 'logprobs' | 'minTokens';
const FIELDS: readonly Field[] = ['temperature', 'greedy', 'topK', 'topP', 'minP', 'repetition', 'presence', 'frequency', 'bias', 'mask', 'logprobs', 'minTokens'];

function randomSpec(V: number, fields: ReadonlySet<Field>, rand: () => number): RowSpec {
  const pick = (n: number): number => Math.floor(rand() * n);
  const s: { -readonly [K in keyof SamplingParams]: SamplingParams[K] } = { ...DEFAULT_SAMPLING, logitBias: [] };
  if (fields.has('temperature')) s.temperature = 0.2 + rand() * 1.8;
  if (fields.has('greedy')) s.temperature = 0;
  if (fields.has('topK')) s.topK = 1 + pick(60);
  if (fields.has('topP')) s.topP = 0.05 + rand() * 0.9;
  if (fields.has('minP')) s.minP = 0.01 + rand() * 0.5;
  if (fields.has('repetition')) s.repetitionPenalty = 0.5 + rand() * 2;
  if (fields.has('presence')) s.presencePenalty = rand() * 4 - 2;
  if (fields.has('frequency')) s.frequencyPenalty = rand() * 4 - 2;
  if (fields.has('bias')) s.logitBias = Array.from({ length: 1 + pick(6) }, () => [pick(V), (rand() - 0.5) * 20] as [number, number]);
  let allowed: Int32Array | null = null;
  if (fields.has('mask')) {
    allowed = new Int32Array(Math.ceil(V / 32));
    for (let i = 0; i < V; i++) if (rand() < 0.3) allowed[i >> 5]! |= 1 << (i & 31);
  }
  const prompt = Array.from({ length: 1 + pick(30) }, () => pick(V));
  const output = Array.from({ length: pick(20) }, () => pick(V));
  return { sampling: s, logprobs: fields.has('logprobs') ? pick(21) : null, allowed, minTokens: fields.has('minTokens') ? 50 : 0, history: { prompt, output } };
}

const created = DeviceSampler.create({ device: 'cpu', intraOpThreads: 1 });
const skip = 'error' in created ? created.error : false;

/** Per V: a session (standing in for the model's) whose buffers hold uploaded logits. */
const uploaders = new Map<number, NativeSession>();
const uploadDir = mkdtempSync(join(tmpdir(), 'gs-upload-'));
t.teardown(() => { for (const s of uploaders.values()) s.release(); rmSync(uploadDir, { recursive: true, force: true }); });

/** `logits` [N, V] copied into a new device buffer of another session, row k stored at row perm⁻¹(k). */
function toDevice(logits: Float32Array, V: number, rand: () => number): DeviceLogits {
  let session = uploaders.get(V);
  if (session === undefined) {
    const path = join(uploadDir, `reader-${V}.onnx`);
    writeFileSync(path, buildRowReaderGraph(V));
    session = NativeSession.create(path, { device: 'cpu', intraOpThreads: 1 });
    uploaders.set(V, session);
  }
  const N = logits.length / V;
  const perm = Array.from({ length: N }, (_, i) => i).sort(() => rand() - 0.5); // device row d holds logits row perm[d]
  const buffer = session.allocate((N + 1) * V * 4);
  const byteOffset = V * 4; // not at the buffer's start
  session.run([{ name: SamplerIO.logits, type: OnnxType.FLOAT, dims: [N, V], data: logits }, { name: SamplerIO.rows, type: OnnxType.INT64, dims: [N], data: BigInt64Array.from(perm, BigInt) }],
    [{ name: SamplerIO.rowLogits, type: OnnxType.FLOAT, dims: [N, V], data: { buffer, byteOffset } }]);
  const rowIndex = new Int32Array(N);
  perm.forEach((k, d) => { rowIndex[k] = d; });
  return { owner: session, buffer, byteOffset, numRows: N, rowIndex };
}

/** Runs `specs` through the graph and the reference; returns [compared draws, skipped: on a boundary or fallen back]. */
function check(t: Test, sampler: DeviceSampler, V: number, specs: RowSpec[], rand: () => number, gatherRows: boolean): [number, number] {
  const N = gatherRows ? specs.length + 2 : specs.length;
  const logits = new Float32Array(N * V);
  for (let r = 0; r < N; r++) logits.set(randomLogits(V, rand), r * V);
  const rowOf = (i: number): number => (gatherRows ? N - 1 - i : i);
  const original = new Float32Array(logits);
  const seeds = specs.map(() => Math.floor(rand() * 2 ** 31));
  const gens = specs.map((s, i) => generation(i, s, seeds[i]!));
  const rows: SampleRow[] = specs.map((s, i) => ({ g: gens[i]!, numOutput: s.history.output.length, row: rowOf(i), allowed: s.allowed }));
  const results = sampler.sample(logits, V, rows);
  t.same(logits, original, 'the host logits are not written');
  // The same rows from device-resident logits (fresh generations: the same uniforms).
  const device = toDevice(logits, V, rand);
  const onDevice = sampler.sample(device, V, specs.map((s, i) => ({ g: generation(i, s, seeds[i]!), numOutput: s.history.output.length, row: rowOf(i), allowed: s.allowed })));
  t.same(onDevice, results, 'device-resident logits sample exactly as the host array');
  const k = Math.floor(rand() * N);
  t.same(sampler.readRows(device, V, k, N - k), original.subarray(k * V), `readRows copies rows ${k}..${N - 1}`);
  let compared = 0, skipped = 0, fallbacks = 0;
  specs.forEach((spec, i) => {
    const ref = reference(original.subarray(rowOf(i) * V, (rowOf(i) + 1) * V), spec, generation(i, spec, seeds[i]!));
    const res = results[i]!;
    const what = JSON.stringify({ ...spec.sampling, logprobs: spec.logprobs, mask: spec.allowed !== null, minTokens: spec.minTokens });
    if ('fallback' in res) {
      // Only a top-p / min-p row without top-k whose reference keeps more than the candidates.
      t.ok(spec.sampling.topK === 0 && keptByReference(ref.processed, spec.sampling) >= MAX_CANDIDATES, `row ${i} fell back: ${what}`);
      fallbacks++;
      return;
    }
    const stable = ref.ids.every((id) => id === ref.ids[0]);
    if (ref.greedy || stable) { compared++; t.equal(res.tokenId, ref.ids[ref.greedy ? 0 : 1], `row ${i}: ${what}`); }
    else skipped++;
    if (spec.logprobs === null || res.tokenId === 1) { t.equal(res.logprobs, undefined); return; }
    t.ok(Math.abs(res.logprobs!.logprob - ref.lp[res.tokenId]!) < 1e-4, `logprob of ${res.tokenId}: ${res.logprobs!.logprob} vs ${ref.lp[res.tokenId]}`);
    const top = spec.logprobs > 0 ? topLogprobs(ref.lp, spec.logprobs) : []; // sampleRow: 0 asks for none
    t.same(res.logprobs!.top.map((e) => e.id), top.map((e) => e.id), `top ${spec.logprobs} ids`);
    t.ok(res.logprobs!.top.every((e, j) => Math.abs(e.logprob - top[j]!.logprob) < 1e-4), 'top logprobs within 1e-4');
  });
  return [compared, skipped + fallbacks];
}

/** How many ids top-p then min-p keep (sampling.ts's definition, over a full sort). */
function keptByReference(processed: Float32Array, p: SamplingParams): number {
  const w = jsSoftmaxWeights(processed, p.temperature);
  const sorted = Array.from(w).sort((a, b) => b - a);
  const sum = sorted.reduce((a, b) => a + b, 0);
  let keep = sorted.length;
  if (p.topP < 1) for (let i = 0, acc = 0; i < keep; i++) { acc += sorted[i]! / sum; if (acc >= p.topP) { keep = i + 1; break; } }
  if (p.minP > 0) { let k = 1; while (k < keep && sorted[k]! >= p.minP * sorted[0]!) k++; keep = k; }
  return keep;
}

t.test('the two-level draw splits Gemma\'s vocabulary without padding', async (t) => {
  t.same(drawBlock(256000), { block: 500, padded: 256000 });
  t.same(drawBlock(997), { block: 256, padded: 1024 });
});

t.test('the sampler graph matches the JS reference', { skip }, async (t) => {
  const rand = mulberry32(7);
  for (const V of [1000, 997, 4096]) {
    const sampler = DeviceSampler.create({ device: 'cpu', intraOpThreads: 1 }) as DeviceSampler;
    let compared = 0, skipped = 0;
    const tally = ([c, s]: [number, number]): void => { compared += c; skipped += s; };
    // Each field alone (with a temperature where the field needs a draw), in batches of 4.
    for (const f of FIELDS) {
      for (let rep = 0; rep < 3; rep++) {
        const fields = new Set<Field>(f === 'greedy' ? [f] : ['temperature', f]);
        tally(check(t, sampler, V, Array.from({ length: 4 }, () => randomSpec(V, fields, rand)), rand, rep === 1));
      }
    }
    // Combined: every row a random subset, batches mixing greedy, filtered and plain rows.
    for (let b = 0; b < 12; b++) {
      const specs = Array.from({ length: 1 + Math.floor(rand() * 7) }, () => randomSpec(V, new Set(FIELDS.filter((f) => f !== 'greedy' && rand() < 0.5).concat(rand() < 0.2 ? ['greedy'] : [])), rand));
      tally(check(t, sampler, V, specs, rand, b % 2 === 0));
    }
    t.ok(compared > 150 && skipped <= compared / 50, `V=${V}: ${compared} draws compared, ${skipped} on a boundary or fallen back`);
    sampler.release();
  }
});

t.test('a nucleus wider than the candidates falls back with the same uniform', { skip }, async (t) => {
  const V = 1000;
  const sampler = DeviceSampler.create({ device: 'cpu', intraOpThreads: 1, candidates: 16 }) as DeviceSampler;
  const spec: RowSpec = { sampling: { ...DEFAULT_SAMPLING, topP: 0.9 }, logprobs: null, allowed: null, minTokens: 0, history: { prompt: [2], output: [] } };
  const flat = new Float32Array(V); // uniform: the nucleus holds 900 ids
  const g = generation(0, spec, 5);
  const [res] = sampler.sample(flat, V, [{ g, numOutput: 0, row: 0, allowed: null }]);
  t.same(res, { fallback: mulberry32(5)() });
  t.equal(g.history.outputCounts.size, 0, 'the fallback leaves the history to the JS sampler');
  sampler.release();
});

t.test('device logits whose buffer was freed are refused, not read', { skip }, async (t) => {
  const V = 1000;
  const sampler = DeviceSampler.create({ device: 'cpu', intraOpThreads: 1 }) as DeviceSampler;
  const rand = mulberry32(3);
  const logits = randomLogits(V, rand);
  const device = toDevice(logits, V, rand);
  t.same(sampler.readRows(device, V, 0, 1), logits);
  uploaders.get(V)!.free(device.buffer);
  t.throws(() => sampler.readRows(device, V, 0, 1), /was freed/);
  const spec: RowSpec = { sampling: DEFAULT_SAMPLING, logprobs: null, allowed: null, minTokens: 0, history: { prompt: [2], output: [] } };
  t.throws(() => sampler.sample(device, V, [{ g: generation(0, spec, 1), numOutput: 0, row: 0, allowed: null }]), /was freed/);
  sampler.release();
});
