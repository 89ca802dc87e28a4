/**
 * Where a decode step's (or a prefill's) time goes in the native runner (gemma-serve's int4 kernel
 * included), by ONNX Runtime op type, from its profiler (GEMMA_SERVE_ORT_PROFILE, read by native/gs_ort.cc):
 *
 *   npx tsx bench/native-profile.ts EXPORT_DIR [--batch 8] [--context 32] [--steps 10] [--int4-kernel auto|ort] [--attention-kernel auto|ort] [--nodes 0] [--prefill N]
 *
 * B sequences of --context cached tokens decode --steps steps together; the first step after the
 * prefills is left out. With --prefill N, a step is instead one fresh sequence's whole N-token
 * prompt (logits of its last position), --steps times after one unmeasured prefill. Prints kernel
 * ms per step by op type and the step's wall time, then by part of the model (partOf), then the
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
import type { AttentionKernel } from '../src/engine/native/attention-graph.ts';

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: { nodes: { type: 'string', default: '0' }, batch: { type: 'string', default: '8' }, context: { type: 'string', default: '32' }, steps: { type: 'string', default: '10' }, 'int4-kernel': { type: 'string', default: 'auto' }, 'attention-kernel': { type: 'string', default: 'auto' }, prefill: { type: 'string', default: '0' } },
});
const dir = positionals[0];
if (dir === undefined) throw new Error('usage: bench/native-profile.ts EXPORT_DIR [--batch 8] [--context 32] [--steps 10] [--int4-kernel auto|ort] [--attention-kernel auto|ort] [--nodes 0] [--prefill N]');
const prefill = Number(o.prefill);
const B = prefill > 0 ? 1 : Number(o.batch), ctx = prefill > 0 ? prefill : Number(o.context), steps = Number(o.steps);
const out = mkdtempSync(join(tmpdir(), 'gs-prof-'));
process.env.GEMMA_SERVE_ORT_PROFILE = join(out, 'ort');
const { config, manifest } = readManifest(dir);
const len = ctx + steps + 32;
const bytes = 2 * B * len * KvCache.bytesPerToken(config, manifestKvDtype(manifest));
// paged: a budget for B sequences; gqa: B slots of `len` positions
const sizing = manifestAttention(manifest) === 'gqa' ? { kvCacheTokens: len, kvCacheBytes: bytes } : { kvCacheBytes: bytes };
const r = await loadRunner(dir, { ...sizing, maxNumSeqs: B, int4Kernel: o['int4-kernel'] as Int4Kernel, attentionKernel: o['attention-kernel'] as AttentionKernel, binder: 'native' });
delete process.env.GEMMA_SERVE_ORT_PROFILE;
const rs = new Stepper(r);
const prompt = Array.from({ length: ctx }, (_, i) => 100 + i);
const walls: number[] = [];
let runs = 0;
if (prefill > 0) {
  // Every step a fresh sequence's whole prompt; the first is left out like a decode run's first step.
  for (let k = 0; k <= steps; k++) {
    const seq = rs.cache.newSequence();
    rs.cache.reserve(seq, ctx);
    const t0 = performance.now();
    await rs.step([{ seq, tokenIds: prompt, logits: 'last' }]);
    walls.push(performance.now() - t0);
    await rs.free(seq);
  }
} else {
  const seqs = Array.from({ length: B }, () => rs.cache.newSequence());
  for (const s of seqs) rs.cache.reserve(s, ctx + steps + 1);
  for (const s of seqs) { await rs.step([{ seq: s, tokenIds: prompt, logits: 'last' }]); runs++; }
  for (let k = 0; k <= steps; k++) {
    const t0 = performance.now();
    await rs.step(seqs.map((seq) => ({ seq, tokenIds: [7], logits: 'last' as const })));
    walls.push(performance.now() - t0);
  }
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
const byPart = new Map<string, number>();
// Each node's fastest run: on a shared host the other processes' load inflates single runs by
// several times, and the sum of the minima is the step's cost without that noise.
const nodeMin = new Map<string, { part: string; us: number }>();
for (const e of tail) {
  byOp.set(e.args?.op_name ?? '?', (byOp.get(e.args?.op_name ?? '?') ?? 0) + e.dur);
  const part = partOf(e.args?.op_name ?? '?', e.name);
  byPart.set(part, (byPart.get(part) ?? 0) + e.dur);
  const seen = nodeMin.get(e.name);
  if (seen === undefined || e.dur < seen.us) nodeMin.set(e.name, { part, us: e.dur });
  if (e.args?.op_name !== 'MatMulQ4' && e.args?.op_name !== 'MatMulNBits') byNode.set(e.name, (byNode.get(e.name) ?? 0) + e.dur);
}
const total = [...byOp.values()].reduce((a, b) => a + b, 0);
const sorted = walls.slice(1).sort((a, b) => a - b);
console.log(`${dir}: ${prefill > 0 ? `prefill ${prefill}` : `batch ${B}, context ${ctx}`}, ${steps} steps; int4 matmuls by gemma-serve's kernel: ${r.int4Swapped ?? 0}; fused attention layers: ${r.attentionFused ?? 0}`);
const runUs = modelRuns.slice(-steps).reduce((a, e) => a + e.dur, 0);
console.log(`step wall time median ${sorted[sorted.length >> 1]!.toFixed(1)} ms; ONNX Runtime's run ${(runUs / steps / 1000).toFixed(1)} ms/step, of it kernel time ${(total / steps / 1000).toFixed(1)} ms/step`);
for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 14)) console.log(`${op.padEnd(28)} ${(us / steps / 1000).toFixed(2).padStart(7)} ms/step ${((100 * us) / total).toFixed(1).padStart(5)}%`);
const partMin = new Map<string, number>();
for (const { part, us } of nodeMin.values()) partMin.set(part, (partMin.get(part) ?? 0) + us);
const totalMin = [...partMin.values()].reduce((a, b) => a + b, 0);
console.log(`by part of the model: mean ms/step and share; each node's fastest step summed (total ${(totalMin / 1000).toFixed(1)} ms) and share`);
for (const [part, us] of [...byPart].sort((a, b) => b[1] - a[1])) {
  const min = partMin.get(part) ?? 0;
  console.log(`  ${part.padEnd(44)} ${(us / steps / 1000).toFixed(2).padStart(8)} ${((100 * us) / total).toFixed(1).padStart(5)}%  ${(min / 1000).toFixed(2).padStart(8)} ${((100 * min) / totalMin).toFixed(1).padStart(5)}%`);
}
for (const [node, us] of [...byNode].sort((a, b) => b[1] - a[1]).slice(0, Number(o.nodes))) console.log(`  ${(us / steps / 1000).toFixed(3).padStart(7)} ms/step  ${node.replace(/_kernel_time$/, '')}`);

/** The part of the model a node belongs to, from its op type and the export's node names (gemma2-graph.ts, paged-attention.ts). */
function partOf(op: string, name: string): string {
  if (/lm_head|\/model\/head\/|final_softcap|\/model\/norm\//.test(name)) return 'LM head (final norm, row gather, soft-cap)';
  if (op === 'MatMulQ4' || op === 'MatMulNBits') return 'int4 matmuls (q/k/v/o, gate/up/down)';
  if (op === 'PagedAttention') return 'attention: fused (rotary, scores, softmax, p·v)';
  if (/embed_tokens/.test(name)) return 'embedding';
  if (/\/model\/(mask|step|rope)\//.test(name)) return 'per-step masks and rotary tables';
  if (/_rope\//.test(name)) return 'rotary';
  if (/layernorm/.test(name)) return 'RMSNorms';
  if (/mlp\/(act|mul)/.test(name)) return 'GeGLU (Gelu, Mul)';
  if (/_residual/.test(name)) return 'residual adds';
  if (/attn\/[kv]_cache_(gather|view|cast)/.test(name)) return 'attention: cache block gather';
  if (/attn\/\w+_softcap/.test(name)) return 'attention: soft-cap (Div, Tanh, Mul)';
  if (/attn\/(cache|new)_scores\//.test(name) || /attn\/(cache|new)_scores_kernel/.test(name)) return 'attention: q·kᵀ';
  if (/attn\/(cache|new)_values|attn\/context_kernel/.test(name)) return 'attention: p·v';
  if (/attn\/(softmax|scores_kernel|probs_split|\w+_masked)/.test(name)) return 'attention: mask add, concat, softmax, split';
  if (/attn\//.test(name)) return `attention: layout (${op})`;
  return `other (${op})`;
}
