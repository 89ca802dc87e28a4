/**
 * Checkpoint → exported model directory: `model.onnx` (the graph), `model.onnx.data`
 * (weights, external data), `manifest.json` (what the engine checks at load), and the
 * checkpoint's config, tokenizer and generation files copied alongside, so an exported
 * directory serves on its own.
 *
 * Build-time code: the CLI's `export` command and tests import it; the serving path reads
 * exports through manifest.ts only, and loads this module with a dynamic import() when a
 * Hugging Face checkpoint must be exported on first use (resolve-model.ts).
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint } from '../../checkpoint/checkpoint.ts';
import { parameterCount, type Gemma2Config, type RawGemma2Config } from '../../checkpoint/config.ts';
import { CheckpointError, ConfigError } from '../../errors.ts';
import { ATTENTION_LAYOUTS, GRAPH_IO_VERSION, type AttentionLayout, type KvDtype } from '../graph-io.ts';
import { QUANT_ACCURACY_LEVEL, type GraphWeights, type QuantizedWeight } from './gemma2-blocks.ts';
import { buildGemma2Graph, computesInHalf, type GraphOptions } from './gemma2-graph.ts';
import { DType, type DTypeValue, type ExternalRef, type GraphBuilder } from '../onnx-builder.ts';
import { DATA_FILE, EXPORTER_VERSION, MANIFEST_FILE, MANIFEST_FORMAT, MODEL_FILE, checkpointFingerprint, type Manifest, type QuantBits, type QuantizationInfo, type WeightDtype } from '../manifest.ts';
import { QUANT_BLOCK_SIZE, quantLayout, quantizedBytes, scaleRounding, type QuantLayout } from './quantize.ts';
import { WeightFile } from './weight-file.ts';

/**
 * `--weights`: 'fp32' exports the matrices unquantized at `dtype`; 'int8' / 'int4' quantize
 * every projection, the LM head and the embedding table blockwise (see quantize.ts).
 */
export type WeightFormat = 'fp32' | 'int8' | 'int4';
export const WEIGHT_FORMATS: readonly WeightFormat[] = ['fp32', 'int8', 'int4'];

export interface ExportOptions {
  readonly checkpointDir: string;
  readonly outDir: string;
  readonly dtype?: WeightDtype;
  /** Default 'fp32' (unquantized, at `dtype`). */
  readonly weights?: WeightFormat;
  /** MatMulNBits accuracy_level of a quantized export (default 4; 0 = float math, for exactness tests). */
  readonly accuracyLevel?: number;
  /** KV cache pool dtype the graph takes (default 'fp32'; in 'gqa', implied by the compute dtype). */
  readonly kvDtype?: KvDtype;
  /** Attention layout (default 'paged'). */
  readonly attention?: AttentionLayout;
}

/**
 * The graph options of an export, its combinations checked. 'gqa' computes in the weight dtype
 * `dtype` (--dtype; fp16 in a quantized export) and keeps its cache in it: a --kv-dtype that
 * differs cannot apply.
 */
function graphOptions(attention: AttentionLayout | undefined, kvDtype: KvDtype | undefined, dtype: WeightDtype, bits: QuantBits | null): Required<GraphOptions> {
  const layout = attention ?? 'paged';
  if (!ATTENTION_LAYOUTS.includes(layout)) throw new ConfigError(`attention must be one of ${ATTENTION_LAYOUTS.join(', ')}, got ${JSON.stringify(attention)}`, 'attention');
  if (layout === 'paged') return { attention: layout, kvDtype: kvDtype ?? 'fp32' };
  if (kvDtype !== undefined && kvDtype !== dtype) {
    throw new ConfigError(`--attention gqa keeps the KV cache in the compute dtype, ${dtype} (${bits === null ? '--dtype' : `--weights int${bits} computes in fp16`}): --kv-dtype ${kvDtype} cannot apply; leave --kv-dtype out`, 'kv-dtype');
  }
  return { attention: layout, kvDtype: dtype };
}

function quantBits(weights: WeightFormat): QuantBits | null {
  return weights === 'int8' ? 8 : weights === 'int4' ? 4 : null;
}

/** [N, K] of a checkpoint matrix, checked to be a matrix. */
function matrixDims(hfName: string, shape: readonly number[]): [number, number] {
  if (shape.length !== 2) throw new CheckpointError(`tensor ${hfName} has shape [${shape.join(', ')}], expected a matrix`);
  return [shape[0]!, shape[1]!];
}

/**
 * Declares the initializers of a quantized matrix, its scales of `scaleType`; `refs` null
 * declares shapes only (no data).
 */
