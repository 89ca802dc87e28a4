/**
 * Sampling a step's rows with the sampler graph (sampler-graph.ts) on the native runner: the
 * logits stay where the model wrote them (bound as an input, not copied), and per row only O(1)
 * parameters, the sequence's distinct token ids (penalties), its bias entries and its bitmask
 * words (its grammar's, and the stop ids cleared before min_tokens) go in; the sampled id, its
 * logprob and the top candidates come out. The host draws each row's uniform from its
 * Generation's seeded generator, so a seed fixes the output and a preempted sequence replays it.
 *
 * Where the logits are: a host array (a runner that returns them, or `inPlace: false`), or the
 * runner's device memory (StepOutput.device, after Runner.keepLogitsOnDevice): that buffer,
 * another native session's, is bound as the graph's input in place (same device; on the CPU
 * provider it is host memory, so the same code runs in the tests), and nothing of the logits
 * crosses to the host. The rows the host does need (prompt logprobs, rows handed back) are
 * copied by `readRows`, a Gather graph whose output is bound to host memory: only those rows.
 * Why a second session and not the sampler appended to the model graph: a sampler graph is built
 * per SamplerFeatures combination (a batch pays only for its parts), and the model must be loaded
 * once; binding one session's output buffer as another's input costs nothing on the same device.
 *
 * A row the graph cannot finish returns its uniform and goes through the JS sampler
 * (step-sampling.ts) with it: a top-k above MAX_CANDIDATES, or a top-p / min-p nucleus that does
 * not close within the candidates (the graph reports how many it kept). One graph per combination
 * of parts a batch needs (SamplerFeatures), built on first use.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildRowReaderGraph, buildSamplerGraph, SamplerIO as IO, type SamplerFeatures } from './sampler-graph.ts';
import { loadNativeOrt, NativeSession, OnnxType, type Binding, type DeviceRef } from './native/ort-native.ts';
import type { DeviceLogits } from '../scheduler/runner-contract.ts';
import type { Generation } from './generation.ts';
import type { Device } from './session.ts';
import type { SampledToken } from './step-sampling.ts';
import type { SamplerKind } from './types.ts';
import { reusable } from './reusable.ts';

/** `graph`: this sampler; `js`: sampling.ts row by row (the reference, and the path where the native runner is not built). */
export const SAMPLER_KINDS: readonly SamplerKind[] = ['graph', 'js'];

/** Candidates a filtered draw sees: top-k above it, or a nucleus wider than it, goes to the JS sampler. */
export const MAX_CANDIDATES = 1024;

/** One row to sample: its sequence's state, tokens generated so far, and its row in the step's logits. */
export interface SampleRow {
  readonly g: Generation;
  readonly numOutput: number;
  /** Logits row (StepOutput's plan order, [numLogitRows, V]). */
  readonly row: number;
  /** The allowed-token bitmask (SequenceGrammar.mask, filled), or null. */
  readonly allowed: Int32Array | null;
}

/** A row's result: the token, or the uniform it drew (then the JS sampler finishes it with that number). */
export type RowResult = SampledToken | { readonly fallback: number };

export interface DeviceSamplerOptions {
  readonly device: Device;
  readonly intraOpThreads?: number;
  /** Candidates for top-p / min-p rows without top-k (default MAX_CANDIDATES). */
  readonly candidates?: number;
  /**
   * Whether the step loop asks the runner to keep its logits on the device for this sampler
   * (default true). False: the logits come to the host and are bound from there (the path before,
   * kept for comparison in tests and benches).
   */
  readonly inPlace?: boolean;
}

/** SamplerFeatures as bits (a graph's key: no string built per step). */
const F = { gather: 1, penalties: 2, bias: 4, mask: 8, candidates: 16, logprobs: 32, greedy: 64, draw: 128, temperature: 256 } as const;

function samplerFeatures(bits: number): SamplerFeatures {
  const on = (k: keyof typeof F): boolean => (bits & F[k]) !== 0;
  return { gather: on('gather'), penalties: on('penalties'), bias: on('bias'), mask: on('mask'), candidates: on('candidates'), logprobs: on('logprobs'), greedy: on('greedy'), draw: on('draw'), temperature: on('temperature') };
}

/** Per-row flags of a step. */
const ROW_FILTERED = 1, ROW_TOO_WIDE = 2, ROW_STOP_MASKED = 4;

