/**
 * `gemma-serve export`: a checkpoint to an exported model directory, or (`--shape S
 * --no-weights`) a shape-only model.onnx for checking the big graphs without their weights.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parameterCount, parseGemma2Config, SHAPES } from '../checkpoint/config.ts';
import { exportCheckpoint, shapeOnlyExport, WEIGHT_FORMATS, type WeightFormat } from '../engine/export/export.ts';
import { MODEL_FILE } from '../engine/manifest.ts';
import { ATTENTION_LAYOUTS, KV_DTYPES, type AttentionLayout, type KvDtype } from '../engine/graph-io.ts';
import { UsageError, parseFlags } from './usage.ts';

export async function exportCommand(argv: string[]): Promise<number> {
  const values = parseFlags('export', argv, {
    checkpoint: { type: 'string' },
    shape: { type: 'string' },
    'no-weights': { type: 'boolean', default: false },
    out: { type: 'string' },
    dtype: { type: 'string' },
    weights: { type: 'string' },
    'kv-dtype': { type: 'string' },
    attention: { type: 'string' },
  });
  const out = values.out;
  if (out === undefined) throw new UsageError('export: --out is required');
  const weights = (values.weights ?? 'fp32') as WeightFormat;
  if (!WEIGHT_FORMATS.includes(weights)) throw new UsageError(`export: --weights must be one of ${WEIGHT_FORMATS.join(', ')}, got ${JSON.stringify(values.weights)}`);
  const dtype = values.dtype ?? 'fp32';
  if (dtype !== 'fp32' && dtype !== 'fp16') throw new UsageError(`export: --dtype must be fp32 or fp16, got ${JSON.stringify(dtype)}`);
  const kvDtype = values['kv-dtype'] as KvDtype | undefined;
  if (kvDtype !== undefined && !KV_DTYPES.includes(kvDtype)) throw new UsageError(`export: --kv-dtype must be one of ${KV_DTYPES.join(', ')}, got ${JSON.stringify(kvDtype)}`);
  const attention = (values.attention ?? 'paged') as AttentionLayout;
  if (!ATTENTION_LAYOUTS.includes(attention)) throw new UsageError(`export: --attention must be one of ${ATTENTION_LAYOUTS.join(', ')}, got ${JSON.stringify(values.attention)}`);
  if (weights !== 'fp32' && values.dtype !== undefined) throw new UsageError(`export: --dtype applies to unquantized weights only (--weights ${weights} keeps norms fp32; ${attention === 'gqa' ? 'with --attention gqa it computes in fp16' : 'its scales are fp32'})`);

  if (values.shape !== undefined || values['no-weights']) {
    if (values.checkpoint !== undefined) throw new UsageError('export: give either --checkpoint or --shape with --no-weights, not both');
    if (!values['no-weights']) throw new UsageError('export: --shape needs --no-weights (a shape has no weights to export)');
    const shape = values.shape;
    if (shape === undefined) throw new UsageError('export: --no-weights needs --shape');
    if (!Object.hasOwn(SHAPES, shape)) throw new UsageError(`export: --shape must be one of ${Object.keys(SHAPES).join(', ')}, got ${JSON.stringify(shape)}`);
    const t0 = performance.now();
    const config = parseGemma2Config(SHAPES[shape as keyof typeof SHAPES], `<shape ${shape}>`);
    const { graph, weightBytes, kvDtype: graphKvDtype } = shapeOnlyExport(config, { dtype, weights, kvDtype, attention });
    const bytes = graph.encode('gemma2', { exporter: 'gemma-serve', shapeOnly: 'true' });
    mkdirSync(out, { recursive: true });
    const modelPath = join(out, MODEL_FILE);
    writeFileSync(modelPath, bytes);
    process.stdout.write(`${JSON.stringify({
      modelPath,
      shape,
      weights: false,
      modelBytes: bytes.byteLength,
      dataBytes: 0,
      weightFormat: weights,
      kvDtype: graphKvDtype,
      attention,
      // What model.onnx.data would hold at this --weights / --dtype (before page alignment).
      weightBytes,
      numParameters: parameterCount(config),
      numNodes: graph.numNodes,
      seconds: round3((performance.now() - t0) / 1000),
    })}\n`);
    return 0;
  }

  const checkpointDir = values.checkpoint;
  if (checkpointDir === undefined) throw new UsageError('export: --checkpoint DIR (or --shape S --no-weights) is required');
  const result = exportCheckpoint({ checkpointDir, outDir: out, dtype, weights, kvDtype, attention });
  process.stdout.write(`${JSON.stringify({
    modelPath: result.modelPath,
    checkpoint: checkpointDir,
    weightFormat: weights,
    weightDtype: result.manifest.weightDtype,
    kvDtype: result.manifest.kvDtype,
    attention,
    dataBytes: result.dataBytes,
    numParameters: result.manifest.numParameters,
    seconds: round3(result.seconds),
  })}\n`);
  return 0;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
