/**
 * Host time per row per decode step with the sampler graph, the model's logits copied into a host
 * array and bound from there (before) against left in the runner's device memory and bound in
 * place (after: SlotRunner.keepLogitsOnDevice, DeviceSampler inPlace), alternated step by step in
 * one run, on a tiny model with Gemma's 256,000-token vocabulary, at batch 1, 64 and 256, greedy
 * and temperature 1: `npx tsx bench/logits-handoff.ts [steps]`. Host time = the step's wall time
 * (runner.execute + sample) minus the time spent inside ONNX Runtime's runs (the model's and the
 * sampler's; ortRunMs, timed in the addon around RunWithBinding), so the binding's own work on a
 * run's arguments counts as host time; also its runner part alone (execute minus the model's
 * run), the binding's part (run calls minus ONNX Runtime), and the bytes the step's runs wrote
 * into host memory (hostOutputBytes), per row.
 * On the CPU provider "device memory" is host memory: the after path saves the copy that a GPU
 * would make, not compute here.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../src/checkpoint/make-random.ts';
import { exportCheckpoint } from '../src/engine/export/export.ts';
import { KvCache } from '../src/engine/kv-cache.ts';
import { SlotRunner } from '../src/engine/slot-runner.ts';
import { Stepper } from '../src/engine/stepper.ts';
import { DeviceSampler, type SampleRow } from '../src/engine/device-sampler.ts';
import { newGeneration, type Generation } from '../src/engine/generation.ts';
import { hostOutputBytes, NativeSession, ortRunMs } from '../src/engine/native/ort-native.ts';
import { DEFAULT_SAMPLING } from '../src/engine/sampling.ts';
import type { SequenceCache } from '../src/scheduler/kv-cache-manager.ts';

const STEPS = Number(process.argv[2] ?? 51);
/** Steps per cell before measuring: sessions built, buffers grown, the step's code compiled by the JIT. */
const WARMUP = 30;
const BATCHES = [1, 64, 256];
const dir = mkdtempSync(join(tmpdir(), 'gs-handoff-bench-'));
const { config } = makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: join(dir, 'ckpt'), set: { vocab_size: '256000', max_position_embeddings: '128', sliding_window: '8' } });
const model = join(dir, 'gqa');
exportCheckpoint({ checkpointDir: join(dir, 'ckpt'), outDir: model, attention: 'gqa' });
const V = config.vocabSize;
const slots = Math.max(...BATCHES);

// Every run call's wall time (model and sampler sessions alike): minus ortRunMs, the binding's host work.
let callMs = 0;
const run = NativeSession.prototype.run;
NativeSession.prototype.run = function (this: NativeSession, ...args: Parameters<typeof run>): void {
  const t0 = performance.now();
  try { run.apply(this, args); } finally { callMs += performance.now() - t0; }
};

interface Path {
  readonly name: 'before' | 'after';
  readonly runner: SlotRunner;
  readonly sampler: DeviceSampler;
  stepper: Stepper;
  seqs: SequenceCache[];
  gens: Generation[];
  next: number[];
  readonly host: number[];
  readonly runnerHost: number[];
  readonly binding: number[];
  readonly bytes: number[];
}

function open(name: Path['name']): Path {
  const runner = SlotRunner.load(model, { kvCacheBytes: slots * config.maxPositions * KvCache.bytesPerToken(config), maxNumSeqs: slots, intraOpThreads: 1 });
  const sampler = DeviceSampler.create({ device: 'cpu', intraOpThreads: 1, inPlace: name === 'after' });
  if ('error' in sampler) throw new Error(sampler.error);
  if (name === 'after' && !runner.keepLogitsOnDevice('cpu')) throw new Error('the runner did not keep its logits on the device');
  return { name, runner, sampler, stepper: new Stepper(runner), seqs: [], gens: [], next: [], host: [], runnerHost: [], binding: [], bytes: [] };
}

/** One decode step of every sequence of `p`: host ms per row in the runner, in the sampler and in the binding's run calls; host bytes per row. */
async function step(p: Path): Promise<[number, number, number, number]> {
  const B = p.seqs.length;
  for (const s of p.seqs) p.stepper.cache.reserve(s, s.numCached + 1);
  const [ort0, call0, bytes0, t0] = [ortRunMs(), callMs, hostOutputBytes(), performance.now()];
  const out = await p.stepper.step(p.seqs.map((seq, i) => ({ seq, tokenIds: [p.next[i]!], logits: 'last' as const })));
  const [ort1, t1] = [ortRunMs(), performance.now()];
  const rows: SampleRow[] = p.gens.map((g, i) => ({ g, numOutput: 1, row: i, allowed: null }));
  const res = p.sampler.sample(out.device ?? out.logits, V, rows);
  const t2 = performance.now();
  p.next = res.map((r) => ('tokenId' in r ? r.tokenId : 0));
  const ort2 = ortRunMs();
  return [(t1 - t0 - (ort1 - ort0)) / B, (t2 - t1 - (ort2 - ort1)) / B, (callMs - call0 - (ort2 - ort0)) / B, (hostOutputBytes() - bytes0) / B];
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const paths = [open('before'), open('after')];
console.log(`logits-handoff: tiny model, V=${V}, ${STEPS} decode steps per cell after ${WARMUP} (alternated), CPU provider, 1 intra-op thread; host µs per row per step (median), bytes to host per row`);
for (const B of BATCHES) {
  for (const temperature of [0, 1]) {
    for (const p of paths) {
      for (const s of p.seqs) await p.stepper.free(s);
      p.seqs = Array.from({ length: B }, () => p.stepper.cache.newSequence());
      p.gens = Array.from({ length: B }, (_, i) => newGeneration({
        type: 'submit', id: i, promptIds: [2], maxTokens: 1e9, priority: 0, sampling: { ...DEFAULT_SAMPLING, temperature }, seed: i,
        stopIds: [1], minTokens: 0, logprobs: null, promptLogprobs: null,
      }));
      p.next = Array.from({ length: B }, () => 2);
      p.host.length = 0;
      p.runnerHost.length = 0;
      p.binding.length = 0;
      p.bytes.length = 0;
    }
    for (let s = 0; s < WARMUP + STEPS; s++) {
      for (const p of s % 2 === 0 ? paths : [...paths].reverse()) {
        const [runnerHost, samplerHost, binding, bytes] = await step(p);
        if (s < WARMUP) continue;
        p.host.push((runnerHost + samplerHost) * 1000);
        p.runnerHost.push(runnerHost * 1000);
        p.binding.push(binding * 1000);
        p.bytes.push(bytes);
      }
    }
    const cell = paths.map((p) => `${p.name} ${median(p.host).toFixed(1).padStart(6)} µs (runner ${median(p.runnerHost).toFixed(1).padStart(5)}, binding ${median(p.binding).toFixed(1).padStart(5)}) ${median(p.bytes).toFixed(0).padStart(7)} B`).join('   ');
    console.log(`batch ${String(B).padStart(3)} ${temperature === 0 ? 'greedy' : 'T=1   '}  ${cell}`);
  }
}
for (const p of paths) { p.sampler.release(); await p.runner.release(); }
rmSync(dir, { recursive: true, force: true });
