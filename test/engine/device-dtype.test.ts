// An fp16 weight export computes what the float64 reference computes on fp16-rounded weights; --device cuda without the CUDA
// provider fails with a message that says what to install, not a native stack.
import t from 'tap';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { ModelRunner } from '../../src/engine/model-runner.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { logSoftmax } from '../../src/engine/logprobs.ts';
import { EngineError } from '../../src/errors.ts';
import { Gemma2Reference } from '../reference/gemma2-reference.ts';

const fixture = join(import.meta.dirname, '..', 'fixtures', 'tiny-gemma2');
const root = mkdtempSync(join(tmpdir(), 'gs-dtype-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

t.test('an fp16 export halves the weight file and matches the reference on fp16-rounded weights', async (t) => {
  const r32 = exportCheckpoint({ checkpointDir: fixture, outDir: join(root, 'fp32') });
  const r16 = exportCheckpoint({ checkpointDir: fixture, outDir: join(root, 'fp16'), dtype: 'fp16' });
  t.ok(r16.dataBytes < 0.6 * r32.dataBytes, `${r16.dataBytes} vs ${r32.dataBytes} bytes`);
  t.equal(statSync(join(root, 'fp16', 'model.onnx.data')).size, r16.dataBytes);
  const runner = await ModelRunner.load(join(root, 'fp16'), { kvCacheTokens: 64 });
  const stepper = new Stepper(runner);
  t.teardown(() => runner.release());
  const ids = [2, 32, 41, 369, 418, 7, 99, 250, 11, 480, 3, 64];
  const seq = stepper.cache.newSequence();
  stepper.cache.reserve(seq, ids.length);
  const out = await stepper.step([{ seq, tokenIds: ids, logits: 'all' }]);
  // Matrices are stored as fp16 (norm scales stay fp32): round the reference's the same way.
  const ref = Gemma2Reference.fromCheckpoint(fixture);
  ref.roundMatricesToF16();
  const want = ref.logprobs(ids);
  let maxDiff = 0;
  for (let i = 0; i < ids.length; i++) {
    logSoftmax(out.logits.subarray(i * 512, (i + 1) * 512)).forEach((v, j) => { maxDiff = Math.max(maxDiff, Math.abs(v - want[i]![j]!)); });
  }
  t.comment(`fp16 weights: max |Δ logprob| = ${maxDiff.toExponential(2)}`);
  t.ok(maxDiff < 5e-3, `max |Δ| ${maxDiff}`);
});

t.test('--device cuda without CUDA binaries is a clear error', async (t) => {
  exportCheckpoint({ checkpointDir: fixture, outDir: join(root, 'cuda') });
  const err = await ModelRunner.load(join(root, 'cuda'), { device: 'cuda', kvCacheTokens: 16 }).then(
    async (r) => { await r.release(); return null; },
    (e: unknown) => e,
  );
  if (err === null) {
    t.pass('the CUDA execution provider loaded: this host has it');
    return;
  }
  t.type(err, EngineError);
  t.equal((err as EngineError).code, 'cuda_unavailable');
  t.match((err as Error).message, /ONNXRUNTIME_NODE_INSTALL=cuda12/);
});
