// The 'gqa' attention layout (export --attention gqa): GroupQueryAttention over a KV buffer per
// sequence slot. Run here through the stock onnxruntime-node binding, which allocates every
// output, so GQA copies past into present (no shared buffer): each test feeds present back as
// the next run's past, which is what an in-place runner's buffer holds after the run.
// - fp32 compute reproduces the golden log-probabilities of an independent float64 Gemma 2:
//   a prompt in one run (past length 0), a prefill then token-by-token decode, a prefill in
//   two chunks, and the greedy continuation;
// - a decode batch of rows at different cached lengths gives each row's own logits;
// - fp16 compute (matrices, Q/K/V, attention and cache in fp16; norms, residual stream and
//   final soft-cap in fp32) stays within a measured bound of the float64 reference on
//   fp16-rounded weights, and its graph is what the manifest says.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint, manifestAttention, manifestKvDtype, readManifest } from '../../src/engine/export/export.ts';
import * as io from '../../src/engine/graph-io.ts';
import { argmax, logSoftmax } from '../../src/engine/logprobs.ts';
import { createSession, Tensor, type OrtSession } from '../../src/engine/session.ts';
import type { Gemma2Config } from '../../src/checkpoint/config.ts';
import { ConfigError } from '../../src/errors.ts';

interface Golden {
  sequences: { input_ids: number[]; logprobs: number[][] }[];
  greedy: { prompt_ids: number[]; new_tokens: number; output_ids: number[] };
}

