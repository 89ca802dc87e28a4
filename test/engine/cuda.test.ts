// --device cuda end to end, where a CUDA provider is installed: an fp16 gqa export through the
// native runner with its cache in GPU memory stays within the fp16 bound of the float64
// reference on fp16 weights, and a decode batch over slots equals each row alone. On a host
// without the provider (CI, these CPU machines) the session refuses to start with the
// cuda_unavailable message, which is asserted, and the GPU checks are skipped, saying so.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint } from '../../src/engine/export/export.ts';
import { SlotRunner } from '../../src/engine/slot-runner.ts';
import { Stepper } from '../../src/engine/stepper.ts';
import { EngineError } from '../../src/errors.ts';
import { describeDiff, hfInitModel } from '../reference/logprob-diff.ts';
import { fp16ReferenceDiff } from './engine-run.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-cuda-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const { checkpointDir, sequences } = hfInitModel(join(dir, 'hf'), [40, 40]);
const model = join(dir, 'gqa-fp16');
exportCheckpoint({ checkpointDir, outDir: model, attention: 'gqa', dtype: 'fp16' });

let runner: SlotRunner | null = null;
try {
  runner = SlotRunner.load(model, { device: 'cuda', kvCacheTokens: 64, kvCacheBytes: 64 * 2 ** 20, maxNumSeqs: 4 });
} catch (e) {
  t.test('without a CUDA provider the session names what to install', async (t) => {
    t.type(e, EngineError);
    t.match(e, { code: 'cuda_unavailable', message: /ONNXRUNTIME_NODE_INSTALL=cuda12/ });
  });
}

if (runner === null) {
  t.test('CUDA checks', { skip: 'no CUDA execution provider on this host (the checks run where one is installed)' }, async () => {});
} else {
  const r = runner;
  t.teardown(() => r.release());
  const rs = new Stepper(r);

  t.test('fp16 on the GPU, cache resident: within the fp16 bound of the reference', async (t) => {
    const c = await fp16ReferenceDiff(r, checkpointDir, sequences[0]!);
    t.comment(`CUDA fp16, prefill 9 + one token per step: ${describeDiff(c)}`);
    t.ok(c.maxDiff < 2e-2, `max |Δ logprob| ${c.maxDiff.toExponential(2)} < 2e-2`);
  });

  t.test('a decode batch over GPU slots equals each row alone', async (t) => {
    const [a, b] = sequences as [number[], number[]];
    const alone = async (ids: number[], steps: number): Promise<Float32Array[]> => {
      const seq = rs.cache.newSequence();
      rs.cache.reserve(seq, ids.length - steps);
      const rows = [(await rs.step([{ seq, tokenIds: ids.slice(0, ids.length - steps), logits: 'last' }])).logits.slice()];
      for (const id of ids.slice(ids.length - steps)) {
        rs.cache.reserve(seq, seq.numCached + 1);
        rows.push((await rs.step([{ seq, tokenIds: [id], logits: 'last' }])).logits.slice());
      }
      await rs.free(seq);
      return rows;
    };
    const wantA = await alone(a.slice(0, 30), 4);
    const wantB = await alone(b.slice(0, 15), 4);
    const sa = rs.cache.newSequence();
    const sb = rs.cache.newSequence();
    rs.cache.reserve(sa, 26);
    rs.cache.reserve(sb, 11);
    const gotA = [(await rs.step([{ seq: sa, tokenIds: a.slice(0, 26), logits: 'last' }])).logits.slice()];
    const gotB = [(await rs.step([{ seq: sb, tokenIds: b.slice(0, 11), logits: 'last' }])).logits.slice()];
    for (let k = 0; k < 4; k++) {
      rs.cache.reserve(sa, sa.numCached + 1);
      rs.cache.reserve(sb, sb.numCached + 1);
      const o = await rs.step([{ seq: sb, tokenIds: [b[11 + k]!], logits: 'last' }, { seq: sa, tokenIds: [a[26 + k]!], logits: 'last' }]);
      gotB.push(o.logits.slice(0, o.vocabSize));
      gotA.push(o.logits.slice(o.vocabSize, 2 * o.vocabSize));
    }
    let worst = 0;
    for (const [got, want] of [[gotA, wantA], [gotB, wantB]] as const) got.forEach((row, i) => row.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - want[i]![j]!)); }));
    t.comment(`batched vs alone on CUDA: max |Δ logit| ${worst.toExponential(2)}`);
    t.ok(worst < 1e-2, 'within fp16 noise of the solo runs');
  });
}
