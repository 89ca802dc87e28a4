import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { float32ToBfloat16, SafetensorsWriter } from '../../src/checkpoint/safetensors-writer.ts';
import { readFloat32, readSafetensorsHeader } from '../../src/checkpoint/safetensors.ts';

const dir = mkdtempSync(join(tmpdir(), 'st-writer-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('the header is 8-byte aligned and the data reads back through the reader', async (t) => {
  const file = join(dir, 'a.safetensors');
  const w = SafetensorsWriter.create(file, [
    { name: 'a', dtype: 'F32', shape: [2, 3] },
    { name: 'b', dtype: 'BF16', shape: [5] },
  ]);
  w.write('a', Float32Array.from([1, 2, 3]));
  w.write('a', Float32Array.from([4, 5, 6]));
  w.write('b', Float32Array.from([0.5, -2, 1.5, 256, -0.125]));
  w.close();
  const bytes = readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  t.equal(headerLen % 8, 0);
  t.equal(bytes.length, 8 + headerLen + 6 * 4 + 5 * 2);
  const [a, b] = readSafetensorsHeader(file);
  t.same(a?.shape, [2, 3]);
  t.same([...readFloat32(a!)], [1, 2, 3, 4, 5, 6]);
  t.equal(b?.dtype, 'BF16');
  t.same([...readFloat32(b!)], [0.5, -2, 1.5, 256, -0.125]);
});

t.test('BF16 rounds to nearest, ties to even, and keeps NaN a NaN', async (t) => {
  const f = new Float32Array(5);
  const u = new Uint32Array(f.buffer);
  u[0] = 0x3f808000; // exactly halfway, even below: stays 0x3f80
  u[1] = 0x3f818000; // exactly halfway, odd below: rounds up to 0x3f82
  u[2] = 0x3f808001; // just above halfway: rounds up
  u[3] = 0x7f7fffff; // max float rounds to +Inf, as torch does
  u[4] = 0x7fc00001; // NaN
  const out = new Uint16Array(5);
  float32ToBfloat16(f, out);
  t.same([...out].slice(0, 4), [0x3f80, 0x3f82, 0x3f81, 0x7f80]);
  t.ok((out[4]! & 0x7f80) === 0x7f80 && (out[4]! & 0x7f) !== 0, 'NaN stays NaN');
});

t.test('misuse is caught where it happens', async (t) => {
  const w = SafetensorsWriter.create(join(dir, 'b.safetensors'), [
    { name: 'x', dtype: 'F32', shape: [4] },
    { name: 'y', dtype: 'F32', shape: [2] },
  ]);
  t.throws(() => w.write('y', new Float32Array(2)), /out of order; expected x/);
  t.throws(() => w.write('x', new Float32Array(5)), /given 5 elements, its shape holds 4/);
  w.write('x', new Float32Array(4));
  t.equal(w.currentTensor, 'y');
  t.throws(() => w.close(), /tensor y incomplete/);
});
