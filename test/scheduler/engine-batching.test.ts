// Continuous batching through the real engine (worker thread, scheduler, paged cache) on a tiny
// random ONNX model: a request joins others mid-batch; batched, preempted and chunked generations
// give exactly the ids of the same request run alone; cancellations in every form leave no cache
// behind; sliding layers never hold more than their window per sequence.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine, type EngineOptions, type GenerateRequest } from '../../src/engine/engine.ts';
import type { SchedulerStats } from '../../src/scheduler/types.ts';

const BLOCK = 16; // the engine's block size

const dir = mkdtempSync(join(tmpdir(), 'gs-batching-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const dataDir = join(dir, 'data');
const ckpt = join(dir, 'ckpt');
const { config } = makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '256' } });

async function start(opts: Omit<EngineOptions, 'dataDir'>): Promise<Engine> {
  const engine = await Engine.start({ dataDir, ...opts });
  t.teardown(() => engine.close());
  return engine;
}

/** A seeded linear congruential generator of floats in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => (a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

/** A prompt of `len` ids, different for each `salt`. */
const prompt = (salt: number, len: number): number[] => Array.from({ length: len }, (_, j) => 3 + ((salt * 131 + j * 17 + j * j) % (config.vocabSize - 3)));

/** The generated ids and finish reason; `onToken` sees the engine after each token. */
async function generate(engine: Engine, req: GenerateRequest, onToken?: () => void): Promise<{ ids: number[]; reason: string }> {
  const ids: number[] = [];
  let reason = '';
  for await (const e of engine.generate({ ignoreEos: true, ...req })) {
    if (e.type === 'token') { ids.push(e.tokenId); onToken?.(); }
    if (e.type === 'finish') reason = e.reason;
  }
  return { ids, reason };
}

const solo = async (engine: Engine, reqs: readonly GenerateRequest[]): Promise<number[][]> => {
  const out: number[][] = [];
  for (const r of reqs) out.push((await generate(engine, r)).ids);
  return out;
};

/** Runs `reqs` concurrently; returns their ids and the most sequences seen running together. */
async function together(engine: Engine, reqs: readonly GenerateRequest[]): Promise<{ ids: number[][]; maxRunning: number }> {
  let maxRunning = 0;
  const see = (): void => { maxRunning = Math.max(maxRunning, engine.stats?.running ?? 0); };
  const ids = (await Promise.all(reqs.map((r) => generate(engine, r, see)))).map((r) => r.ids);
  return { ids, maxRunning };
}

/** Waits for the worker's idle stats message: nothing in flight, no cache held. */
async function settled(engine: Engine): Promise<SchedulerStats | null> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const st = engine.stats;
    const idle = engine.inFlight === 0 && st !== null && st.running === 0 && st.waiting === 0
      && st.cache.global.usedBlocks === 0 && st.cache.sliding.usedBlocks === 0;
    if (idle || Date.now() > deadline) return st;
    await new Promise((res) => setTimeout(res, 10));
  }
}

const checkSettled = async (t: Test, engine: Engine): Promise<void> => {
  const st = await settled(engine);
  t.equal(engine.inFlight, 0, 'nothing in flight');
  t.equal(st?.running, 0, 'nothing running');
  t.equal(st?.waiting, 0, 'nothing waiting');
  t.equal(st?.cache.global.usedBlocks, 0, 'no global block in use');
  t.equal(st?.cache.sliding.usedBlocks, 0, 'no sliding block in use');
};

// The reference: each request alone, one sequence at a time, whole prompts in one step.
const reference = await start({ modelDir: ckpt, maxNumSeqs: 1 });

t.test('concurrent greedy requests give exactly their solo ids', async (t) => {
  const engine = await start({ modelDir: ckpt, maxNumSeqs: 8 });
  const reqs = Array.from({ length: 6 }, (_, i) => ({ promptIds: prompt(i, 5 + i * 7), maxTokens: 20, temperature: 0 }));
  const alone = await solo(reference, reqs);
  const { ids, maxRunning } = await together(engine, reqs);
  t.ok(maxRunning >= 4, `batched: up to ${maxRunning} running together`);
  t.ok(new Set(alone.map((a) => a.join())).size > 1, 'the prompts give different outputs');
  ids.forEach((got, i) => t.same(got, alone[i], `request ${i}`));
  await checkSettled(t, engine);
});

for (const kind of ['scripted', 'ONNX'] as const) {
  t.test(`${kind}: a request submitted while another decodes joins it and finishes first`, async (t) => {
    // Steps of at least 5 ms: the long request's 200 steps take a second or more on any machine.
    const engine = await start({ modelDir: ckpt, maxNumSeqs: 4, minStepMs: 5, ...(kind === 'scripted' ? { script: [5, 6, 7] } : {}) });
    const order: string[] = [];
    let late: Promise<unknown> | undefined;
    const long = generate(engine, { promptIds: prompt(1, 8), maxTokens: 200, temperature: 0 }, () => {
      late ??= generate(engine, { promptIds: prompt(2, 8), maxTokens: 3, temperature: 0 }).then(() => order.push('short'));
    }).then(() => order.push('long'));
    await Promise.all([long, late]);
    t.same(order, ['short', 'long'], 'the short request did not wait for the long one');
    await checkSettled(t, engine);
  });
}

