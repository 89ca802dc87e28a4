// Sessions get an explicit intra-op thread count (session.ts intraOpThreads), never ONNX
// Runtime's 0, with which it counted one core on a 2-vCPU VM and ran every step on one thread.
// Checked on the threads themselves: a session of each binding starts intraOpThreads() - 1 pool
// threads (the thread that runs the graph is the last one).
import t from 'tap';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DType, GraphBuilder } from '../../src/engine/onnx-builder.ts';
import { loadNativeOrt, NativeSession, OnnxType } from '../../src/engine/native/ort-native.ts';
import { createSession, intraOpThreads, Tensor } from '../../src/engine/session.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-threads-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const g = new GraphBuilder();
const x = g.input('x', DType.FLOAT, ['n']);
g.output(g.op1('Add', '/y', [x, x]), 'y', DType.FLOAT, ['n']);
const model = join(dir, 'add.onnx');
writeFileSync(model, g.encode('add'));
const threads = (): number => readdirSync('/proc/self/task').length;

t.test('the count: asked when positive, else one per physical core this process may use', async (t) => {
  t.equal(intraOpThreads(3), 3);
  const n = intraOpThreads();
  t.ok(n >= 1 && n <= availableParallelism(), `${n} of ${availableParallelism()}`);
  t.equal(intraOpThreads(0), n);
});

t.test('each binding starts the pool threads of that count', async (t) => {
  const want = intraOpThreads() - 1;
  t.comment(`${availableParallelism()} CPUs, ${intraOpThreads()} intra-op threads`);
  const loaded = loadNativeOrt();
  t.notOk('error' in loaded, 'the native runner is built');
  let before = threads();
  const native = NativeSession.create(model, { device: 'cpu' });
  t.equal(threads() - before, want, `native: ${want} pool threads`);
  const y = new Float32Array(4);
  native.run([{ name: 'x', type: OnnxType.FLOAT, dims: [4], data: Float32Array.of(1, 2, 3, 4) }], [{ name: 'y', type: OnnxType.FLOAT, dims: [4], data: y }]);
  t.same([...y], [2, 4, 6, 8]);
  native.release();
  await readFile(model); // libuv's own pool (the stock binding creates sessions on it) is up before counting
  before = threads();
  const stock = await createSession(model, { device: 'cpu' });
  t.equal(threads() - before, want, `stock: ${want} pool threads`);
  const out = await stock.run({ x: new Tensor('float32', Float32Array.of(1, 2, 3, 4), [4]) });
  t.same([...(out['y']!.data as Float32Array)], [2, 4, 6, 8]);
  await stock.release();
});