export class DeviceSampler {
  private readonly sessions = new Map<number | string, NativeSession>();
  /** A step's per-row arrays, reused (bound with the step's shapes: longer arrays are fine). */
  private readonly buffers = {
    uniforms: reusable((n) => new Float64Array(n)),
    flags: reusable((n) => new Uint8Array(n)),
    rows: reusable((n) => new BigInt64Array(n)),
    invTemperature: reusable((n) => new Float32Array(n)),
    greedy: reusable((n) => new Int32Array(n)),
    uniformBits: reusable((n) => new BigInt64Array(n)),
    k: new BigInt64Array(1),
    filtered: reusable((n) => new Int32Array(n)),
    topK: reusable((n) => new BigInt64Array(n)),
    topKActive: reusable((n) => new Int32Array(n)),
    topP: reusable((n) => new Float32Array(n)),
    minP: reusable((n) => new Float32Array(n)),
    token: reusable((n) => new BigInt64Array(n)),
    logprob: reusable((n) => new Float32Array(n)),
    kept: reusable((n) => new BigInt64Array(n)),
    topIds: reusable((n) => new BigInt64Array(n)),
    topLogprobs: reusable((n) => new Float32Array(n)),
  };
  private readonly dir: string;
  /** Milliseconds the last `sample` spent in ONNX Runtime's run (the rest of it is host time). */
  lastRunMs = 0;

  private constructor(private readonly opts: DeviceSamplerOptions) {
    this.dir = mkdtempSync(join(tmpdir(), 'gs-sampler-'));
  }

  get device(): Device {
    return this.opts.device;
  }

  get inPlace(): boolean {
    return this.opts.inPlace ?? true;
  }

  /** The sampler, or why it cannot run here (the native runner is not built). */
  static create(opts: DeviceSamplerOptions): DeviceSampler | { error: string } {
    const native = loadNativeOrt();
    if ('error' in native) return { error: native.error };
    return new DeviceSampler(opts);
  }