t.test('minStepMs (tests): each step that computes lasts at least that long; the tokens are unchanged', async (t) => {
  const req = { promptIds: prompt(3, 8), maxTokens: 5, temperature: 0 };
  const plain = await generate(await start({ modelDir: ckpt }), req);
  const paced = await start({ modelDir: ckpt, minStepMs: 40 });
  const t0 = performance.now();
  const got = await generate(paced, req);
  const ms = performance.now() - t0;
  t.same(got, plain, 'the same tokens');
  // Five tokens take five steps (the prefill makes the first), each reported after its padding
  // (libuv's timers count whole milliseconds: up to one early each).
  t.ok(ms >= 5 * 40 - 10, `5 tokens in ${ms.toFixed(0)} ms`);
  await checkSettled(t, paced);
});

t.test('preempted sequences are recomputed and give their unpreempted ids', async (t) => {
  const maxTokens = 40;
  const reqs = Array.from({ length: 6 }, (_, i) => ({ promptIds: prompt(100 + i, 12 + 2 * i), maxTokens }));
  const finalBlocks = Math.ceil((12 + 2 * 5 + maxTokens) / BLOCK);
  // Room for about 1.5 sequences at their final length (plus the null block).
  const blocks = Math.ceil(1.5 * finalBlocks) + 1;
  const bytesPerBlock = 2 * config.numKvHeads * BLOCK * config.headDim * 4 * config.numLayers;
  const engine = await start({ modelDir: ckpt, maxNumSeqs: 6, kvCacheBytes: blocks * bytesPerBlock });
  let preemptions = 0;
  for (const [name, extra] of [['greedy', { temperature: 0 }], ['temperature 1, seeded', { temperature: 1 }]] as const) {
    const batch = reqs.map((r, i) => ({ ...r, ...extra, seed: 1000 + i }));
    const alone = await solo(reference, batch);
    const { ids, maxRunning } = await together(engine, batch);
    const total = engine.stats?.preemptionsTotal ?? 0;
    t.ok(total > preemptions, `${name}: ${total - preemptions} preemptions`);
    preemptions = total;
    t.ok(maxRunning >= 2, `${name}: ${maxRunning} ran together`);
    ids.forEach((got, i) => t.same(got, alone[i], `${name}: request ${i}`));
  }
  await checkSettled(t, engine);
});

t.test('chunked prefill (16 tokens a step) gives the ids of whole-prompt prefill', async (t) => {
  const engine = await start({ modelDir: ckpt, maxNumSeqs: 8, maxNumBatchedTokens: 16 });
  const reqs = Array.from({ length: 4 }, (_, i) => ({ promptIds: prompt(200 + i, 90 + 7 * i), maxTokens: 12, temperature: 0 }));
  const alone = await solo(reference, reqs);
  let maxStep = 0;
  const see = (): void => { maxStep = Math.max(maxStep, engine.stats?.lastStep.numTokens ?? 0); };
  const ids = (await Promise.all(reqs.map((r) => generate(engine, r, see)))).map((r) => r.ids);
  t.ok(maxStep <= 16, `steps of at most 16 tokens (saw ${maxStep})`);
  ids.forEach((got, i) => t.same(got, alone[i], `request ${i}`));
  t.same((await generate(engine, reqs[0]!)).ids, alone[0], 'alone too');
  await checkSettled(t, engine);
});

type Mode = 'pre-aborted' | 'abort now' | 'abort after k' | 'break after k' | 'abort on timer' | 'never read' | 'complete';
const MODES: readonly Mode[] = ['pre-aborted', 'abort now', 'abort after k', 'break after k', 'abort on timer', 'never read', 'complete'];

/** Starts one generation and cancels it the way `mode` says; resolves with the ids read. */
async function cancelled(engine: Engine, req: GenerateRequest, mode: Mode, k: number): Promise<{ ids: number[]; reason: string | null }> {
  const ac = new AbortController();
  if (mode === 'pre-aborted') ac.abort();
  const stream = engine.generate(req, ac.signal);
  if (mode === 'abort now') ac.abort();
  if (mode === 'abort on timer') setTimeout(() => ac.abort(), k);
  if (mode === 'never read') return { ids: [], reason: null };
  const ids: number[] = [];
  let reason: string | null = null;
  for await (const e of stream) {
    if (e.type === 'token') {
      ids.push(e.tokenId);
      if (ids.length === k && mode === 'abort after k') ac.abort();
      if (ids.length === k && mode === 'break after k') break;
    } else if (e.type === 'finish') {
      reason = e.reason;
    }
  }
  return { ids, reason };
}

