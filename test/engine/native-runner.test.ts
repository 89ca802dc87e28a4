// The native runner (native/gs_ort.cc through src/engine/native/ort-native.ts) on the CPU
// provider: host outputs land in the caller's array, a buffer bound as an input and an output
// of the same run is updated in place and keeps its contents between runs, and misuse gives
// clear errors. `npm ci` builds the addon; if it did not build here, that is a failure.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { DType, GraphBuilder } from '../../src/engine/onnx-builder.ts';
import { loadNativeOrt, NativeSession, OnnxType, ortRunMs } from '../../src/engine/native/ort-native.ts';
import { EngineError } from '../../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-native-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

// next_state = state + x, y = next_state * 1 (y reads only the new state, so writing the state
// in place is safe whatever the node order); `n` is symbolic, so one graph serves any length.
const g = new GraphBuilder();
const x = g.input('x', DType.FLOAT, ['n']);
const state = g.input('state', DType.FLOAT, ['n']);
const next = g.op1('Add', '/next', [state, x]);
g.output(g.op1('Mul', '/y', [next, g.constant([1], DType.FLOAT, [])]), 'y', DType.FLOAT, ['n']);
g.output(next, 'next_state', DType.FLOAT, ['n']);
const modelPath = join(dir, 'acc.onnx');
writeFileSync(modelPath, g.encode('acc'));

t.test('the addon built and links the runtime onnxruntime-node ships', async (t) => {
  const loaded = loadNativeOrt();
  t.notOk('error' in loaded, 'error' in loaded ? loaded.error : 'loaded');
  if ('addon' in loaded) t.equal(loaded.addon.version(), ort.env.versions.common.replace(/^(\d+\.\d+\.\d+).*/, '$1'));
});

t.test('a buffer bound as input and output accumulates in place; outputs go to the caller array', async (t) => {
  const s = NativeSession.create(modelPath, { device: 'cpu', intraOpThreads: 1 });
  t.teardown(() => s.release());
  t.same([...s.inputNames].sort(), ['state', 'x']);
  t.same([...s.outputNames].sort(), ['next_state', 'y']);
  const n = 5;
  const buf = s.allocate(3 * n * 4); // three slots of n floats; use the middle one
  const ref = { buffer: buf, byteOffset: n * 4 };
  const xs = Float32Array.from({ length: n }, (_, i) => i + 1);
  const y = new Float32Array(n);
  for (let k = 1; k <= 3; k++) {
    s.run(
      [{ name: 'x', type: OnnxType.FLOAT, dims: [n], data: xs }, { name: 'state', type: OnnxType.FLOAT, dims: [n], data: ref }],
      [{ name: 'y', type: OnnxType.FLOAT, dims: [n], data: y }, { name: 'next_state', type: OnnxType.FLOAT, dims: [n], data: ref }],
    );
    t.same([...y], [...xs].map((v) => k * v), `run ${k}: the state carried over`);
  }
  // The neighbouring slots were not touched: read slot 0 and slot 2 through the graph with x = 0.
  for (const slot of [0, 2]) {
    const out = new Float32Array(n);
    s.run(
      [{ name: 'x', type: OnnxType.FLOAT, dims: [n], data: new Float32Array(n) }, { name: 'state', type: OnnxType.FLOAT, dims: [n], data: { buffer: buf, byteOffset: slot * n * 4 } }],
      [{ name: 'y', type: OnnxType.FLOAT, dims: [n], data: out }, { name: 'next_state', type: OnnxType.FLOAT, dims: [n], data: new Float32Array(n) }],
    );
    t.same([...out], new Array(n).fill(0), `slot ${slot} is still zero`);
  }
  // A host output bound as a view writes only its window of the array.
  const big = new Float32Array(3 * n).fill(-1);
  s.run(
    [{ name: 'x', type: OnnxType.FLOAT, dims: [n], data: xs }, { name: 'state', type: OnnxType.FLOAT, dims: [n], data: new Float32Array(n) }],
    [{ name: 'y', type: OnnxType.FLOAT, dims: [n], data: big.subarray(n, 2 * n) }, { name: 'next_state', type: OnnxType.FLOAT, dims: [n], data: new Float32Array(n) }],
  );
  t.same([...big], [...new Array(n).fill(-1), ...xs, ...new Array(n).fill(-1)]);
});

