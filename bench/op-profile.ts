// Per-op-type kernel time of decode steps from ONNX Runtime's profiler: `npx tsx bench/op-profile.ts EXPORT_DIR`.
// A profiling session is swapped into a ModelRunner on the stock binding (a private field: this is a measuring tool).
import * as ort from 'onnxruntime-node';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ModelRunner } from '../src/engine/model-runner.ts';
import { Stepper } from '../src/engine/stepper.ts';
const dir = process.argv[2]!;
const r = await ModelRunner.load(dir, { kvCacheTokens: 512, binder: 'stock' });
const rs = new Stepper(r);
/** The runner's stock graph session: `ort` is the onnxruntime-node session it runs. */
const graph = (r as unknown as { session: { ort: Runs } }).session;
type Runs = { run: (feeds: unknown) => Promise<unknown> };
const median = (a: number[]): number => [...a].sort((x, y) => x - y)[a.length >> 1]!;

// 1. Without the profiler: a decode step's wall time against the time inside session.run.
{
  const session = graph.ort;
  const run = session.run.bind(session);
  let inRun = 0;
  session.run = async (feeds) => { const t0 = performance.now(); const out = await run(feeds); inRun += performance.now() - t0; return out; };
  const seq = rs.cache.newSequence();
  rs.cache.reserve(seq, 200);
  await rs.step([{ seq, tokenIds: Array.from({ length: 64 }, (_, i) => 100 + i), logits: 'last' }]);
  const walls: number[] = [];
  const runs: number[] = [];
  for (let k = 0; k < 12; k++) {
    inRun = 0;
    const t0 = performance.now();
    await rs.step([{ seq, tokenIds: [7], logits: 'last' }]);
    walls.push(performance.now() - t0);
    runs.push(inRun);
  }
  await rs.free(seq);
  session.run = run;
  console.log(`decode step (B=1, 64 cached): ${median(walls).toFixed(1)} ms, of which session.run ${median(runs).toFixed(1)} ms, host ${(median(walls) - median(runs)).toFixed(1)} ms`);
}

// 2. A second session with profiling on, swapped in: kernel time by op type.
const prof = await ort.InferenceSession.create(join(dir, 'model.onnx'), { executionProviders: ['cpu'], graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: '/tmp/ortprof' });
(graph as unknown as { ort: unknown }).ort = prof;
const s = rs.cache.newSequence();
rs.cache.reserve(s, 200);
await rs.step([{ seq: s, tokenIds: Array.from({ length: 64 }, (_, i) => 100 + i), logits: 'last' }]);
for (let k = 0; k < 10; k++) await rs.step([{ seq: s, tokenIds: [7], logits: 'last' }]);
prof.endProfiling();
const file = readdirSync('/tmp').filter((f) => f.startsWith('ortprof')).map((f) => join('/tmp', f)).sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0]!;
const events = JSON.parse(readFileSync(file, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
const decodeRuns = runs.slice(1);
console.log('decode model_run median us', decodeRuns.map((e) => e.dur).sort((a, b) => a - b)[5]);
const nodes = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
// Skip the prefill: nodes are in order; take the last 10/11 of them.
const perRun = nodes.length / runs.length;
const tail = nodes.slice(Math.round(perRun));
const byOp = new Map<string, number>();
for (const e of tail) byOp.set(e.args?.op_name ?? '?', (byOp.get(e.args?.op_name ?? '?') ?? 0) + e.dur);
const total = [...byOp.values()].reduce((a, b) => a + b, 0);
for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(op.padEnd(28), (us / 10 / 1000).toFixed(2), 'ms/step', ((100 * us) / total).toFixed(1) + '%');
const lm = tail.filter((e) => /lm_head|logits/i.test(e.name)).reduce((a, e) => a + e.dur, 0);
console.log('nodes named lm_head/logits', (lm / 10 / 1000).toFixed(2), 'ms/step');
