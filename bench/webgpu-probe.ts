/**
 * Issue 8 probe: can onnxruntime-node's WebGPU execution provider (Dawn, statically linked into
 * the linux-x64 binary) keep a 'gqa' export's KV cache on the device between runs, from Node?
 *
 *   npx tsx bench/webgpu-probe.ts EXPORT_DIR [--runs 20] [--cache-len 64] [--prompt 12]
 *
 * EXPORT_DIR is an export with --attention gqa, e.g.
 *   node bin/gemma-serve.js export --checkpoint test/fixtures/tiny-gemma2 --out /tmp/wg/tiny-gqa --attention gqa
 * With no GPU, Dawn needs a Vulkan driver; Mesa's lavapipe (a CPU rasterizer) works from Mesa 23+
 * (Debian 12: mesa-vulkan-drivers from bookworm-backports; 22.3 lacks the descriptor-array
 * dynamic indexing Dawn requires). Where no WebGPU adapter exists the probe prints the error and
 * exits 0.
 *
 * It measures, on the same token sequence (a P-token prefill at c = 0, then decode steps whose
 * token is the CPU run's argmax):
 *   cpu          CPU EP; present (host) fed back as the next past: the baseline.
 *   wg-host      WebGPU EP, every output to the host: the KV cache crosses host<->device each run.
 *   wg-gqa-cpu   as wg-host with the GroupQueryAttention nodes forced onto the CPU EP (diagnostic).
 *   wg-gpubuf    WebGPU EP, preferredOutputLocation 'gpu-buffer' for present.*: the returned
 *                device tensors are fed back as the next past (no host copy; each run allocates
 *                new present buffers, GQA copies past into them on the device).
 *   wg-inplace   as wg-gpubuf, but present.* are also passed as fetches bound to the past
 *                tensors (one buffer for past and present: GQA's past_present_share_buffer).
 * For each: max |logit - cpu logit| over all steps, and the median decode-step time over --runs
 * steps (lavapipe runs shaders on the CPU: its absolute times say nothing about a real GPU).
 * It also reports which provider ran each op type (from a profile), whether a 'gpu-buffer' tensor
 * can be read from JS, and, by downloading the cache through an Identity session, whether the
 * in-place run left the cache rows past the new token untouched (sentinel values) or rewrote them.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { f16ToF32 } from '../src/f16.ts';
import { DType, GraphBuilder } from '../src/engine/onnx-builder.ts';
import { MODEL_FILE, manifestAttention, manifestKvDtype, readManifest } from '../src/engine/manifest.ts';
import * as io from '../src/engine/graph-io.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { runs: { type: 'string', default: '20' }, 'cache-len': { type: 'string', default: '64' }, prompt: { type: 'string', default: '12' } },
});
const dir = positionals[0];
if (dir === undefined) {
  console.error('usage: npx tsx bench/webgpu-probe.ts EXPORT_DIR [--runs 20] [--cache-len 64] [--prompt 12]');
  process.exit(2);
}
const RUNS = Number(values.runs);
const L = Number(values['cache-len']);
const P = Number(values.prompt);
const WARMUP = 3;
if (P + WARMUP + RUNS + 1 > L) throw new Error(`--cache-len ${L} is too short for ${P} + ${WARMUP + RUNS} tokens`);

const { manifest, config } = readManifest(dir);
if (manifestAttention(manifest) !== 'gqa') throw new Error(`${dir}: attention is ${manifestAttention(manifest)}; this probe needs an --attention gqa export`);
const kvDtype = manifestKvDtype(manifest);
const kvType: 'float32' | 'float16' = kvDtype === 'fp16' ? 'float16' : 'float32';
const modelPath = join(dir, MODEL_FILE);
const { numLayers, numKvHeads, headDim, vocabSize } = config;
const kvDims = [1, numKvHeads, L, headDim];
const kvElems = numKvHeads * L * headDim;
const presentNames = Array.from({ length: numLayers }, (_, l) => [io.presentKey(l), io.presentValue(l)]).flat();
const pastOf = (present: string): string => present.replace(/^present\./, 'past.');

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function f32ToF16(f: number): number {
  // exact for the sentinel values used here (small dyadic numbers)
  const buf = new DataView(new ArrayBuffer(4));
  buf.setFloat32(0, f);
  const x = buf.getUint32(0);
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  return sign | (exp << 10) | ((x >>> 13) & 0x3ff);
}
const toF32 = (t: ort.Tensor): Float32Array => (t.type === 'float16' ? Float32Array.from(t.data as Uint16Array, f16ToF32) : (t.data as Float32Array));

function kvTensor(fill: number): ort.Tensor {
  return kvType === 'float16' ? new ort.Tensor('float16', new Uint16Array(kvElems).fill(f32ToF16(fill)), kvDims) : new ort.Tensor('float32', new Float32Array(kvElems).fill(fill), kvDims);
}

/** Inputs for a run of `ids` at cached length c (B = 1), logits for the last row. */
function stepFeeds(ids: number[], c: number): Record<string, ort.Tensor> {
  const S = ids.length;
  return {
    [io.INPUT_IDS]: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, S]),
    [io.POSITIONS]: new ort.Tensor('int64', BigInt64Array.from(ids, (_, s) => BigInt(c + s)), [1, S]),
    [io.LOGIT_ROWS]: new ort.Tensor('int64', BigInt64Array.of(BigInt(S - 1)), [1]),
    [io.SEQLENS_K]: new ort.Tensor('int32', Int32Array.of(c + S - 1), [1]),
    [io.TOTAL_SEQUENCE_LENGTH]: new ort.Tensor('int32', Int32Array.of(c + S), [1]),
  };
}