t.test('prepared bindings: made once, bound run after run beside the per-run ones; refused once their buffer is freed', async (t) => {
  const s = NativeSession.create(modelPath, { device: 'cpu', intraOpThreads: 1 });
  const other = NativeSession.create(modelPath, { device: 'cpu', intraOpThreads: 1 });
  t.teardown(() => { s.release(); other.release(); });
  const n = 4;
  const buf = s.allocate(2 * n * 4);
  const ref = { buffer: buf, byteOffset: n * 4 };
  const prepared = s.prepare([{ name: 'state', type: OnnxType.FLOAT, dims: [n], data: ref }], [{ name: 'next_state', type: OnnxType.FLOAT, dims: [n], data: ref }]);
  const xs = Float32Array.of(1, 2, 3, 4);
  const y = new Float32Array(n);
  const ort0 = ortRunMs();
  for (let k = 1; k <= 3; k++) {
    s.run([{ name: 'x', type: OnnxType.FLOAT, dims: [n], data: xs }], [{ name: 'y', type: OnnxType.FLOAT, dims: [n], data: y }], prepared);
    t.same([...y], [...xs].map((v) => k * v), `run ${k}: the prepared state carried over`);
  }
  t.ok(ortRunMs() > ort0, 'the time inside ONNX Runtime is counted (ortRunMs)');
  // The same buffer bound per run sees what the prepared runs wrote.
  s.run([{ name: 'x', type: OnnxType.FLOAT, dims: [n], data: new Float32Array(n) }, { name: 'state', type: OnnxType.FLOAT, dims: [n], data: ref }],
    [{ name: 'y', type: OnnxType.FLOAT, dims: [n], data: y }, { name: 'next_state', type: OnnxType.FLOAT, dims: [n], data: new Float32Array(n) }]);
  t.same([...y], [3, 6, 9, 12]);
  const bind = (data: Float32Array | { buffer: number; byteOffset: number }) => [{ name: 'state', type: OnnxType.FLOAT, dims: [n], data }];
  t.throws(() => s.prepare(bind(new Float32Array(n)), []), { message: /only the session's own buffers can be prepared/ });
  t.throws(() => s.prepare(bind({ buffer: 7, byteOffset: 0 }), []), { message: /unknown buffer 7/ });
  t.throws(() => other.run([{ name: 'x', type: OnnxType.FLOAT, dims: [n], data: xs }], [{ name: 'y', type: OnnxType.FLOAT, dims: [n], data: y }], prepared), { message: /prepared bindings of another session/ });
  s.free(buf);
  t.throws(() => s.run([{ name: 'x', type: OnnxType.FLOAT, dims: [n], data: xs }], [{ name: 'y', type: OnnxType.FLOAT, dims: [n], data: y }], prepared), { message: /buffer 0 was freed/ });
});

t.test('misuse is a clear error, not a crash', async (t) => {
  const s = NativeSession.create(modelPath, { device: 'cpu' });
  const xs = new Float32Array(4);
  const run = (data: Float32Array | { buffer: number; byteOffset: number }, dims = [4]): unknown => {
    try {
      s.run([{ name: 'x', type: OnnxType.FLOAT, dims, data: xs }, { name: 'state', type: OnnxType.FLOAT, dims, data }], [{ name: 'y', type: OnnxType.FLOAT, dims, data: new Float32Array(4) }, { name: 'next_state', type: OnnxType.FLOAT, dims, data: new Float32Array(4) }]);
      return null;
    } catch (e) {
      return e;
    }
  };
  t.match(run(new Float32Array(2)), { message: /state: 16 bytes needed for its shape, 8 given/ });
  t.match(run({ buffer: 99, byteOffset: 0 }), { message: /state: unknown buffer 99/ });
  const buf = s.allocate(16);
  t.match(run({ buffer: buf, byteOffset: 8 }), { message: /16 bytes needed.*8 given/ });
  t.equal(run({ buffer: buf, byteOffset: 0 }), null, 'a correct binding runs');
  s.release();
  t.match(run(new Float32Array(4)), { message: /released/ });
  t.throws(() => NativeSession.create(join(dir, 'missing.onnx'), { device: 'cpu' }), { code: 'model_load_failed' });
});

t.test('--device cuda without the CUDA provider names what to install', async (t) => {
  let err: unknown = null;
  try {
    NativeSession.create(modelPath, { device: 'cuda' }).release();
  } catch (e) {
    err = e;
  }
  if (err === null) {
    t.pass('the CUDA provider loaded: this host has it');
    return;
  }
  t.type(err, EngineError);
  t.equal((err as EngineError).code, 'cuda_unavailable');
  t.match((err as Error).message, /ONNXRUNTIME_NODE_INSTALL=cuda12/);
});
