/**
 * What an exported model directory is, as the serving path reads it: the file names, the
 * `manifest.json` record (and its reader, which refuses a directory it cannot serve), the
 * attention layout and KV cache dtype it was exported with, and the fingerprint that says
 * whether a cached export still matches its source checkpoint.
 *
 * Dependency rule: the exporter (export/*, build-time) imports this module; this module and
 * the rest of the serving path (server → engine → runners) never import export/*. The one
 * place serving needs the exporter, a Hugging Face checkpoint exported on first use, loads it
 * with a dynamic import() (resolve-model.ts).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseGemma2Config, type Gemma2Config, type RawGemma2Config } from '../checkpoint/config.ts';
import { CheckpointError } from '../errors.ts';
import { ATTENTION_LAYOUTS, GRAPH_IO_VERSION, KV_DTYPES, MIN_GRAPH_IO_VERSION, type AttentionLayout, type KvDtype } from './graph-io.ts';

export const MODEL_FILE = 'model.onnx';
export const DATA_FILE = 'model.onnx.data';
export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_FORMAT = 'gemma-serve-onnx';
/** Bumped whenever the graph a given checkpoint exports to changes. */
export const EXPORTER_VERSION = 1;

/** Dtype of the float tensors of an export (`--dtype`). */
export type WeightDtype = 'fp32' | 'fp16';

/** Bits per quantized weight (`--weights int4|int8`). */
export type QuantBits = 4 | 8;

/** How a quantized export stores its matrices (manifest field). */
export interface QuantizationInfo {
  readonly bits: QuantBits;
  readonly blockSize: number;
  /** Symmetric per block, one scale, implicit zero point 2^(bits-1) (no zero points stored). */
  readonly scheme: 'symmetric';
  /** The scales' dtype: absent, fp32; fp16 in a gqa export (fp16 compute). */
  readonly scaleDtype?: 'fp16';
  /**
   * 'fp16': every scale is an fp16 value, rounded so before its block was quantized, even where
   * stored float32 (MatMulNBits with float32 activations takes float32 scales): int4 exports,
   * whose scales gemma-serve's kernel then keeps in fp16 (docs/INT4-KERNEL.md), and every export
   * with `scaleDtype` fp16. Absent: float32 values (int8 on the CPU, and int4 exports made
   * before the field).
   */
  readonly scaleRounding?: 'fp16';
  /** MatMulNBits accuracy_level (4: int8 activations on CPU). */
  readonly accuracyLevel: number;
}

/** What `manifest.json` records; the engine refuses a model whose manifest does not match. */
export interface Manifest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly exporterVersion: number;
  readonly graphIoVersion: number;
  /** Dtype of the tensors kept in float (all of them in an unquantized export; norm scales are always fp32). */
  readonly weightDtype: WeightDtype;
  /** Absent in an unquantized export. */
  readonly quantization?: QuantizationInfo;
  /** Element type of the KV cache the graph takes (`--kv-dtype`; in 'gqa' the compute dtype); absent means fp32. */
  readonly kvDtype?: KvDtype;
  /** The graph's attention layout (`--attention`, graph-io.ts); absent means 'paged'. */
  readonly attention?: AttentionLayout;
  /** The checkpoint's config.json, verbatim. */
  readonly config: RawGemma2Config;
  readonly numParameters: number;
  /** Identifies the source checkpoint (for the score/serve export cache). */
  readonly sourceFingerprint: string;
  readonly createdAt: string;
}

/** The KV cache dtype of an export (manifests written before the field existed: fp32). */
export function manifestKvDtype(m: Manifest): KvDtype {
  return m.kvDtype ?? 'fp32';
}

/** The attention layout of an export (manifests written before the field existed: paged). */
export function manifestAttention(m: Manifest): AttentionLayout {
  return m.attention ?? 'paged';
}

/** Whether the export's graph has the `hidden` output (graph io 2), which embeddings need. */
export function manifestHasHidden(m: Manifest): boolean {
  return m.graphIoVersion >= 2;
}

/** Changes whenever a checkpoint file is replaced: names, sizes and mtimes of its files. */
export function checkpointFingerprint(dir: string): string {
  const files = ['config.json', 'model.safetensors', 'model.safetensors.index.json'];
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    const map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
    files.push(...new Set(Object.values(map)));
  }
  return files
    .filter((f) => existsSync(join(dir, f)))
    .map((f) => {
      const s = statSync(join(dir, f));
      return `${f}:${s.size}:${Math.floor(s.mtimeMs)}`;
    })
    .join('|');
}

/** Reads and checks an exported directory's manifest. */
export function readManifest(dir: string): { manifest: Manifest; config: Gemma2Config } {
  const path = join(dir, MANIFEST_FILE);
  if (!existsSync(path)) throw new CheckpointError(`${dir}: no ${MANIFEST_FILE} (not a gemma-serve export; export it with 'gemma-serve export')`);
  const m = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  if (m.format !== MANIFEST_FORMAT) throw new CheckpointError(`${path}: format is ${JSON.stringify(m.format)}, expected ${MANIFEST_FORMAT}`);
  const io = m.graphIoVersion;
  if (!(io >= MIN_GRAPH_IO_VERSION && io <= GRAPH_IO_VERSION) || m.exporterVersion !== EXPORTER_VERSION) {
    throw new CheckpointError(`${path}: exported by another gemma-serve version (exporter ${m.exporterVersion}, graph io ${m.graphIoVersion}; this one needs ${EXPORTER_VERSION}/${GRAPH_IO_VERSION}): export the checkpoint again`);
  }
  if (m.kvDtype !== undefined && !KV_DTYPES.includes(m.kvDtype)) throw new CheckpointError(`${path}: kvDtype is ${JSON.stringify(m.kvDtype)}, expected one of ${KV_DTYPES.join(', ')}`);
  if (m.attention !== undefined && !ATTENTION_LAYOUTS.includes(m.attention)) throw new CheckpointError(`${path}: attention is ${JSON.stringify(m.attention)}, expected one of ${ATTENTION_LAYOUTS.join(', ')}`);
  if (!existsSync(join(dir, MODEL_FILE))) throw new CheckpointError(`${dir}: ${MODEL_FILE} is missing`);
  return { manifest: m, config: parseGemma2Config(m.config, path) };
}
