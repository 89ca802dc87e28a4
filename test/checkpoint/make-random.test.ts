import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint, parseSetArgs, planShards } from '../../src/checkpoint/make-random.ts';
import { openCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import { expectedTensors } from '../../src/checkpoint/config.ts';
import { readFloat32 } from '../../src/checkpoint/safetensors.ts';
import { CheckpointError, ConfigError } from '../../src/errors.ts';

const root = mkdtempSync(join(tmpdir(), 'make-random-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => join(root, `ck${n++}`);

/** Every file of a directory, by name, as bytes. */
function filesOf(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f))]));
}

for (const dtype of ['f32', 'bf16'] as const) {
  t.test(`a tiny ${dtype} checkpoint opens with every tensor in its expected shape`, async (t) => {
    const dir = fresh();
    makeRandomCheckpoint({ shape: 'tiny', seed: 7, dtype, out: dir });
    const ck = openCheckpoint(dir);
    t.equal(ck.config.vocabSize, 512);
    t.equal(ck.config.numLayers, 4);
    const expected = expectedTensors(ck.config);
    t.equal(ck.tensors.size, expected.size);
    for (const [name, shape] of expected) {
      const e = ck.tensors.get(name);
      t.same(e?.shape, shape, name);
      t.equal(e?.dtype, dtype === 'f32' ? 'F32' : 'BF16', name);
    }
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    t.equal(config['torch_dtype'], dtype === 'f32' ? 'float32' : 'bfloat16');
    t.same(JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8')), { bos_token_id: 2, eos_token_id: [1, 107], pad_token_id: 0 });
    t.not(ck.tokenizerJson, null);
    t.not(ck.tokenizerConfigJson, null);
  });
}

t.test('weights have the intended spread: embeddings ~1/sqrt(H), matrices 0.02, norms 0.1', async (t) => {
  const dir = fresh();
  makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: dir });
  const ck = openCheckpoint(dir);
  const std = (name: string): number => {
    const v = readFloat32(ck.tensors.get(name)!);
    let s = 0, s2 = 0;
    for (const x of v) { s += x; s2 += x * x; }
    return Math.sqrt(s2 / v.length - (s / v.length) ** 2);
  };
  t.ok(Math.abs(std('model.embed_tokens.weight') - 1 / 8) < 0.005);
  t.ok(Math.abs(std('model.layers.0.mlp.up_proj.weight') - 0.02) < 0.001);
  t.ok(Math.abs(std('model.norm.weight') - 0.1) < 0.03);
});

t.test('the same seed gives byte-identical files, another seed different weights', async (t) => {
  const a = fresh(), b = fresh(), c = fresh();
  makeRandomCheckpoint({ shape: 'tiny', seed: 42, dtype: 'bf16', out: a });
  makeRandomCheckpoint({ shape: 'tiny', seed: 42, dtype: 'bf16', out: b });
  makeRandomCheckpoint({ shape: 'tiny', seed: 43, dtype: 'bf16', out: c });
  const fa = filesOf(a), fb = filesOf(b), fc = filesOf(c);
  t.same([...fa.keys()], [...fb.keys()]);
  for (const [name, bytes] of fa) t.ok(bytes.equals(fb.get(name)!), `${name} identical`);
  t.notOk(fa.get('model.safetensors')!.equals(fc.get('model.safetensors')!), 'weights differ');
  t.ok(fa.get('config.json')!.equals(fc.get('config.json')!), 'config does not depend on the seed');
});

t.test('--set overrides apply and are parsed as JSON when they parse', async (t) => {
  const dir = fresh();
  const set = parseSetArgs(['num_hidden_layers=2', 'sliding_window=4', 'final_logit_softcapping=null', 'note=a=b']);
  t.same(set, { num_hidden_layers: '2', sliding_window: '4', final_logit_softcapping: 'null', note: 'a=b' });
  const r = makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: dir, set });
  t.equal(r.config.numLayers, 2);
  t.equal(r.config.slidingWindow, 4);
  t.equal(r.config.finalLogitSoftcap, null);
  const ck = openCheckpoint(dir);
  t.equal(ck.config.numLayers, 2);
  t.notOk(ck.tensors.has('model.layers.2.mlp.up_proj.weight'));
  const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  t.equal(raw['note'], 'a=b', 'unknown keys are kept, as strings when not JSON');
});

