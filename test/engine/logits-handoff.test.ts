// The model's logits handed to the sampler graph on the device (SlotRunner.keepLogitsOnDevice →
// StepOutput.device → DeviceSampler binding the runner's buffer in place), on the CPU provider
// with the real native runner and a tiny model. Randomized requests (temperature, top-k/p, min-p,
// penalties, bias, min_tokens with stop ids, logprobs, prompt logprobs, several seeds on one
// prompt as n > 1 does) give exactly the events of the sampler graph over host logits (the path
// before) and the JS sampler's ids (logprobs within 1e-4). Rows the graph hands back (a nucleus
// wider than its candidates) and prompt logprobs are copied on demand and stay exact. And a step
// brings back only what the sampler outputs: the native binding's count of bytes written to host
// memory equals 8 bytes (one int64 id) per sampled row, no logits. Through the engine (its
// worker takes the handoff by default), constrained generations (grammar bitmasks) with
// penalties, bias, min_tokens and seeds equal `--sampler js`'s.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { KvCache } from '../../src/engine/kv-cache.ts';
import { SlotRunner } from '../../src/engine/slot-runner.ts';
import { DeviceSampler } from '../../src/engine/device-sampler.ts';
import { mulberry32 } from '../../src/engine/generation.ts';
import { hostOutputBytes, loadNativeOrt } from '../../src/engine/native/ort-native.ts';
import { DEFAULT_SAMPLING, type SamplingParams } from '../../src/engine/sampling.ts';
import type { SequenceEvent, SubmitMessage } from '../../src/engine/types.ts';
import { Engine, type GenerateRequest } from '../../src/engine/engine.ts';
import type { Constraint } from '../../src/engine/grammar/constraint.ts';
import { driveLoop } from './drive-loop.ts';

const native = loadNativeOrt();
const skip = 'error' in native ? native.error : false;

