/**
 * Random-weight Gemma 2 checkpoints in Hugging Face layout, for tests and benchmarks:
 * config.json (a published shape plus `--set` overrides), generation_config.json, weights
 * (one file, or HF-style shards past 5 GB) and a synthetic Gemma-style tokenizer.
 * Weights come from a seeded PRNG, one stream per tensor name, so the same seed gives
 * byte-identical files whatever the chunking, and a tensor does not change when an
 * override adds or removes other tensors.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.ts';
import { expectedTensors, parseGemma2Config, SHAPES, type Gemma2Config, type RawGemma2Config } from './config.ts';
import { numElements, SafetensorsWriter, tensorByteLength, type TensorSpec, type WritableDtype } from './safetensors-writer.ts';
import { buildGemmaTokenizerFiles } from './tokenizer-json.ts';

export type ShapeName = keyof typeof SHAPES;
export type RandomDtype = 'f32' | 'bf16';

/** HF's default `max_shard_size` ("5GB" = 5e9 bytes). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

export interface MakeRandomOptions {
  readonly shape: ShapeName;
  /** Non-negative safe integer. */
  readonly seed: number;
  readonly dtype: RandomDtype;
  /** Output directory (created if missing; earlier weight files in it are replaced). */
  readonly out: string;
  /** Raw config.json overrides, as from `parseSetArgs`. */
  readonly set?: Readonly<Record<string, string>>;
  /** Split into shards when the weights exceed this many bytes (tests use a small value). */
  readonly maxShardBytes?: number;
  /** Called after each written chunk; for a CLI progress line. */
  readonly onProgress?: (bytesWritten: number, totalBytes: number) => void;
}

export interface RandomCheckpoint {
  readonly dir: string;
  readonly config: Gemma2Config;
  /** Weight files written, in order (one, or the shards). */
  readonly weightFiles: readonly string[];
  /** Tensor data bytes (headers excluded), as the index's `metadata.total_size`. */
  readonly totalBytes: number;
}

/** Elements generated per chunk: 4 MB of float32, whatever the model size. */
const CHUNK_ELEMENTS = 1 << 20;

/** Parses `key=value` items (CLI `--set`); the value keeps everything after the first '='. */
export function parseSetArgs(list: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new ConfigError(`--set expects key=value, got ${JSON.stringify(item)}`, 'set');
    out[item.slice(0, eq).trim()] = item.slice(eq + 1);
  }
  return out;
}

/** A value is JSON when it parses as JSON (numbers, null, lists), otherwise a plain string. */
export function applyOverrides(base: RawGemma2Config, set: Readonly<Record<string, string>>): RawGemma2Config {
  const raw: RawGemma2Config = { ...base };
  for (const [key, text] of Object.entries(set)) {
    let value: unknown;
    try {
      value = JSON.parse(text) as unknown;
    } catch {
      value = text;
    }
    raw[key] = value;
  }
  return raw;
}

/** The raw config.json a random checkpoint gets; validated, so a bad override fails before any file is written. */
export function randomConfig(shape: ShapeName, dtype: RandomDtype, set: Readonly<Record<string, string>>, file: string): { raw: RawGemma2Config; config: Gemma2Config } {
  const base = SHAPES[shape];
  if (base === undefined) throw new ConfigError(`unknown shape ${JSON.stringify(shape)}; expected one of ${Object.keys(SHAPES).join(', ')}`, 'shape');
  // The dtype option decides torch_dtype, so config.json always describes the files written.
  const raw = { ...applyOverrides(base, set), torch_dtype: dtype === 'bf16' ? 'bfloat16' : 'float32' };
  return { raw, config: parseGemma2Config(raw, file) };
}

export function makeRandomCheckpoint(opts: MakeRandomOptions): RandomCheckpoint {
  if (!Number.isSafeInteger(opts.seed) || opts.seed < 0) throw new ConfigError(`seed must be a non-negative integer, got ${opts.seed}`, 'seed');
  if (opts.dtype !== 'f32' && opts.dtype !== 'bf16') throw new ConfigError(`dtype must be f32 or bf16, got ${JSON.stringify(opts.dtype)}`, 'dtype');
  const dir = opts.out;
  const { raw, config } = randomConfig(opts.shape, opts.dtype, opts.set ?? {}, join(dir, 'config.json'));
  const tokenizer = buildGemmaTokenizerFiles(config.vocabSize);

  mkdirSync(dir, { recursive: true });
  removeOldWeights(dir);
  writeJson(join(dir, 'config.json'), sortKeys(raw));
  writeJson(join(dir, 'generation_config.json'), {
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds,
    pad_token_id: config.padTokenId,
  });
  writeJson(join(dir, 'tokenizer.json'), tokenizer.tokenizerJson);
  writeJson(join(dir, 'tokenizer_config.json'), tokenizer.tokenizerConfigJson);

  const dtype: WritableDtype = opts.dtype === 'bf16' ? 'BF16' : 'F32';
  const specs: TensorSpec[] = [...expectedTensors(config)].map(([name, shape]) => ({ name, dtype, shape }));
  const shards = planShards(specs, opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  const totalBytes = specs.reduce((n, s) => n + tensorByteLength(s), 0);
  const names = shards.length === 1
    ? ['model.safetensors']
    : shards.map((_, i) => `model-${pad5(i + 1)}-of-${pad5(shards.length)}.safetensors`);

  const init = initializer(raw, config);
  const chunk = new Float32Array(CHUNK_ELEMENTS);
  let done = 0;
  shards.forEach((shard, i) => {
    const writer = SafetensorsWriter.create(join(dir, names[i]!), shard);
    try {
      for (const spec of shard) {
        const rng = Xoshiro128.forTensor(opts.seed, spec.name);
        const std = init(spec.name);
        const total = numElements(spec.shape);
        for (let off = 0; off < total; off += CHUNK_ELEMENTS) {
          const view = chunk.subarray(0, Math.min(CHUNK_ELEMENTS, total - off));
          rng.fillNormalish(view, std);
          writer.write(spec.name, view);
          done += view.length * (dtype === 'BF16' ? 2 : 4);
          opts.onProgress?.(done, totalBytes);
        }
      }
    } finally {
      writer.close();
    }
  });

  if (shards.length > 1) {
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => shard.forEach((s) => { weightMap[s.name] = names[i]!; }));
    writeJson(join(dir, 'model.safetensors.index.json'), { metadata: { total_size: totalBytes }, weight_map: sortKeys(weightMap) });
  }
  return { dir, config, weightFiles: names.map((n) => join(dir, n)), totalBytes };
}