t.test('a tensor does not depend on the other tensors present', async (t) => {
  const a = fresh(), b = fresh();
  makeRandomCheckpoint({ shape: 'tiny', seed: 5, dtype: 'f32', out: a });
  makeRandomCheckpoint({ shape: 'tiny', seed: 5, dtype: 'f32', out: b, set: { num_hidden_layers: '2' } });
  const name = 'model.layers.1.self_attn.q_proj.weight';
  t.same(readFloat32(openCheckpoint(a).tensors.get(name)!), readFloat32(openCheckpoint(b).tensors.get(name)!));
});

t.test('bad overrides fail before anything is written, naming the key', async (t) => {
  t.throws(() => parseSetArgs(['novalue']), ConfigError);
  t.throws(() => parseSetArgs(['=3']), ConfigError);
  const dir = fresh();
  t.throws(() => makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: dir, set: { num_key_value_heads: '3' } }),
    { name: 'CheckpointError', message: /num_key_value_heads/ });
  t.throws(() => makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: dir, set: { model_type: 'llama' } }),
    { name: 'CheckpointError', message: /model_type is "llama"/ });
  t.throws(() => makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: dir, set: { vocab_size: '100' } }), /vocab_size >= /);
  t.throws(() => makeRandomCheckpoint({ shape: 'tiny', seed: -1, dtype: 'f32', out: dir }), ConfigError);
  t.notOk(existsSync(dir), 'nothing was written');
});

t.test('past the shard limit, weights are split like HF and read back the same', async (t) => {
  const single = fresh(), sharded = fresh();
  makeRandomCheckpoint({ shape: 'tiny', seed: 9, dtype: 'f32', out: single });
  const r = makeRandomCheckpoint({ shape: 'tiny', seed: 9, dtype: 'f32', out: sharded, maxShardBytes: 200_000 });
  const shardFiles = readdirSync(sharded).filter((f) => f.endsWith('.safetensors')).sort();
  t.ok(shardFiles.length > 2, `${shardFiles.length} shards`);
  t.equal(shardFiles[0], `model-00001-of-${String(shardFiles.length).padStart(5, '0')}.safetensors`);
  t.notOk(shardFiles.includes('model.safetensors'));
  const index = JSON.parse(readFileSync(join(sharded, 'model.safetensors.index.json'), 'utf8')) as {
    metadata: { total_size: number }; weight_map: Record<string, string>;
  };
  t.equal(index.metadata.total_size, r.totalBytes);
  t.equal(Object.keys(index.weight_map).length, expectedTensors(r.config).size);
  t.same(new Set(Object.values(index.weight_map)), new Set(shardFiles));
  const a = openCheckpoint(single), b = openCheckpoint(sharded);
  for (const [name, e] of a.tensors) t.same(readFloat32(b.tensors.get(name)!), readFloat32(e), name);

  // Re-making into the same directory without sharding removes the old shards and index.
  makeRandomCheckpoint({ shape: 'tiny', seed: 9, dtype: 'f32', out: sharded });
  t.same(readdirSync(sharded).filter((f) => f.startsWith('model')), ['model.safetensors']);
});

t.test('shard planning: fill in order, an oversized tensor gets its own shard', async (t) => {
  const spec = (name: string, n: number) => ({ name, dtype: 'F32' as const, shape: [n] });
  const plan = planShards([spec('a', 10), spec('b', 10), spec('c', 100), spec('d', 5), spec('e', 5)], 80);
  t.same(plan.map((s) => s.map((x) => x.name)), [['a', 'b'], ['c'], ['d', 'e']]);
  t.same(planShards([spec('a', 1)], 5e9).length, 1);
});

t.test('errors are CheckpointErrors', async (t) => {
  t.throws(() => openCheckpoint(join(root, 'nope')), CheckpointError);
});