  /**
   * Samples `rows` from `logits` ([numLogitRows, V] on the host, or left on the device); neither is
   * written. Consumes one uniform per non-greedy row, as the JS sampler does.
   */
  sample(logits: Float32Array | DeviceLogits, V: number, rows: readonly SampleRow[]): RowResult[] {
    const R = rows.length;
    const device = logits instanceof Float32Array ? null : logits;
    const N = device === null ? (logits as Float32Array).length / V : device.numRows;
    const b = this.buffers;
    const uniforms = b.uniforms(R);
    const flags = b.flags(R);
    // One pass over the rows: what each needs (flags) and what the batch needs (features).
    let features = 0;
    let P = 1, Nb = 1, K = 1;
    for (let i = 0; i < R; i++) {
      const s = rows[i]!;
      const req = s.g.req;
      const p = req.sampling;
      let f = 0;
      if ((device === null ? s.row : device.rowIndex[s.row]!) !== i) features |= F.gather;
      if (p.temperature > 0) {
        features |= F.draw;
        if (p.temperature !== 1) features |= F.temperature;
        uniforms[i] = s.g.rand();
        const topK = activeTopK(s, V);
        if (topK > 0 || p.topP < 1 || p.minP > 0) {
          f |= ROW_FILTERED;
          if (topK > MAX_CANDIDATES) f |= ROW_TOO_WIDE;
          else { K = Math.max(K, topK > 0 ? topK : Math.min(V, this.opts.candidates ?? MAX_CANDIDATES)); features |= F.candidates; }
        }
      } else {
        features |= F.greedy;
      }
      if (usesPenalties(s)) { features |= F.penalties; P = Math.max(P, s.g.history.seen.size); }
      if (p.logitBias.length > 0) { features |= F.bias; Nb = Math.max(Nb, p.logitBias.length); }
      // Stop ids before min_tokens are cleared from the row's bitmask (sampling.ts sets them to
      // -inf first: penalties and bias leave -inf as it is, so the result is the same).
      if (s.numOutput < req.minTokens && req.stopIds.some((id) => id >= 0 && id < V)) f |= ROW_STOP_MASKED;
      if (s.allowed !== null || (f & ROW_STOP_MASKED) !== 0) features |= F.mask;
      if (req.logprobs !== null) {
        features |= F.logprobs;
        if (req.logprobs > 0) { K = Math.max(K, Math.min(V, req.logprobs)); features |= F.candidates; }
      }
      flags[i] = f;
    }
    if (R !== N) features |= F.gather;
    const has = (bit: number): boolean => (features & bit) !== 0;
    const draw = has(F.draw);

    const inputs: Binding[] = [{ name: IO.logits, type: OnnxType.FLOAT, dims: [N, V], data: device === null ? logits as Float32Array : deviceRef(device) }];
    const add = (name: string, type: Binding['type'], dims: number[], data: Binding['data']): void => { inputs.push({ name, type, dims, data }); };
    if (has(F.gather)) {
      const at = b.rows(R);
      for (let i = 0; i < R; i++) at[i] = BigInt(device === null ? rows[i]!.row : device.rowIndex[rows[i]!.row]!);
      add(IO.rows, OnnxType.INT64, [R], at);
    }
    if (has(F.temperature)) {
      const inv = b.invTemperature(R);
      for (let i = 0; i < R; i++) { const t = rows[i]!.g.req.sampling.temperature; inv[i] = t > 0 ? 1 / t : 1; }
      add(IO.invTemperature, OnnxType.FLOAT, [R], inv);
    }
    if (has(F.greedy) && draw) {
      const greedy = b.greedy(R);
      for (let i = 0; i < R; i++) greedy[i] = rows[i]!.g.req.sampling.temperature > 0 ? 0 : 1;
      add(IO.greedy, OnnxType.INT32, [R], greedy);
    }
    if (draw) {
      const bits = b.uniformBits(R);
      for (let i = 0; i < R; i++) bits[i] = BigInt(Math.floor(uniforms[i]! * 4294967296));
      add(IO.uniform, OnnxType.INT64, [R], bits);
    }
    if (has(F.penalties)) penaltyInputs(rows, V, P, add);
    if (has(F.bias)) {
      const ids = new BigInt64Array(R * Nb);
      const values = new Float32Array(R * Nb); // padding: id 0, bias 0
      rows.forEach((s, i) => s.g.req.sampling.logitBias.forEach(([id, bias], j) => {
        if (id < 0 || id >= V) return;
        ids[i * Nb + j] = BigInt(id);
        values[i * Nb + j] = bias;
      }));
      add(IO.biasIds, OnnxType.INT64, [R, Nb], ids);
      add(IO.biasValues, OnnxType.FLOAT, [R, Nb], values);
    }
    if (has(F.mask)) {
      const W = Math.ceil(V / 32);
      const words = new Int32Array(R * W).fill(-1);
      rows.forEach((s, i) => {
        if (s.allowed !== null) {
          // Tokens beyond the grammar's table (a model vocabulary wider than it) are never allowed.
          words.fill(0, i * W, (i + 1) * W);
          words.set(s.allowed.subarray(0, W), i * W);
        }
        if ((flags[i]! & ROW_STOP_MASKED) !== 0) for (const id of s.g.req.stopIds) if (id >= 0 && id < V) words[i * W + (id >> 5)]! &= ~(1 << (id & 31));
      });
      add(IO.allowed, OnnxType.INT32, [R, W], words);
    }
    if (has(F.candidates)) {
      b.k[0] = BigInt(K);
      add(IO.k, OnnxType.INT64, [1], b.k);
    }
    if (has(F.candidates) && draw) {
      const filtered = b.filtered(R), topK = b.topK(R), topKActive = b.topKActive(R), topP = b.topP(R), minP = b.minP(R);
      for (let i = 0; i < R; i++) {
        const s = rows[i]!;
        const k = activeTopK(s, V);
        filtered[i] = (flags[i]! & (ROW_FILTERED | ROW_TOO_WIDE)) === ROW_FILTERED ? 1 : 0;
        topK[i] = BigInt(k > 0 && k <= K ? k : K);
        topKActive[i] = k > 0 ? 1 : 0;
        topP[i] = s.g.req.sampling.topP;
        minP[i] = s.g.req.sampling.minP;
      }
      add(IO.filtered, OnnxType.INT32, [R], filtered);
      add(IO.topK, OnnxType.INT64, [R], topK);
      add(IO.topKActive, OnnxType.INT32, [R], topKActive);
      add(IO.topP, OnnxType.FLOAT, [R], topP);
      add(IO.minP, OnnxType.FLOAT, [R], minP);
    }

    const token = b.token(R);
    const outputs: Binding[] = [{ name: IO.token, type: OnnxType.INT64, dims: [R], data: token }];
    const logprob = b.logprob(R);
    const kept = b.kept(R);
    const withTop = has(F.candidates) && has(F.logprobs);
    const topIds = withTop ? b.topIds(R * K) : null;
    const topLogprobs = withTop ? b.topLogprobs(R * K) : null;
    if (has(F.logprobs)) outputs.push({ name: IO.logprob, type: OnnxType.FLOAT, dims: [R], data: logprob });
    if (has(F.candidates) && draw) outputs.push({ name: IO.kept, type: OnnxType.INT64, dims: [R], data: kept });
    if (topIds !== null && topLogprobs !== null) {
      outputs.push({ name: IO.topIds, type: OnnxType.INT64, dims: [R, K], data: topIds });
      outputs.push({ name: IO.topLogprobs, type: OnnxType.FLOAT, dims: [R, K], data: topLogprobs });
    }
    const session = this.session(V, features);
    const t0 = performance.now();
    session.run(inputs, outputs);
    this.lastRunMs = performance.now() - t0;

    const results = new Array<RowResult>(R);
    for (let i = 0; i < R; i++) {
      const s = rows[i]!;
      // Without top-k, all K candidates kept means the nucleus may reach past them.
      const f = flags[i]!;
      const candidatesCut = (f & ROW_FILTERED) !== 0 && ((f & ROW_TOO_WIDE) !== 0 || (Number(kept[i]) >= K && K < V && activeTopK(s, V) === 0));
      if (candidatesCut) { results[i] = { fallback: uniforms[i]! }; continue; }
      const tokenId = Number(token[i]);
      s.g.history.add(tokenId);
      const n = s.g.req.logprobs;
      if (n === null || s.g.stop.has(tokenId)) { results[i] = { tokenId }; continue; }
      const top = Array.from({ length: n }, (_, j) => ({ id: Number(topIds![i * K + j]), logprob: topLogprobs![i * K + j]! }));
      results[i] = { tokenId, logprobs: { logprob: logprob[i]!, top } };
    }
    return results;
  }