function declareQuantized(g: GraphBuilder, hfName: string, l: QuantLayout, accuracyLevel: number, scaleType: typeof DType.FLOAT | typeof DType.FLOAT16, refs: { data: ExternalRef; scales: ExternalRef } | null): QuantizedWeight {
  const init = (name: string, dtype: DTypeValue, dims: number[], ref: ExternalRef | undefined): string =>
    ref ? g.externalInitializer(name, dtype, dims, ref) : g.emptyInitializer(name, dtype, dims);
  let rows: string | null | undefined;
  return {
    matmul: init(`${hfName}.q${l.bits}`, DType.UINT8, [l.N, l.kBlocks, l.blobSize], refs?.data),
    // The gather view shares the bytes (same offset in the data file); only usable when K fills whole blocks.
    gather: () => (rows ??= l.K % l.blockSize === 0 ? init(`${hfName}.q${l.bits}.rows`, DType.UINT8, [l.N, l.rowBytes], refs?.data) : null),
    scales: init(`${hfName}.q${l.bits}.scales`, scaleType, [l.N, l.kBlocks], refs?.scales),
    layout: l,
    accuracyLevel,
  };
}

/** The manifest's record of a quantized export whose scales are stored `stored`. */
function quantizationInfo(bits: QuantBits, accuracyLevel: number, stored: WeightDtype): QuantizationInfo {
  return {
    bits,
    blockSize: QUANT_BLOCK_SIZE,
    scheme: 'symmetric',
    accuracyLevel,
    ...(stored === 'fp16' ? { scaleDtype: 'fp16' as const } : {}),
    ...(scaleRounding(bits, stored) === 'fp16' ? { scaleRounding: 'fp16' as const } : {}),
  };
}

export interface ExportResult {
  readonly manifest: Manifest;
  readonly modelPath: string;
  readonly dataBytes: number;
  readonly seconds: number;
}

const SIDE_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'];

