// gemma-serve's fused attention (native/attnop.cc as ai.gemma_serve.PagedAttention, swapped in by
// native/attention-graph.ts): the same logits as the exported attention nodes, through chunked
// prefills, decode batches of rows at different lengths, a step mixing a prompt chunk with decode
// rows (padding), and a sliding window shorter than the sequences (the ring wraps), on GQA with
// soft-caps and on MQA without them with query_pre_attn_scalar != head_dim; with the AVX-512 path
// where this CPU has it (the tiled prefill path included) and with the plain C++ path everywhere;
// with float32 pools and with float16 ones (--kv-dtype fp16: the op widens them as it reads, the
// graph casts what it gathered). `attentionKernel: 'ort'` keeps the nodes.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { ModelRunner } from '../../src/engine/model-runner.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { ATTENTION_OP, fusedAttentionSpec, swapAttention } from '../../src/engine/native/attention-graph.ts';
import { parseGemma2Config } from '../../src/checkpoint/config.ts';
import { f16ToF32, f32ToF16 } from '../../src/f16.ts';
import { requireNativeAddon } from './native-addon.ts';

const { onnx } = onnxProto;
const addon = requireNativeAddon();
const fast = addon.attentionKernel(false);
t.comment(`this CPU's PagedAttention path: ${fast}`);

const root = mkdtempSync(join(tmpdir(), 'gs-fused-attn-'));
t.teardown(() => {
  addon.attentionKernel(false);
  rmSync(root, { recursive: true, force: true });
});

const W = 6;
const models = {
  'gqa, soft-capped, window 6': { num_key_value_heads: '2', sliding_window: String(W) },
  'mqa, no soft-caps, scalar != head_dim': { num_key_value_heads: '1', attn_logit_softcapping: 'null', head_dim: '32', query_pre_attn_scalar: '24', sliding_window: String(W) },
};

function exportModel(name: string, set: Record<string, string>, kvDtype: 'fp32' | 'fp16' = 'fp32'): { dir: string; layers: number } {
  const ckpt = join(root, `${name}-ckpt`);
  const { config } = makeRandomCheckpoint({ shape: 'tiny', seed: 21, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '128', ...set } });
  const dir = join(root, name);
  exportCheckpoint({ checkpointDir: ckpt, outDir: dir, kvDtype });
  return { dir, layers: config.numLayers };
}

/**
 * Every logit of a fixed script of steps: three sequences' prompts in chunks (one chunk beside two
 * decode rows), then decode steps of all three together, past the window. `roundPools`: a float32
 * cache's entries rounded to fp16 after every step (what a float16 cache holds).
 */
async function script(runner: ModelRunner, roundPools = false): Promise<Float32Array[]> {
  const s = new Stepper(runner);
  const [a, b, c] = [s.cache.newSequence(), s.cache.newSequence(), s.cache.newSequence()];
  const tok = (n: number, base: number): number[] => Array.from({ length: n }, (_, i) => (base + 37 * i) % 250 + 3);
  const out: Float32Array[] = [];
  const step = async (rows: [typeof a, number[]][]): Promise<void> => {
    for (const [seq, ids] of rows) s.cache.reserve(seq, seq.numCached + ids.length);
    const r = await s.step(rows.map(([seq, ids]) => ({ seq, tokenIds: ids, logits: 'all' as const })));
    out.push(Float32Array.from(r.logits));
    if (roundPools) for (const pair of runner.kv.pools) for (const p of pair) for (let i = 0; i < p.length; i++) p[i] = f16ToF32(f32ToF16(p[i]!));
  };
  await step([[a, tok(13, 1)]]); // a long prefill (the tiled path: 13 queries x the group)
  await step([[b, tok(3, 2)]]);
  await step([[a, tok(2, 3)], [b, tok(1, 4)]]); // rows of different lengths: b is padded
  await step([[c, tok(9, 5)], [a, tok(1, 6)], [b, tok(1, 7)]]); // a prompt chunk beside decode rows
  for (let k = 0; k < 10; k++) await step([[a, tok(1, 8 + k)], [b, tok(1, 20 + k)], [c, tok(1, 40 + k)]]);
  await step([[c, tok(7, 60)], [a, tok(1, 61)]]); // a chunk after the window wrapped
  return out;
}