const prompt = Array.from({ length: P }, (_, i) => 3 + ((i * 37 + 11) % (vocabSize - 3)));
const argmax = (xs: Float32Array): number => xs.reduce((best, v, i) => (v > xs[best]! ? i : best), 0);

interface Variant {
  readonly name: string;
  /** logits of the prefill and of every decode step */
  readonly logits: Float32Array[];
  readonly stepMs: number[];
  readonly note: string[];
  error?: string;
}

/**
 * Prefill + decode through `session`. `mode`: how present comes back and goes in as past.
 * `tokens` (decode inputs) come from the cpu run; undefined there, filled by argmax.
 */
async function drive(name: string, session: ort.InferenceSession, mode: 'host' | 'gpubuf' | 'inplace', tokens: number[], initialPast?: () => Promise<Record<string, ort.Tensor>>): Promise<Variant> {
  const v: Variant = { name, logits: [], stepMs: [], note: [] };
  console.error(`  running ${name} ...`);
  let past: Record<string, ort.Tensor> = {};
  try {
    if (initialPast) past = await initialPast();
    else for (const p of presentNames) past[pastOf(p)] = kvTensor(0);
    const total = WARMUP + RUNS;
    for (let step = 0; step <= total; step++) {
      const ids = step === 0 ? prompt : [tokens[step - 1]!];
      const c = step === 0 ? 0 : P + step - 1;
      const feeds = { ...stepFeeds(ids, c), ...past };
      let fetches: Record<string, ort.Tensor | null> | undefined;
      if (mode === 'inplace') {
        fetches = { [io.LOGITS]: null };
        for (const p of presentNames) fetches[p] = past[pastOf(p)]!;
      }
      if (process.env.PROBE_TRACE) console.error(`    step ${step}`);
      const t0 = performance.now();
      const out = fetches ? await session.run(feeds, fetches) : await session.run(feeds);
      const ms = performance.now() - t0;
      const logits = out[io.LOGITS]!;
      v.logits.push(Float32Array.from(logits.data as Float32Array));
      if (step > WARMUP) v.stepMs.push(ms);
      if (tokens.length < total && step < total) tokens.push(argmax(v.logits[step]!));
      if (step === 0) {
        const loc = out[presentNames[0]!]!.location;
        v.note.push(`present location: ${loc}`);
      }
      if (mode === 'inplace') {
        // out's present tensors are new wrappers over the fetch buffers; the bound past stays ours
        for (const p of presentNames) out[p]!.dispose();
      } else {
        const next: Record<string, ort.Tensor> = {};
        for (const p of presentNames) next[pastOf(p)] = out[p]!;
        if (mode === 'gpubuf') for (const t of Object.values(past)) t.dispose();
        past = next;
      }
    }
  } catch (e) {
    v.error = errText(e);
  }
  return v;
}

function maxAbsDiff(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) for (let j = 0; j < a[i]!.length; j++) m = Math.max(m, Math.abs(a[i]![j]! - b[i]![j]!));
  return m;
}

