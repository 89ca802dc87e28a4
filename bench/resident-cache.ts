/**
 * Decode step time of a 'gqa' export with the KV cache fed through the stock binding (past as
 * inputs, present fetched back: copied every step, as a CUDA session through onnxruntime-node
 * would have to) against the native runner's resident cache (SlotRunner: bound in place, only
 * ids, positions, lengths and last-token logits cross). Cache contents do not change the work,
 * so the rows start at `--context` cached positions of zeros instead of a real prefill.
 *
 *   npx tsx bench/resident-cache.ts EXPORT_DIR [--device cpu|cuda] [--batch 1,8] [--context 1024]
 *       [--cache-len 2048] [--steps 8] [--threads N]
 *
 * Prints, per batch size and mode, the median step time and decode tokens/s (batch / step).
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { manifestAttention, manifestKvDtype, readManifest, MODEL_FILE } from '../src/engine/manifest.ts';
import * as io from '../src/engine/graph-io.ts';
import { createSession, Tensor, type Device, type OrtTensor } from '../src/engine/session.ts';
import { KvCache } from '../src/engine/kv-cache.ts';
import { SlotRunner } from '../src/engine/slot-runner.ts';
import { Stepper } from '../src/engine/stepper.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    device: { type: 'string', default: 'cpu' },
    batch: { type: 'string', default: '1,8' },
    context: { type: 'string', default: '1024' },
    'cache-len': { type: 'string', default: '2048' },
    steps: { type: 'string', default: '8' },
    threads: { type: 'string', default: '0' },
  },
});
const dir = positionals[0];
if (dir === undefined) throw new Error('usage: bench/resident-cache.ts EXPORT_DIR [--device cpu|cuda] [--batch 1,8] [--context N] [--cache-len L] [--steps N]');
const device = values.device as Device;
const batches = values.batch.split(',').map(Number);
const context = Number(values.context);
const cacheLen = Number(values['cache-len']);
const steps = Number(values.steps);
const threads = Number(values.threads);
const { config, manifest } = readManifest(dir);
if (manifestAttention(manifest) !== 'gqa') throw new Error(`${dir} is not a gqa export`);
const half = manifestKvDtype(manifest) === 'fp16';
const { numKvHeads: nkv, headDim: D, numLayers, vocabSize: V } = config;
if (context + steps > cacheLen) throw new Error('--context + --steps must fit --cache-len');

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const tokenAt = (i: number): number => 3 + ((i * 7919) % (V - 3));

/** The stock binding: each layer's past is an input array, present comes back as a new array (copied out). */
async function copied(B: number): Promise<number[]> {
  const session = await createSession(join(dir!, MODEL_FILE), { device, intraOpThreads: threads });
  const n = B * nkv * cacheLen * D;
  const make = (): Float32Array | Uint16Array => (half ? new Uint16Array(n) : new Float32Array(n));
  let keys = Array.from({ length: numLayers }, make);
  let vals = Array.from({ length: numLayers }, make);
  const times: number[] = [];
  for (let s = 0; s < steps + 1; s++) {
    const c = context + s;
    const feeds: Record<string, OrtTensor> = {
      [io.INPUT_IDS]: new Tensor('int64', BigInt64Array.from({ length: B }, (_, b) => BigInt(tokenAt(s * B + b))), [B, 1]),
      [io.POSITIONS]: new Tensor('int64', new BigInt64Array(B).fill(BigInt(c)), [B, 1]),
      [io.LOGIT_ROWS]: new Tensor('int64', BigInt64Array.from({ length: B }, (_, b) => BigInt(b)), [B]),
      [io.SEQLENS_K]: new Tensor('int32', new Int32Array(B).fill(c), [B]),
      [io.TOTAL_SEQUENCE_LENGTH]: new Tensor('int32', Int32Array.of(c + 1), [1]),
    };
    const type = half ? 'float16' : 'float32';
    for (let l = 0; l < numLayers; l++) {
      feeds[io.pastKey(l)] = new Tensor(type, keys[l]!, [B, nkv, cacheLen, D]);
      feeds[io.pastValue(l)] = new Tensor(type, vals[l]!, [B, nkv, cacheLen, D]);
    }
    const t0 = performance.now();
    const out = await session.run(feeds);
    keys = keys.map((_, l) => out[io.presentKey(l)]!.data as Float32Array | Uint16Array);
    vals = vals.map((_, l) => out[io.presentValue(l)]!.data as Float32Array | Uint16Array);
    if (s > 0) times.push(performance.now() - t0); // the first run warms up
  }
  await session.release();
  return times;
}

/** The native runner: slots resident in the session's memory, updated in place. */
async function resident(B: number): Promise<number[]> {
  const runner = SlotRunner.load(dir!, { device, kvCacheTokens: cacheLen, kvCacheBytes: B * cacheLen * KvCache.bytesPerToken(config, manifestKvDtype(manifest)), intraOpThreads: threads, maxNumSeqs: B });
  if (runner.maxRunning < B || runner.slotLength < cacheLen) throw new Error(`slots: ${runner.maxRunning} x ${runner.slotLength}`);
  const stepper = new Stepper(runner);
  const seqs = Array.from({ length: B }, () => {
    const seq = stepper.cache.newSequence();
    stepper.cache.reserve(seq, context + steps + 1);
    seq.numCached = context; // zeros stand for a prefilled context
    return seq;
  });
  const times: number[] = [];
  for (let s = 0; s < steps + 1; s++) {
    const t0 = performance.now();
    await stepper.step(seqs.map((seq, b) => ({ seq, tokenIds: [tokenAt(s * B + b)], logits: 'last' as const })));
    if (s > 0) times.push(performance.now() - t0);
  }
  await runner.release();
  return times;
}

console.log(`${dir}: ${numLayers} layers, ${half ? 'fp16' : 'fp32'} cache, device ${device}, context ${context}, cache_len ${cacheLen}, ${steps} timed steps`);
console.log('| batch | mode | step ms (median) | decode tok/s |');
console.log('|---|---|---|---|');
for (const B of batches) {
  for (const [mode, fn] of [['stock binding, cache copied', copied], ['native runner, cache resident', resident]] as const) {
    const ms = median(await fn(B));
    console.log(`| ${B} | ${mode} | ${ms.toFixed(1)} | ${(1000 * B / ms).toFixed(2)} |`);
  }
}