function maxDiff(x: readonly Float32Array[], y: readonly Float32Array[]): number {
  let m = 0;
  x.forEach((row, i) => row.forEach((v, j) => { m = Math.max(m, Math.abs(v - y[i]![j]!)); }));
  return m;
}

for (const [name, set] of Object.entries(models)) for (const kvDtype of ['fp32', 'fp16'] as const) {
  t.test(`${name}, ${kvDtype} pools: fused = exported nodes`, async (t) => {
    const { dir, layers } = exportModel(`${name.replace(/\W+/g, '-')}-${kvDtype}`, set, kvDtype);
    const load = (attentionKernel: 'auto' | 'ort'): Promise<ModelRunner> => ModelRunner.load(dir, { blockSize: 4, kvCacheBytes: 2 ** 20, attentionKernel });
    const nodes = await load('ort');
    t.teardown(() => nodes.release());
    t.equal(nodes.attentionFused, 0, "'ort': the exported nodes");
    const want = await script(nodes);
    // With fp16 pools the two write their new keys (equal within ~1e-6) rounded to fp16, where a
    // difference that small sometimes lands on the other side of a rounding boundary (one fp16
    // step, ~1e-3 relative): hence the looser bound there, and the exact check below.
    const bound = kvDtype === 'fp32' ? 1e-4 : 1e-3;
    const rounded = kvDtype === 'fp16' ? exportModel(`${name.replace(/\W+/g, '-')}-rounded`, set, 'fp32').dir : null;
    for (const path of fast === 'avx512' ? ['avx512', 'scalar'] : ['scalar']) {
      t.equal(addon.attentionKernel(path === 'scalar'), path);
      const fused = await load('auto');
      t.equal(fused.attentionFused, layers, `every layer fused (${path})`);
      const got = await script(fused);
      await fused.release();
      t.equal(got.length, want.length);
      const d = maxDiff(got, want);
      t.comment(`${path}: max |Δ logit| ${d.toExponential(2)} over ${want.reduce((n, r) => n + r.length, 0)} logits`);
      t.ok(d < bound, `${path}: logits within ${bound} of the exported nodes' (${d.toExponential(2)})`);
      if (rounded !== null) {
        // fp16 pools read by the op = float32 pools holding the same fp16 values: exactly.
        const same = await ModelRunner.load(rounded, { blockSize: 4, kvCacheBytes: 2 ** 20 });
        const exact = await script(same, true);
        await same.release();
        t.equal(maxDiff(got, exact), 0, `${path}: fp16 pools give exactly what float32 pools holding fp16 values give`);
      }
    }
    addon.attentionKernel(false);
  });
}

t.test('the swap: one node a layer, nothing of the old attention left; an fp16 cache is swapped too', async (t) => {
  const { dir, layers } = exportModel('swap', models['gqa, soft-capped, window 6']);
  const cfg = parseGemma2Config(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), 'config.json');
  const model = onnx.ModelProto.decode(readFileSync(join(dir, 'model.onnx')));
  const before = model.graph!.node!.length;
  t.equal(swapAttention(model, fusedAttentionSpec(cfg)), layers);
  const nodes = model.graph!.node!;
  t.equal(nodes.filter((n) => n.opType === ATTENTION_OP).length, layers);
  t.notOk(nodes.some((n) => /attn\/(q_rope|k_rope|scores|softmax|\w+_cache_gather)|\/model\/mask\//.test(n.name ?? '')), 'rotary, masks, gathers, scores and softmax are gone');
  t.ok(nodes.length < before / 2, `${before} nodes -> ${nodes.length}`);
  // every input is produced before its use
  const seen = new Set([...model.graph!.input!.map((i) => i.name!), ...model.graph!.initializer!.map((i) => i.name!)]);
  for (const n of nodes) {
    for (const x of n.input ?? []) if (x !== '' && !seen.has(x)) t.fail(`${n.name} reads ${x} before it is made`);
    for (const o of n.output ?? []) seen.add(o);
  }
  const half = exportModel('fp16', models['gqa, soft-capped, window 6'], 'fp16');
  const runner = await ModelRunner.load(half.dir, { blockSize: 4, kvCacheBytes: 2 ** 20 });
  t.equal(runner.attentionFused, half.layers, 'fp16 cache: fused as well');
  await runner.release();
});