/**
 * HF's sharding: fill a shard in tensor order until the next tensor would push it past the
 * limit; a tensor larger than the limit gets a shard of its own.
 */
export function planShards(specs: readonly TensorSpec[], maxShardBytes: number): TensorSpec[][] {
  const shards: TensorSpec[][] = [];
  let current: TensorSpec[] = [];
  let bytes = 0;
  for (const s of specs) {
    const n = tensorByteLength(s);
    if (current.length > 0 && bytes + n > maxShardBytes) {
      shards.push(current);
      current = [];
      bytes = 0;
    }
    current.push(s);
    bytes += n;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

/**
 * Standard deviation per tensor. Matrices use initializer_range (HF's init). Embeddings use
 * 1/sqrt(H): after the final RMSNorm the hidden state has norm ~sqrt(H), so logits get a
 * standard deviation near 1 and log-probs differ by whole units even for the tiny shape
 * (0.02 would leave them within ~0.2 of uniform); for the published sizes this is ~0.02.
 * RMSNorm weights are N(0, 0.1), so the (1 + w) scaling is visibly exercised.
 */
function initializer(raw: RawGemma2Config, config: Gemma2Config): (name: string) => number {
  const range = typeof raw['initializer_range'] === 'number' && raw['initializer_range'] > 0 ? raw['initializer_range'] : 0.02;
  const embedStd = 1 / Math.sqrt(config.hiddenSize);
  return (name) => {
    if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') return embedStd;
    if (name.endsWith('norm.weight')) return 0.1;
    return range;
  };
}

/** xoshiro128** (Blackman & Vigna): fast, 32-bit, plenty for random weights. */
class Xoshiro128 {
  private constructor(private s0: number, private s1: number, private s2: number, private s3: number) {}

  /** One independent stream per (seed, tensor name), seeded through splitmix32. */
  static forTensor(seed: number, name: string): Xoshiro128 {
    let h = 0x811c9dc5; // FNV-1a over the name's UTF-16 units
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
    let state = (h ^ Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.floor(seed / 2 ** 32)) | 0;
    const next = (): number => {
      state = (state + 0x9e3779b9) | 0;
      let t = state ^ (state >>> 16);
      t = Math.imul(t, 0x21f0aaad);
      t ^= t >>> 15;
      t = Math.imul(t, 0x735a2d97);
      return (t ^ (t >>> 15)) >>> 0;
    };
    const r = new Xoshiro128(next(), next(), next(), next());
    if ((r.s0 | r.s1 | r.s2 | r.s3) === 0) r.s0 = 1; // the all-zero state is a fixed point
    return r;
  }

  /**
   * Fills `out` with a bell-shaped distribution of mean 0 and standard deviation `std`: the
   * sum of four 16-bit uniforms (two outputs), about 5x cheaper than Box-Muller, which
   * matters at 2.6e9 parameters. Tails stop at ±3.46 std, harmless for random weights.
   */
  fillNormalish(out: Float32Array, std: number): void {
    let s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
    // Four U(0..65535): mean 4 * 32767.5, variance 4 * (65536^2 - 1) / 12.
    const mean = 131070;
    const scale = std / Math.sqrt((65536 * 65536 - 1) / 3);
    for (let i = 0; i < out.length; i++) {
      // Two xoshiro128** steps, unrolled (this loop is the whole cost of a 10 GB checkpoint).
      const a = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
      let t = s1 << 9;
      s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11);
      const b = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
      t = s1 << 9;
      s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11);
      out[i] = ((a & 0xffff) + (a >>> 16) + (b & 0xffff) + (b >>> 16) - mean) * scale;
    }
    this.s0 = s0; this.s1 = s1; this.s2 = s2; this.s3 = s3;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Earlier weights would otherwise mix with the new ones (openCheckpoint prefers an index). */
function removeOldWeights(dir: string): void {
  for (const f of readdirSync(dir)) {
    if (f === 'model.safetensors' || f === 'model.safetensors.index.json' || /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)) {
      const p = join(dir, f);
      if (existsSync(p)) rmSync(p);
    }
  }
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + '\n');
}

/** HF writes config keys sorted; so do we, so files diff cleanly against real ones. */
function sortKeys<T>(obj: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}
