/**
 * Where a decode step's time goes in the native runner (gemma-serve's int4 kernel included), by
 * ONNX Runtime op type, from its profiler (GEMMA_SERVE_ORT_PROFILE, read by native/gs_ort.cc):
 *
 *   npx tsx bench/native-profile.ts EXPORT_DIR [--batch 8] [--context 32] [--steps 10] [--int4-kernel auto|ort] [--nodes 0]
 *
 * B sequences of --context cached tokens decode --steps steps together; the first step after the
 * prefills is left out. Prints kernel ms per step by op type and the step's wall time, then the
 * --nodes costliest nodes other than the int4 matmuls.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadRunner } from '../src/engine/runner.ts';
import { Stepper } from '../src/engine/stepper.ts';
import { manifestAttention, manifestKvDtype, readManifest } from '../src/engine/manifest.ts';
import { KvCache } from '../src/engine/kv-cache.ts';
import type { Int4Kernel } from '../src/engine/native/q4-graph.ts';

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: { nodes: { type: 'string', default: '0' }, batch: { type: 'string', default: '8' }, context: { type: 'string', default: '32' }, steps: { type: 'string', default: '10' }, 'int4-kernel': { type: 'string', default: 'auto' } },
});
const dir = positionals[0];
if (dir === undefined) throw new Error('usage: bench/native-profile.ts EXPORT_DIR [--batch 8] [--context 32] [--steps 10] [--int4-kernel auto|ort] [--nodes 0]');
const B = Number(o.batch), ctx = Number(o.context), steps = Number(o.steps);
const out = mkdtempSync(join(tmpdir(), 'gs-prof-'));
process.env.GEMMA_SERVE_ORT_PROFILE = join(out, 'ort');
const { config, manifest } = readManifest(dir);
const len = ctx + steps + 32;
const bytes = 2 * B * len * KvCache.bytesPerToken(config, manifestKvDtype(manifest));
// paged: a budget for B sequences; gqa: B slots of `len` positions
const sizing = manifestAttention(manifest) === 'gqa' ? { kvCacheTokens: len, kvCacheBytes: bytes } : { kvCacheBytes: bytes };
const r = await loadRunner(dir, { ...sizing, maxNumSeqs: B, int4Kernel: o['int4-kernel'] as Int4Kernel, binder: 'native' });
delete process.env.GEMMA_SERVE_ORT_PROFILE;
const rs = new Stepper(r);
const seqs = Array.from({ length: B }, () => rs.cache.newSequence());
for (const s of seqs) rs.cache.reserve(s, ctx + steps + 1);
let runs = 0;
for (const s of seqs) { await rs.step([{ seq: s, tokenIds: Array.from({ length: ctx }, (_, i) => 100 + i), logits: 'last' }]); runs++; }
const walls: number[] = [];
for (let k = 0; k <= steps; k++) {
  const t0 = performance.now();
  await rs.step(seqs.map((seq) => ({ seq, tokenIds: [7], logits: 'last' as const })));
  walls.push(performance.now() - t0);
}
await r.release();
const file = readdirSync(out).map((f) => join(out, f))[0]!;
const events = JSON.parse(readFileSync(file, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
rmSync(out, { recursive: true, force: true });
const modelRuns = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
const nodes = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
const byNode = new Map<string, number>();
// Nodes in run order: leave out the prefills and the first decode step.
const perRun = nodes.length / modelRuns.length;
const tail = nodes.slice(Math.round(perRun * (runs + 1)));
const byOp = new Map<string, number>();
for (const e of tail) {
  byOp.set(e.args?.op_name ?? '?', (byOp.get(e.args?.op_name ?? '?') ?? 0) + e.dur);
  if (e.args?.op_name !== 'MatMulQ4' && e.args?.op_name !== 'MatMulNBits') byNode.set(e.name, (byNode.get(e.name) ?? 0) + e.dur);
}
const total = [...byOp.values()].reduce((a, b) => a + b, 0);
const sorted = walls.slice(1).sort((a, b) => a - b);
console.log(`${dir}: batch ${B}, context ${ctx}, ${steps} steps; int4 matmuls by gemma-serve's kernel: ${r.int4Swapped ?? 0}`);
console.log(`step wall time median ${sorted[sorted.length >> 1]!.toFixed(1)} ms; kernel time ${(total / steps / 1000).toFixed(1)} ms/step`);
for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 14)) console.log(`${op.padEnd(28)} ${(us / steps / 1000).toFixed(2).padStart(7)} ms/step ${((100 * us) / total).toFixed(1).padStart(5)}%`);
for (const [node, us] of [...byNode].sort((a, b) => b[1] - a[1]).slice(0, Number(o.nodes))) console.log(`  ${(us / steps / 1000).toFixed(3).padStart(7)} ms/step  ${node.replace(/_kernel_time$/, '')}`);