const dir = mkdtempSync(join(tmpdir(), 'gs-handoff-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ckpt = join(dir, 'ckpt');
const model = join(dir, 'gqa');
const { config } = makeRandomCheckpoint({ shape: 'tiny', seed: 11, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '64', sliding_window: '8' } });
if (skip === false) exportCheckpoint({ checkpointDir: ckpt, outDir: model, attention: 'gqa' });
const V = config.vocabSize;
const SLOTS = 4;
const loop = { maxNumSeqs: SLOTS, maxNumBatchedTokens: 32 };

type Path = 'js' | 'host' | 'device';

/** Runs `reqs` through a fresh slot runner and the loop; `path`: who samples and where the logits are. */
async function run(reqs: readonly SubmitMessage[], path: Path, candidates?: number): Promise<{ events: SequenceEvent[]; hostBytes: number; rowsRead: number }> {
  const runner = SlotRunner.load(model, { kvCacheBytes: SLOTS * config.maxPositions * KvCache.bytesPerToken(config), maxNumSeqs: SLOTS });
  const created = path === 'js' ? null : DeviceSampler.create({ device: 'cpu', intraOpThreads: 1, inPlace: path === 'device', ...(candidates !== undefined ? { candidates } : {}) });
  if (created !== null && 'error' in created) throw new Error(created.error);
  let rowsRead = 0;
  if (created !== null) {
    const read = created.readRows.bind(created);
    created.readRows = (logits, vocab, first, count) => { rowsRead += count; return read(logits, vocab, first, count); };
  }
  const before = hostOutputBytes();
  try {
    const reports = await driveLoop(runner, reqs, loop, created);
    return { events: reports.flatMap((r) => r.events).filter((e) => e.type !== 'scheduled'), hostBytes: hostOutputBytes() - before, rowsRead };
  } finally {
    created?.release();
    await runner.release();
  }
}

/** A request with randomized sampling; `seed` and the prompt given (n > 1: one prompt, several seeds). */
function randomRequest(id: number, prompt: number[], seed: number, rand: () => number): SubmitMessage {
  const pick = (n: number): number => Math.floor(rand() * n);
  const s: { -readonly [K in keyof SamplingParams]: SamplingParams[K] } = { ...DEFAULT_SAMPLING, logitBias: [] };
  s.temperature = rand() < 0.25 ? 0 : 0.3 + rand() * 1.5;
  if (rand() < 0.3) s.topK = 1 + pick(40);
  if (rand() < 0.35) s.topP = 0.5 + rand() * 0.49;
  if (rand() < 0.2) s.minP = 0.001 + rand() * 0.01;
  if (rand() < 0.3) s.repetitionPenalty = 0.7 + rand();
  if (rand() < 0.3) s.presencePenalty = rand() * 2 - 1;
  if (rand() < 0.3) s.frequencyPenalty = rand() * 2 - 1;
  if (rand() < 0.3) s.logitBias = Array.from({ length: 1 + pick(4) }, () => [pick(V), (rand() - 0.3) * 10] as [number, number]);
  const minTokens = rand() < 0.3 ? 4 : 0;
  return {
    type: 'submit', id, promptIds: prompt, maxTokens: 4 + pick(10), priority: 0, sampling: s, seed,
    // Stop ids the bias may favour, so min_tokens has something to hold back.
    stopIds: [1, ...s.logitBias.filter(([, b]) => b > 0).map(([tok]) => tok)], minTokens,
    logprobs: rand() < 0.4 ? pick(6) : null, promptLogprobs: rand() < 0.2 ? pick(4) : null,
  };
}

function randomBatch(rand: () => number, count: number): SubmitMessage[] {
  const reqs: SubmitMessage[] = [];
  while (reqs.length < count) {
    const prompt = Array.from({ length: 2 + Math.floor(rand() * 20) }, () => 2 + Math.floor(rand() * (V - 2)));
    const base = randomRequest(reqs.length + 1, prompt, Math.floor(rand() * 2 ** 31), rand);
    // n > 1: the same request under further seeds.
    const n = rand() < 0.3 ? 3 : 1;
    for (let j = 0; j < n && reqs.length < count; j++) reqs.push({ ...base, id: reqs.length + 1, seed: base.seed + j });
  }
  return reqs;
}

/** Events of one request, in order. */
const of = (events: SequenceEvent[], id: number): SequenceEvent[] => events.filter((e) => e.id === id);

t.test('the device handoff samples exactly as host logits, and as the JS sampler', { skip }, async (t) => {
  const rand = mulberry32(2024);
  let fallbacks = 0;
  for (let batch = 0; batch < 4; batch++) {
    const reqs = randomBatch(rand, 10);
    // 16 candidates: a top-p / min-p row without top-k falls back to the JS sampler (the random
    // model's distributions are wide), which must then read its row from the device.
    const candidates = batch % 2 === 0 ? 16 : undefined;
    const [js, host, device] = [await run(reqs, 'js'), await run(reqs, 'host', candidates), await run(reqs, 'device', candidates)];
    t.same(device.events, host.events, `batch ${batch}: the handoff's events equal the host path's`);
    fallbacks += device.rowsRead;
    for (const r of reqs) {
      const a = of(device.events, r.id), b = of(js.events, r.id);
      t.equal(a.length, b.length, `request ${r.id}: as many events as the JS sampler`);
      a.forEach((e, k) => {
        const f = b[k]!;
        if (e.type === 'token' && f.type === 'token') {
          t.equal(e.tokenId, f.tokenId, `request ${r.id} token ${k}`);
          t.same(e.logprobs?.top.map((x) => x.id), f.logprobs?.top.map((x) => x.id));
          if (f.logprobs !== undefined) t.ok(Math.abs(e.logprobs!.logprob - f.logprobs.logprob) < 1e-4, 'logprob within 1e-4');
        } else if (e.type === 'prompt_logprobs' && f.type === 'prompt_logprobs') {
          t.ok(e.logprobs.every((x, j) => Math.abs(x.logprob - f.logprobs[j]!.logprob) < 1e-4), `request ${r.id}: prompt logprobs within 1e-4`);
        } else {
          t.same(e, f, `request ${r.id} event ${k}`);
        }
      });
    }
  }
  t.ok(fallbacks > 0, `${fallbacks} logits rows copied on demand (fallback rows, prompt logprobs)`);
});

t.test('a handoff step brings back the sampled ids only, no logits', { skip }, async (t) => {
  const rand = mulberry32(5);
  // Greedy and plain draws without logprobs: the graph's only output is the id, 8 bytes a row.
  const reqs = Array.from({ length: 6 }, (_, i): SubmitMessage => ({
    type: 'submit', id: i + 1, promptIds: Array.from({ length: 3 + i }, () => 2 + Math.floor(rand() * (V - 2))), maxTokens: 8, priority: 0,
    sampling: { ...DEFAULT_SAMPLING, temperature: i % 2 === 0 ? 0 : 1 }, seed: i, stopIds: [1], minTokens: i === 3 ? 4 : 0, logprobs: null, promptLogprobs: null,
  }));
  const sampledRows = (events: SequenceEvent[]): number => events.filter((e) => e.type === 'token' || (e.type === 'finish' && e.reason === 'stop')).length;
  const device = await run(reqs, 'device');
  const host = await run(reqs, 'host');
  t.same(device.events, host.events);
  const rows = sampledRows(device.events);
  t.ok(rows > 0);
  t.equal(device.rowsRead, 0, 'no row copied on demand');
  t.equal(device.hostBytes, rows * 8, `${rows} sampled rows: ${device.hostBytes} bytes to the host`);
  t.ok(host.hostBytes >= rows * V * 4, `the host path brings back the logits: ${host.hostBytes} bytes`);
});

t.test('through the engine (worker, grammars): constrained and penalized generations equal the JS sampler\'s', { skip }, async (t) => {
  const slots = 3 * config.maxPositions * KvCache.bytesPerToken(config);
  const start = (sampler: 'graph' | 'js'): Promise<Engine> => Engine.start({ modelDir: model, dataDir: join(dir, `data-${sampler}`), kvCacheBytes: slots, maxNumSeqs: 3, sampler });
  const [graph, js] = [await start('graph'), await start('js')];
  t.teardown(async () => { await graph.close(); await js.close(); });
  const rand = mulberry32(77);
  const constraints: (Constraint | undefined)[] = [
    { kind: 'json_object' },
    { kind: 'regex', pattern: '[a-e]{2,6}-[0-9]{1,3}' },
    { kind: 'choice', choices: ['alpha', 'beta', 'gamma delta'] },
    undefined,
  ];
  const reqs: GenerateRequest[] = Array.from({ length: 8 }, (_, i) => ({
    promptIds: Array.from({ length: 3 + i }, () => 2 + Math.floor(rand() * (V - 2))), maxTokens: 12, temperature: 0.5 + rand(), seed: 1000 + i,
    sampling: { topK: i % 3 === 0 ? 20 : 0, repetitionPenalty: 1.2, frequencyPenalty: 0.3, logitBias: [[2 + i, 3]] }, minTokens: 2, logprobs: 2,
    ...(constraints[i % constraints.length] !== undefined ? { constraint: constraints[i % constraints.length]! } : {}),
  }));
  const collect = async (engine: Engine, r: GenerateRequest): Promise<{ ids: number[]; lps: number[]; reason: string }> => {
    const ids: number[] = [], lps: number[] = [];
    let reason = '';
    for await (const e of engine.generate(r)) {
      if (e.type === 'token') { ids.push(e.tokenId); lps.push(e.logprobs?.logprob ?? NaN); }
      if (e.type === 'finish') reason = e.reason;
    }
    return { ids, lps, reason };
  };
  const [a, b] = [await Promise.all(reqs.map((r) => collect(graph, r))), await Promise.all(reqs.map((r) => collect(js, r)))];
  a.forEach((x, i) => {
    const y = b[i]!;
    t.same([x.ids, x.reason], [y.ids, y.reason], `request ${i} (${reqs[i]!.constraint?.kind ?? 'free'}): ${x.ids.length} tokens`);
    t.ok(x.lps.every((lp, k) => Math.abs(lp - y.lps[k]!) < 1e-4), 'logprobs within 1e-4');
  });
});
