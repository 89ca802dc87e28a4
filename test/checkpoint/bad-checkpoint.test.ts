import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { openCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import { expectedTensors } from '../../src/checkpoint/config.ts';
import { SafetensorsWriter, type TensorSpec } from '../../src/checkpoint/safetensors-writer.ts';

const root = mkdtempSync(join(tmpdir(), 'bad-checkpoint-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/** A valid tiny checkpoint whose model.safetensors is then rewritten from `edit(specs)`. */
function tinyWithTensors(edit: (specs: TensorSpec[]) => TensorSpec[]): string {
  const dir = join(root, `ck${n++}`);
  const { config } = makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: dir });
  const specs = edit([...expectedTensors(config)].map(([name, shape]) => ({ name, dtype: 'F32' as const, shape })));
  const w = SafetensorsWriter.create(join(dir, 'model.safetensors'), specs);
  for (const s of specs) w.write(s.name, new Float32Array(s.shape.reduce((a, b) => a * b, 1)));
  w.close();
  return dir;
}

t.test('a missing tensor is named, with its checkpoint and expected shape', async (t) => {
  const missing = 'model.layers.1.mlp.up_proj.weight';
  const dir = tinyWithTensors((specs) => specs.filter((s) => s.name !== missing));
  t.throws(() => openCheckpoint(dir), {
    name: 'CheckpointError',
    message: new RegExp(`^${dir}: tensor ${missing.replaceAll('.', '\\.')} is missing \\(expected shape \\[128, 64\\]\\)`),
  });
});

t.test('a tensor of the wrong shape is named with its file and both shapes', async (t) => {
  const name = 'model.layers.0.self_attn.k_proj.weight';
  const dir = tinyWithTensors((specs) => specs.map((s) => (s.name === name ? { ...s, shape: [16, 64] } : s)));
  t.throws(() => openCheckpoint(dir), {
    name: 'CheckpointError',
    message: `${join(dir, 'model.safetensors')}: tensor ${name} has shape [16, 64], expected [32, 64] from config.json`,
  });
});

t.test('an unsupported dtype (I8) is named with its file and tensor', async (t) => {
  const dir = join(root, `ck${n++}`);
  makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: dir });
  // The writer only writes float types, so this file is assembled by hand.
  const header = Buffer.from(JSON.stringify({ 'model.embed_tokens.weight': { dtype: 'I8', shape: [512, 64], data_offsets: [0, 512 * 64] } }).padEnd(88, ' '));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const file = join(dir, 'model.safetensors');
  writeFileSync(file, Buffer.concat([len, header, Buffer.alloc(512 * 64)]));
  t.throws(() => openCheckpoint(dir), {
    name: 'CheckpointError',
    message: `${file}: tensor model.embed_tokens.weight has dtype "I8"; supported: F32, BF16, F16`,
  });
});

t.test('a config whose model_type is not gemma2 is refused, naming config.json', async (t) => {
  const dir = join(root, `ck${n++}`);
  makeRandomCheckpoint({ shape: 'tiny', seed: 1, dtype: 'f32', out: dir });
  const path = join(dir, 'config.json');
  const config = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  writeFileSync(path, JSON.stringify({ ...config, model_type: 'gemma' }));
  t.throws(() => openCheckpoint(dir), { name: 'CheckpointError', message: new RegExp(`^${path}: model_type is "gemma", expected "gemma2"`) });
});