const fixturesDir = join(import.meta.dirname, '..', 'fixtures');
const root = mkdtempSync(join(tmpdir(), 'gs-gqa-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

/** Positions each slot's buffer holds (cache_len). */
const CACHE_LEN = 64;
/** What the paged golden test allows an fp32 runtime (fixtures README). */
const GOLDEN_BOUND = 5e-3;

type CacheArray = Float32Array | Uint16Array;

/** One sequence slot: `cached` positions filled; per layer K and V [numKvHeads, CACHE_LEN, headDim]. */
interface Slot {
  cached: number;
  readonly keys: CacheArray[];
  readonly values: CacheArray[];
}

/** An export with the gqa layout in a plain ORT session, its KV kept per slot on the host. */
class GqaModel {
  private constructor(readonly session: OrtSession, readonly config: Gemma2Config, readonly half: boolean) {}

  static async load(dir: string): Promise<GqaModel> {
    const { manifest, config } = readManifest(dir);
    const session = await createSession(join(dir, 'model.onnx'), { device: 'cpu' });
    return new GqaModel(session, config, manifestKvDtype(manifest) === 'fp16');
  }

  private get slotElements(): number {
    return this.config.numKvHeads * CACHE_LEN * this.config.headDim;
  }

  newSlot(): Slot {
    const make = (): CacheArray => (this.half ? new Uint16Array(this.slotElements) : new Float32Array(this.slotElements));
    return { cached: 0, keys: Array.from({ length: this.config.numLayers }, make), values: Array.from({ length: this.config.numLayers }, make) };
  }

  copySlot(s: Slot): Slot {
    return { cached: s.cached, keys: s.keys.map((a) => a.slice()), values: s.values.map((a) => a.slice()) };
  }

  /**
   * One run: row b appends `tokens[b]` (the same count S in every row) to `slots[b]`; the logits
   * of every new token, row by row ([B*S] rows of V).
   */
  async step(slots: readonly Slot[], tokens: readonly (readonly number[])[]): Promise<Float32Array[]> {
    const { numKvHeads: nkv, headDim: D, numLayers, vocabSize: V } = this.config;
    const B = slots.length;
    const S = tokens[0]!.length;
    const n = this.slotElements;
    const feeds: Record<string, InstanceType<typeof Tensor>> = {
      [io.INPUT_IDS]: new Tensor('int64', BigInt64Array.from(tokens.flat(), (id) => BigInt(id)), [B, S]),
      [io.POSITIONS]: new Tensor('int64', BigInt64Array.from({ length: B * S }, (_, i) => BigInt(slots[Math.floor(i / S)]!.cached + (i % S))), [B, S]),
      [io.LOGIT_ROWS]: new Tensor('int64', BigInt64Array.from({ length: B * S }, (_, i) => BigInt(i)), [B * S]),
      [io.SEQLENS_K]: new Tensor('int32', Int32Array.from(slots, (s) => s.cached + S - 1), [B]),
      [io.TOTAL_SEQUENCE_LENGTH]: new Tensor('int32', Int32Array.of(Math.max(...slots.map((s) => s.cached + S))), [1]),
    };
    const batched = (part: (s: Slot) => CacheArray): CacheArray => {
      const out = this.half ? new Uint16Array(B * n) : new Float32Array(B * n);
      slots.forEach((s, b) => out.set(part(s), b * n));
      return out;
    };
    const type = this.half ? 'float16' : 'float32';
    for (let l = 0; l < numLayers; l++) {
      feeds[io.pastKey(l)] = new Tensor(type, batched((s) => s.keys[l]!), [B, nkv, CACHE_LEN, D]);
      feeds[io.pastValue(l)] = new Tensor(type, batched((s) => s.values[l]!), [B, nkv, CACHE_LEN, D]);
    }
    const out = await this.session.run(feeds);
    for (let l = 0; l < numLayers; l++) {
      for (const [name, part] of [[io.presentKey(l), 'keys'], [io.presentValue(l), 'values']] as const) {
        const present = out[name]!;
        if (present.dims.join() !== [B, nkv, CACHE_LEN, D].join()) throw new Error(`${name} has dims [${present.dims.join(', ')}]`);
        const data = present.data as CacheArray;
        slots.forEach((s, b) => s[part][l]!.set(data.subarray(b * n, (b + 1) * n)));
      }
    }
    for (const s of slots) s.cached += S;
    const logits = out[io.LOGITS]!.data as Float32Array;
    return Array.from({ length: B * S }, (_, i) => logits.slice(i * V, (i + 1) * V));
  }

  /** Log-probabilities at every position of `ids`, run in the given chunk sizes (the rest one token per run). */
  async logprobs(ids: readonly number[], chunks: readonly number[]): Promise<Float64Array[]> {
    const slot = this.newSlot();
    const out: Float64Array[] = [];
    for (let at = 0, c = 0; at < ids.length; c++) {
      const size = Math.min(chunks[c] ?? 1, ids.length - at);
      for (const row of await this.step([slot], [ids.slice(at, at + size)])) out.push(logSoftmax(row));
      at += size;
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

function maxDiff(got: readonly Float64Array[], want: readonly ArrayLike<number>[]): number {
  let m = 0;
  got.forEach((lp, i) => lp.forEach((v, j) => { m = Math.max(m, Math.abs(v - want[i]![j]!)); }));
  return m;
}

function gqaExport(checkpointDir: string, outDir: string, dtype: 'fp32' | 'fp16' = 'fp32'): string {
  exportCheckpoint({ checkpointDir, outDir, dtype, attention: 'gqa' });
  return outDir;
}

for (const name of ['tiny-gemma2', 'tiny-gemma2-bf16-mqa']) {
  t.test(`${name}, fp32 compute`, async (t) => {
    const ckpt = join(fixturesDir, name);
    const golden = JSON.parse(readFileSync(join(ckpt, 'golden.json'), 'utf8')) as Golden;
    const model = await GqaModel.load(gqaExport(ckpt, join(root, name, 'fp32')));
    t.teardown(() => model.release());
    const long = golden.sequences[1]!; // 40 tokens, far past the sliding window (8 / 5)

    await t.test('a whole prompt in one run (past length 0): every position within 5e-3 of golden', async (t) => {
      for (const s of golden.sequences) {
        const d = maxDiff(await model.logprobs(s.input_ids, [s.input_ids.length]), s.logprobs);
        t.comment(`${s.input_ids.length} tokens in one run: max |Δ logprob| = ${d.toExponential(2)}`);
        t.ok(d < GOLDEN_BOUND, `max |Δ| ${d} < ${GOLDEN_BOUND}`);
      }
    });

    await t.test('a 9-token prefill then one token per run, present fed back as past', async (t) => {
      const d = maxDiff(await model.logprobs(long.input_ids, [9]), long.logprobs);
      t.comment(`prefill 9 + 31 decode runs: max |Δ logprob| = ${d.toExponential(2)}`);
      t.ok(d < GOLDEN_BOUND, `max |Δ| ${d} < ${GOLDEN_BOUND}`);
    });

    await t.test('a prefill in two chunks (17 + 23: the second after a past longer than the window)', async (t) => {
      const d = maxDiff(await model.logprobs(long.input_ids, [17, 23]), long.logprobs);
      t.comment(`chunks 17 + 23: max |Δ logprob| = ${d.toExponential(2)}`);
      t.ok(d < GOLDEN_BOUND, `max |Δ| ${d} < ${GOLDEN_BOUND}`);
    });

    await t.test('prefill then greedy decoding gives the golden ids', async (t) => {
      const { prompt_ids: prompt, new_tokens: n, output_ids: expected } = golden.greedy;
      const slot = model.newSlot();
      let row = (await model.step([slot], [prompt])).at(-1)!;
      const ids: number[] = [];
      for (let i = 0; i < n; i++) {
        ids.push(argmax(row));
        if (i < n - 1) [row] = (await model.step([slot], [[ids.at(-1)!]])) as [Float32Array];
      }
      t.same(ids, expected);
    });

    await t.test('a decode batch of rows at different cached lengths gives each row its own logits', async (t) => {
      const ids = long.input_ids;
      const a = model.newSlot();
      const b = model.newSlot();
      await model.step([a], [ids.slice(0, 20)]);
      await model.step([b], [ids.slice(0, 7)]);
      let worst = 0, worstGolden = 0;
      for (let i = 0; i < 3; i++) {
        // Positions past a row's cached length are never read: fill them with garbage first.
        for (const s of [a, b]) for (const arr of [...s.keys, ...s.values]) fillPastEnd(arr, s.cached, model);
        const aloneA = await model.step([model.copySlot(a)], [[ids[20 + i]!]]);
        const aloneB = await model.step([model.copySlot(b)], [[ids[7 + i]!]]);
        const [batchA, batchB] = (await model.step([a, b], [[ids[20 + i]!], [ids[7 + i]!]])) as [Float32Array, Float32Array];
        worst = Math.max(worst, maxDiff([logSoftmax(batchA), logSoftmax(batchB)], [logSoftmax(aloneA[0]!), logSoftmax(aloneB[0]!)]));
        worstGolden = Math.max(worstGolden, maxDiff([logSoftmax(batchA), logSoftmax(batchB)], [long.logprobs[20 + i]!, long.logprobs[7 + i]!]));
      }
      t.comment(`B=2 at cached lengths 20 and 7 vs each row alone: max |Δ logprob| = ${worst.toExponential(2)}; vs golden ${worstGolden.toExponential(2)}`);
      t.ok(worst < 1e-5, `batched = alone: max |Δ| ${worst} < 1e-5`);
      t.ok(worstGolden < GOLDEN_BOUND, `and golden: max |Δ| ${worstGolden} < ${GOLDEN_BOUND}`);
    });
  });
}

/** Overwrites positions >= `cached` of a slot's [nkv, CACHE_LEN, D] buffer with large values. */
function fillPastEnd(arr: CacheArray, cached: number, model: GqaModel): void {
  const { numKvHeads: nkv, headDim: D } = model.config;
  const garbage = arr instanceof Float32Array ? 1e4 : 0x7000; // 0x7000 = 8192 in fp16
  for (let h = 0; h < nkv; h++) arr.fill(garbage, (h * CACHE_LEN + cached) * D, (h + 1) * CACHE_LEN * D);
}

t.test('the manifest records the layout; a --kv-dtype other than the compute dtype is refused', async (t) => {
  const ckpt = join(fixturesDir, 'tiny-gemma2');
  const dir = gqaExport(ckpt, join(root, 'manifest-fp32'));
  const { manifest } = readManifest(dir);
  t.equal(manifest.attention, 'gqa');
  t.equal(manifestAttention(manifest), 'gqa');
  t.equal(manifestKvDtype(manifest), 'fp32', 'fp32 compute: an fp32 cache');
  t.equal(manifestAttention({ ...manifest, attention: undefined }), 'paged', 'a manifest without the field is paged');
  exportCheckpoint({ checkpointDir: ckpt, outDir: join(root, 'manifest-paged') });
  t.equal(readManifest(join(root, 'manifest-paged')).manifest.attention, 'paged');
  t.throws(() => exportCheckpoint({ checkpointDir: ckpt, outDir: join(root, 'refused'), attention: 'gqa', kvDtype: 'fp16' }),
    { name: 'ConfigError', message: /compute dtype, fp32.*--kv-dtype fp16 cannot apply/ });
  t.throws(() => exportCheckpoint({ checkpointDir: ckpt, outDir: join(root, 'refused'), attention: 'gqa', dtype: 'fp16', kvDtype: 'fp32' }), ConfigError);
  exportCheckpoint({ checkpointDir: ckpt, outDir: join(root, 'same-kv'), attention: 'gqa', kvDtype: 'fp32' });
  t.pass('a --kv-dtype equal to the compute dtype is accepted');
});