/** `n` random cancellations, at most `parallel` at once; checks the outputs that are known. */
async function cancellations(t: Test, engine: Engine, n: number, parallel: number, seed: number, script?: readonly number[]): Promise<void> {
  const rand = prng(seed);
  const counts = new Map<Mode, number>();
  const wrong: string[] = [];
  let cutShort = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      const mode = MODES[Math.floor(rand() * MODES.length)]!;
      counts.set(mode, (counts.get(mode) ?? 0) + 1);
      const maxTokens = 1 + Math.floor(rand() * 30);
      const k = 1 + Math.floor(rand() * maxTokens);
      const req = { promptIds: prompt(Math.floor(rand() * 1e6), 1 + Math.floor(rand() * 60)), maxTokens, temperature: rand() < 0.5 ? 0 : 1, ignoreEos: true };
      const r = await cancelled(engine, req, mode, mode === 'abort on timer' ? Math.floor(rand() * 5) : k);
      // What was read is a prefix of the script (none lost or repeated), and only complete runs are whole.
      const bad = (script !== undefined && r.ids.some((id, i) => id !== script[i % script.length]))
        || (mode === 'complete' && (r.ids.length !== maxTokens || r.reason !== 'length'))
        || (mode === 'abort after k' && r.reason !== 'abort' && r.reason !== 'length');
      if (r.reason === 'abort' && r.ids.length < maxTokens) cutShort++;
      if (bad) wrong.push(`${mode} (k ${k}, max ${maxTokens}): ${r.ids.length} ids, ${r.reason}`);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  t.same(wrong, [], `${n} generations: ${[...counts].map(([m, c]) => `${c} ${m}`).join(', ')}`);
  t.ok(cutShort > 0, `${cutShort} read an abort before their max tokens`);
  await checkSettled(t, engine);
}

t.test('1,000 random cancellations on a scripted model leave no cache in use', async (t) => {
  const script = Array.from({ length: 37 }, (_, i) => 10 + i * 7);
  // A small cache (24 blocks, 6 of them fill one sequence): preemptions happen along the way too.
  const bytesPerBlock = 2 * config.numKvHeads * BLOCK * config.headDim * 4 * config.numLayers;
  const engine = await start({ modelDir: ckpt, script, maxNumSeqs: 16, kvCacheBytes: 24 * bytesPerBlock });
  await cancellations(t, engine, 1000, 64, 7, script);
  t.ok((engine.stats?.preemptionsTotal ?? 0) > 0, `${engine.stats?.preemptionsTotal} preemptions along the way`);
});

t.test('random cancellations on the ONNX model leave no cache in use', async (t) => {
  const engine = await start({ modelDir: ckpt, maxNumSeqs: 8, maxNumBatchedTokens: 32 });
  await cancellations(t, engine, 60, 12, 11);
});

const swCkpt = join(dir, 'ckpt-sw');
const SW = 16;
makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: swCkpt, set: { max_position_embeddings: '256', sliding_window: String(SW) } });
// With prefix caching the ring has one spare block, and a block dropped from it at a boundary is
// still read by the step that drops it (so it counts in that step's stats).
for (const prefixCaching of [false, true]) t.test(`sliding layers hold at most the window per sequence while global grows (prefix caching ${prefixCaching ? 'on' : 'off'})`, async (t) => {
  const W = SW;
  const ring = (Math.ceil(W / BLOCK) + (prefixCaching ? 2 : 0)) * BLOCK;
  const engine = await start({ modelDir: swCkpt, maxNumSeqs: 4, prefixCaching });
  const reqs = Array.from({ length: 3 }, (_, i) => ({ promptIds: prompt(300 + i, 10 + 10 * i), maxTokens: 120, temperature: 0 }));
  let samples = 0;
  let over = 0;
  let maxGlobalPerSeq = 0;
  const see = (): void => {
    const st = engine.stats;
    if (st === null || st.running === 0) return;
    samples++;
    if (st.cache.sliding.usedTokens > st.running * ring) over++;
    maxGlobalPerSeq = Math.max(maxGlobalPerSeq, st.cache.global.usedTokens / st.running);
  };
  const ids = (await Promise.all(reqs.map((r) => generate(engine, r, see)))).map((r) => r.ids);
  t.ok(samples > 100, `${samples} samples of the stats`);
  t.equal(over, 0, `sliding use never exceeded ${ring} positions per running sequence`);
  t.ok(maxGlobalPerSeq >= 120, `global use grew with the length (${maxGlobalPerSeq} positions per sequence)`);
  // The ring wraps many times; batched results still match each request alone.
  const alone = await solo(engine, reqs);
  ids.forEach((got, i) => t.same(got, alone[i], `request ${i}`));
  await checkSettled(t, engine);
});