/** Exports a checkpoint. Writes into a temporary folder first, so a failed export leaves nothing half-written. */
export function exportCheckpoint(opts: ExportOptions): ExportResult {
  const t0 = performance.now();
  const bits = quantBits(opts.weights ?? 'fp32');
  // In a quantized export the only float matrix left is an embedding table whose width is not
  // a whole number of blocks: it is stored fp16.
  const dtype = bits === null ? opts.dtype ?? 'fp32' : 'fp16';
  const accuracyLevel = opts.accuracyLevel ?? QUANT_ACCURACY_LEVEL;
  const graphOpts = graphOptions(opts.attention, opts.kvDtype, dtype, bits);
  // fp16 matrices are cast to float32 at load, except where the graph computes in fp16 (gqa),
  // which also takes its quantized matrices' scales in fp16.
  const halfCompute = computesInHalf(graphOpts);
  const ckpt = openCheckpoint(opts.checkpointDir);
  const tmp = `${opts.outDir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const data = new WeightFile(join(tmp, DATA_FILE));
    const names = new Map<string, string>();
    const weights: GraphWeights = {
      has: (n) => ckpt.tensors.has(n),
      tensor(g, hfName, transform) {
        const key = `${hfName}:${transform}`;
        const hit = names.get(key);
        if (hit) return hit;
        const entry = ckpt.tensors.get(hfName);
        if (!entry) throw new CheckpointError(`${ckpt.dir}: tensor ${hfName} is missing`);
        // RMSNorm scales stay float32 (they are tiny and precision matters there).
        const tdtype: WeightDtype = transform === 'plus-one' ? 'fp32' : dtype;
        const ref = data.append(entry, tdtype, transform === 'plus-one');
        const name = transform === 'plus-one' ? `${hfName}.plus_one` : hfName;
        let out = g.externalInitializer(name, tdtype === 'fp16' ? DType.FLOAT16 : DType.FLOAT, entry.shape, ref);
        if (tdtype === 'fp16' && !halfCompute) out = g.op1('Cast', `/weights/${hfName}/Cast`, [out], { to: DType.FLOAT });
        names.set(key, out);
        return out;
      },
    };
    if (bits !== null) {
      const quantized = new Map<string, QuantizedWeight>();
      weights.quantized = (g, hfName) => {
        const hit = quantized.get(hfName);
        if (hit) return hit;
        const entry = ckpt.tensors.get(hfName);
        if (!entry) throw new CheckpointError(`${ckpt.dir}: tensor ${hfName} is missing`);
        const [N, K] = matrixDims(hfName, entry.shape);
        const layout = quantLayout(N, K, bits);
        const q = declareQuantized(g, hfName, layout, accuracyLevel, halfCompute ? DType.FLOAT16 : DType.FLOAT, data.appendQuantized(entry, layout, halfCompute ? 'fp16' : 'fp32'));
        quantized.set(hfName, q);
        return q;
      };
    }
    const graph = buildGemma2Graph(ckpt.config, weights, graphOpts);
    data.close();
    writeFileSync(join(tmp, MODEL_FILE), graph.encode('gemma2', { exporter: 'gemma-serve' }));
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      exporterVersion: EXPORTER_VERSION,
      graphIoVersion: GRAPH_IO_VERSION,
      weightDtype: dtype,
      ...(bits === null ? {} : { quantization: quantizationInfo(bits, accuracyLevel, halfCompute ? 'fp16' : 'fp32') }),
      kvDtype: graphOpts.kvDtype,
      attention: graphOpts.attention,
      config: JSON.parse(readFileSync(join(ckpt.dir, 'config.json'), 'utf8')) as RawGemma2Config,
      numParameters: parameterCount(ckpt.config),
      sourceFingerprint: checkpointFingerprint(ckpt.dir),
      createdAt: new Date().toISOString(),
    };
    writeFileSync(join(tmp, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
    for (const f of SIDE_FILES) if (existsSync(join(ckpt.dir, f))) copyFileSync(join(ckpt.dir, f), join(tmp, f));
    rmSync(opts.outDir, { recursive: true, force: true });
    renameSync(tmp, opts.outDir);
    return { manifest, modelPath: join(opts.outDir, MODEL_FILE), dataBytes: data.size, seconds: (performance.now() - t0) / 1000 };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/**
 * Builds the graph of a config without any weight data (initializers carry shapes only):
 * how the 9B and 27B shapes are checked without 37-108 GB of weights.
 */
export function buildShapeOnlyGraph(config: Gemma2Config, untiedHead = false): GraphBuilder {
  return shapeOnlyExport(config, { untiedHead }).graph;
}

/**
 * The shape-only graph of a config at a weight format, and the bytes its weights would take
 * in `model.onnx.data` (before page alignment): the size of a real export without writing it.
 */
export function shapeOnlyExport(config: Gemma2Config, opts: { untiedHead?: boolean; dtype?: WeightDtype; weights?: WeightFormat; kvDtype?: KvDtype; attention?: AttentionLayout } = {}): { graph: GraphBuilder; weightBytes: number; kvDtype: KvDtype } {
  const bits = quantBits(opts.weights ?? 'fp32');
  const floatBytes = bits === null && opts.dtype === 'fp16' ? 2 : bits === null ? 4 : 2;
  const graphOpts = graphOptions(opts.attention, opts.kvDtype, floatBytes === 2 ? 'fp16' : 'fp32', bits);
  // Matrices (and quantized scales) are declared float32, what the graph computes with; float16 in an fp16-compute gqa graph.
  const matrixType = computesInHalf(graphOpts) ? DType.FLOAT16 : DType.FLOAT;
  const declared = new Map<string, string>();
  const quantized = new Map<string, QuantizedWeight>();
  let weightBytes = 0;
  const weights: GraphWeights = {
    has: (n) => n === 'lm_head.weight' && opts.untiedHead === true,
    tensor(g, hfName, transform) {
      const key = `${hfName}:${transform}`;
      const hit = declared.get(key);
      if (hit) return hit;
      const dims = shapeOf(config, hfName);
      const name = g.emptyInitializer(transform === 'plus-one' ? `${hfName}.plus_one` : hfName, transform === 'plus-one' ? DType.FLOAT : matrixType, dims);
      weightBytes += dims.reduce((a, b) => a * b, 1) * (transform === 'plus-one' ? 4 : floatBytes);
      declared.set(key, name);
      return name;
    },
  };
  if (bits !== null) {
    weights.quantized = (g, hfName) => {
      const hit = quantized.get(hfName);
      if (hit) return hit;
      const [N, K] = matrixDims(hfName, shapeOf(config, hfName));
      const layout = quantLayout(N, K, bits);
      const q = declareQuantized(g, hfName, layout, QUANT_ACCURACY_LEVEL, matrixType, null);
      weightBytes += quantizedBytes(layout, matrixType === DType.FLOAT16 ? 2 : 4);
      quantized.set(hfName, q);
      return q;
    };
  }
  return { graph: buildGemma2Graph(config, weights, graphOpts), weightBytes, kvDtype: graphOpts.kvDtype };
}

function shapeOf(config: Gemma2Config, hfName: string): readonly number[] {
  if (hfName === 'lm_head.weight') return [config.vocabSize, config.hiddenSize];
  const H = config.hiddenSize;
  const m = /^model\.layers\.\d+\.(.+)$/.exec(hfName);
  const local = m?.[1] ?? hfName;
  const table: Record<string, readonly number[]> = {
    'model.embed_tokens.weight': [config.vocabSize, H],
    'model.norm.weight': [H],
    'self_attn.q_proj.weight': [config.numHeads * config.headDim, H],
    'self_attn.k_proj.weight': [config.numKvHeads * config.headDim, H],
    'self_attn.v_proj.weight': [config.numKvHeads * config.headDim, H],
    'self_attn.o_proj.weight': [H, config.numHeads * config.headDim],
    'mlp.gate_proj.weight': [config.intermediateSize, H],
    'mlp.up_proj.weight': [config.intermediateSize, H],
    'mlp.down_proj.weight': [H, config.intermediateSize],
  };
  return table[local] ?? [H];
}