  /**
   * Copies logits rows [first, first + count) (plan order) of device-resident logits to the host:
   * [count, V], nothing else of the buffer.
   */
  readRows(logits: DeviceLogits, V: number, first: number, count: number): Float32Array {
    const out = new Float32Array(count * V);
    if (count === 0) return out;
    const rows = BigInt64Array.from(logits.rowIndex.subarray(first, first + count), (r) => BigInt(r));
    this.graph(`reader ${V}`, () => buildRowReaderGraph(V)).run(
      [{ name: IO.logits, type: OnnxType.FLOAT, dims: [logits.numRows, V], data: deviceRef(logits) }, { name: IO.rows, type: OnnxType.INT64, dims: [count], data: rows }],
      [{ name: IO.rowLogits, type: OnnxType.FLOAT, dims: [count, V], data: out }]);
    return out;
  }

  /** The graph of `features` (F bits) for vocabulary V. */
  private session(V: number, features: number): NativeSession {
    return this.graph(V * 512 + features, () => buildSamplerGraph(V, samplerFeatures(features)));
  }

  /** The session of graph `key`, built by `build` on first use. */
  private graph(key: number | string, build: () => Uint8Array): NativeSession {
    let s = this.sessions.get(key);
    if (s === undefined) {
      const path = join(this.dir, `sampler-${key}.onnx`);
      writeFileSync(path, build());
      s = NativeSession.create(path, { device: this.opts.device, intraOpThreads: this.opts.intraOpThreads });
      this.sessions.set(key, s);
    }
    return s;
  }

  release(): void {
    for (const s of this.sessions.values()) s.release();
    this.sessions.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The native binding of device-resident logits (their owner must be a native session on the sampler's device). */
function deviceRef(d: DeviceLogits): DeviceRef {
  if (!(d.owner instanceof NativeSession)) throw new Error('device logits from a runner without a native session');
  return { buffer: d.buffer, byteOffset: d.byteOffset, owner: d.owner };
}

/** [R, P] ids seen and their output counts: each row's entries, then its first entry repeated. */
function penaltyInputs(rows: readonly SampleRow[], V: number, P: number, add: (name: string, type: Binding['type'], dims: number[], data: Binding['data']) => void): void {
  const ids = new BigInt64Array(rows.length * P);
  const counts = new Float32Array(rows.length * P);
  const params = new Float32Array(rows.length * 3);
  rows.forEach((s, i) => {
    const p = s.g.req.sampling;
    params.set(usesPenalties(s) ? [p.repetitionPenalty, p.frequencyPenalty, p.presencePenalty] : [1, 0, 0], i * 3);
    if (!usesPenalties(s)) return; // id 0 with no penalty: unchanged
    let j = 0;
    const { seen, outputCounts } = s.g.history;
    for (const id of seen) {
      if (id < 0 || id >= V) continue;
      ids[i * P + j] = BigInt(id);
      counts[i * P + j] = outputCounts.get(id) ?? 0;
      j++;
    }
    if (j === 0) { params.set([1, 0, 0], i * 3); return; } // nothing seen: nothing to penalize
    for (let k = j; k < P; k++) { ids[i * P + k] = ids[i * P]!; counts[i * P + k] = counts[i * P]!; }
  });
  add(IO.penaltyIds, OnnxType.INT64, [rows.length, P], ids);
  add(IO.penaltyCounts, OnnxType.FLOAT, [rows.length, P], counts);
  add(IO.penaltyParams, OnnxType.FLOAT, [rows.length, 3], params);
}

/** Whether a row's penalties change anything (sampling.ts applies them only then). */
function usesPenalties(s: SampleRow): boolean {
  const p = s.g.req.sampling;
  return p.repetitionPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
}

/** The row's top-k where it cuts anything (sampling.ts: 0 or >= V is off), else 0. */
function activeTopK(s: SampleRow, V: number): number {
  const k = s.g.req.sampling.topK;
  return k > 0 && k < V ? k : 0;
}