/** Which execution provider ran each op type, from a one-run profile. */
async function providersByOp(opts: ort.InferenceSession.SessionOptions, tmp: string): Promise<Record<string, string[]>> {
  const prefix = join(tmp, 'prof');
  const s = await ort.InferenceSession.create(modelPath, { ...opts, enableProfiling: true, profileFilePrefix: prefix });
  const past: Record<string, ort.Tensor> = {};
  for (const p of presentNames) past[pastOf(p)] = kvTensor(0);
  await s.run({ ...stepFeeds(prompt, 0), ...past });
  s.endProfiling();
  await s.release();
  const file = readdirSync(tmp).find((f) => f.startsWith('prof') && f.endsWith('.json'));
  if (!file) return {};
  const events = JSON.parse(readFileSync(join(tmp, file), 'utf8')) as { cat?: string; args?: { op_name?: string; provider?: string } }[];
  const byOp: Record<string, Set<string>> = {};
  for (const e of events) {
    if (e.cat !== 'Node' || !e.args?.op_name || !e.args.provider) continue;
    (byOp[e.args.op_name] ??= new Set()).add(e.args.provider.replace('ExecutionProvider', ''));
  }
  return Object.fromEntries(Object.entries(byOp).map(([k, s]) => [k, [...s].sort()]));
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'webgpu-probe-'));
  try {
    console.log(`webgpu-probe: ${dir} (kv ${kvDtype}, ${numLayers} layers, ${numKvHeads} kv heads x ${headDim}, vocab ${vocabSize}); cache_len ${L}, prompt ${P}, ${RUNS} timed decode steps after ${WARMUP} warm-up; onnxruntime-node ${ort.env.versions.node ?? ort.env.versions.common}`);

    const wgOpts: ort.InferenceSession.SessionOptions = { executionProviders: ['webgpu'] };
    let probe: ort.InferenceSession;
    try {
      probe = await ort.InferenceSession.create(modelPath, wgOpts);
    } catch (e) {
      console.log(`\nWebGPU unavailable: InferenceSession.create(model, { executionProviders: ['webgpu'] }) failed:\n  ${errText(e).split('\n').join('\n  ')}`);
      console.log('(nothing to compare; the CPU provider is unaffected)');
      return;
    }
    await probe.release();
    console.log('\nWebGPU session created.');

    const placement = await providersByOp(wgOpts, tmp);
    console.log('\nop type -> provider(s) in a WebGPU session (prefill profile):');
    for (const [op, ps] of Object.entries(placement).sort()) console.log(`  ${op.padEnd(24)} ${ps.join(', ')}`);
    const gqaOn = placement.GroupQueryAttention ?? [];
    console.log(`GroupQueryAttention runs on: ${gqaOn.length ? gqaOn.join(', ') : '(not seen in profile)'}`);

    const tokens: number[] = [];
    const cpu = await drive('cpu', await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'] }), 'host', tokens);
    if (cpu.error) throw new Error(`cpu run failed: ${cpu.error}`);

    const wgHost = await drive('wg-host', await ort.InferenceSession.create(modelPath, wgOpts), 'host', tokens);

    // Diagnostic: the same with every GroupQueryAttention node forced onto the CPU EP (node names
    // as src/engine/export/gqa-attention.ts gives them), to tell the GQA kernel's error from the rest.
    const gqaNodes = Array.from({ length: numLayers }, (_, l) => `/model/layers.${l}/attn/GroupQueryAttention`);
    const wgGqaCpu = await drive('wg-gqa-cpu', await ort.InferenceSession.create(modelPath, { executionProviders: [{ name: 'webgpu', forceCpuNodeNames: gqaNodes }] }), 'host', tokens);

    const gpuOutOpts: ort.InferenceSession.SessionOptions = {
      ...wgOpts,
      preferredOutputLocation: Object.fromEntries([[io.LOGITS, 'cpu'], ...presentNames.map((p) => [p, 'gpu-buffer'])]) as Record<string, ort.Tensor.DataLocation>,
    };
    const gpuSession = await ort.InferenceSession.create(modelPath, gpuOutOpts);
    const wgGpu = await drive('wg-gpubuf', gpuSession, 'gpubuf', tokens);

    // An Identity graph to move KV tensors between host and device (upload: cpu in, gpu-buffer
    // out; download: gpu-buffer in, cpu out).
    const g = new GraphBuilder();
    const x = g.input('x', kvDtype === 'fp16' ? DType.FLOAT16 : DType.FLOAT, ['a', 'b', 'c', 'd']);
    g.output(x, 'y', kvDtype === 'fp16' ? DType.FLOAT16 : DType.FLOAT, ['a', 'b', 'c', 'd']);
    const idPath = join(tmp, 'identity.onnx');
    writeFileSync(idPath, g.encode('identity'));
    const upload = await ort.InferenceSession.create(idPath, { ...wgOpts, preferredOutputLocation: 'gpu-buffer' });
    const download = await ort.InferenceSession.create(idPath, wgOpts);
    const down = async (t: ort.Tensor): Promise<Float32Array> => toF32((await download.run({ x: t })).y!);

    // Reading a gpu-buffer tensor from JS directly: in a child process, since in 1.30 the
    // binding's download() throws a C++ exception that aborts the process.
    let getDataResult: string;
    {
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', `
        import * as ort from 'onnxruntime-node';
        const s = await ort.InferenceSession.create(${JSON.stringify(idPath)}, { executionProviders: ['webgpu'], preferredOutputLocation: 'gpu-buffer' });
        const t = (await s.run({ x: new ort.Tensor('float32', new Float32Array(4).fill(1), [1, 1, 1, 4]) })).y;
        console.log('location ' + t.location);
        try { const d = await t.getData(); console.log('getData ok ' + d.length); } catch (e) { console.log('getData threw: ' + e.message); }
      `], { encoding: 'utf8', cwd: process.cwd() });
      const said = child.stdout.trim().split('\n').join('; ');
      const died = child.status === 0 ? '' : `; the process died (${child.signal ?? `exit ${child.status}`}): ${JSON.stringify(child.stderr.split('\n').filter((l) => /terminate|throw|rror/.test(l)).join(' | '))}`;
      getDataResult = `${said}${died}`;
      const t = (await upload.run({ x: kvTensor(1) })).y!;
      const back = await down(t);
      getDataResult += `; through an Identity session with cpu output: ${back.every((v) => v === 1) ? 'ok' : 'WRONG'}`;
      t.dispose();
    }

    // In place: past = present = one device buffer per tensor, uploaded with a sentinel so
    // that rows the run must not write stay recognisable.
    const SENTINEL = 0.5;
    const bound: Record<string, ort.Tensor> = {};
    const wgInplace = await drive('wg-inplace', gpuSession, 'inplace', tokens, async () => {
      for (const p of presentNames) bound[pastOf(p)] = (await upload.run({ x: kvTensor(SENTINEL) })).y!;
      return bound;
    });
    let inplaceNote = '';
    if (!wgInplace.error) {
      const cached = P + WARMUP + RUNS; // positions the runs wrote: 0 .. cached - 1
      const k0 = await down(bound[io.pastKey(0)]!);
      let beyondSentinel = 0;
      let beyondZero = 0;
      let beyond = 0;
      let writtenSentinel = 0;
      for (let h = 0; h < numKvHeads; h++) {
        for (let pos = 0; pos < L; pos++) {
          for (let d = 0; d < headDim; d++) {
            const val = k0[(h * L + pos) * headDim + d]!;
            if (pos >= cached) {
              beyond++;
              if (val === SENTINEL) beyondSentinel++;
              if (val === 0) beyondZero++;
            } else if (val === SENTINEL) writtenSentinel++;
          }
        }
      }
      inplaceNote = `past.0.key after the run (bound buffer): rows >= ${cached}: ${beyondSentinel}/${beyond} still sentinel, ${beyondZero}/${beyond} zero; rows < ${cached}: ${writtenSentinel} sentinel values left`;
      const written = cached * numKvHeads * headDim;
      wgInplace.note.push(writtenSentinel === written ? 'the bound buffer was NEVER written: present went to other memory'
        : beyondSentinel === beyond ? 'the bound buffer was updated in place (unwritten rows kept)' : 'the bound buffer was rewritten beyond the new rows (not a shared-buffer update)');
    }

    console.log(`\nreading a gpu-buffer tensor with getData(): ${getDataResult}`);
    console.log('\nvariant      max|dlogit| vs cpu   median decode step (ms)   notes');
    for (const v of [cpu, wgHost, wgGqaCpu, wgGpu, wgInplace]) {
      if (v.error) {
        console.log(`${v.name.padEnd(12)} FAILED: ${v.error}`);
        continue;
      }
      const d = v === cpu ? 0 : maxAbsDiff(v.logits, cpu.logits);
      console.log(`${v.name.padEnd(12)} ${d.toExponential(2).padStart(12)}         ${median(v.stepMs).toFixed(3).padStart(10)}            ${v.note.join('; ')}`);
    }
    if (inplaceNote) console.log(`\n${inplaceNote}`);
    console.log('\nmax|dlogit| vs cpu per run (prefill, then decode steps at c = P, P+1, ...):');
    for (const v of [wgHost, wgGqaCpu, wgGpu, wgInplace]) {
      if (!v.error) console.log(`  ${v.name.padEnd(11)} ${v.logits.map((l, i) => maxAbsDiff([l], [cpu.logits[i]!]).toFixed(2)).join(' ')}`);
    }
    const argmaxAgree = (v: Variant): string => (v.error ? '-' : `${v.logits.filter((l, i) => argmax(l) === argmax(cpu.logits[i]!)).length}/${cpu.logits.length}`);
    console.log(`argmax agreement with cpu (prefill + steps): wg-host ${argmaxAgree(wgHost)}, wg-gpubuf ${argmaxAgree(wgGpu)}, wg-inplace ${argmaxAgree(wgInplace)}`);
    console.log('\n(lavapipe executes WebGPU shaders on the CPU: times compare the code paths here, not a GPU)');
    for (const t of Object.values(bound)) t.dispose();
    await Promise.all([gpuSession.release(), upload.release(), download.release()]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(`webgpu-probe failed: ${errText(e)}`);
  process.exit(1);
});
