/**
 * MatMulNBits at M=1 with the 2B shape's dimensions (K 2304), random packed weights, CPU EP:
 * `npx tsx bench/matmulnbits.ts`. Times (median of 7 × 100 runs):
 *   - one 2304x9216 projection at 4 and 8 bits (accuracy_level 4) and fp32 Gemm for contrast;
 *   - the five input-side projections of a layer (q, k, v, gate, up) as five nodes vs fused
 *     into two (q|k|v and gate|up).
 * The weights are tens of MB and stay in cache between runs: this times the kernels, not DRAM.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { DType, GraphBuilder } from '../src/engine/onnx-builder.ts';

const K = 2304;
const dir = mkdtempSync(join(tmpdir(), 'mmnbits-'));
mkdirSync(dir, { recursive: true });

type Node = { readonly kind: 'nbits'; readonly bits: 4 | 8; readonly n: number } | { readonly kind: 'gemm'; readonly n: number };

/** A graph x[1, K] -> the given matmuls, concatenated. */
function build(name: string, nodes: readonly Node[]): string {
  const g = new GraphBuilder();
  const x = g.input('x', DType.FLOAT, [1, K]);
  const chunks: Buffer[] = [];
  let offset = 0;
  const weight = (wname: string, dtype: typeof DType.UINT8 | typeof DType.FLOAT, dims: number[], bytes: Buffer): string => {
    const ref = g.externalInitializer(wname, dtype, dims, { location: `${name}.data`, offset, length: bytes.length });
    chunks.push(bytes);
    offset += bytes.length;
    return ref;
  };
  const outs = nodes.map((node, i) => {
    if (node.kind === 'gemm') {
      const w = Buffer.alloc(node.n * K * 4);
      for (let j = 0; j < node.n * K; j++) w.writeFloatLE(((j * 2654435761) >>> 24) / 25600 - 0.005, j * 4);
      return g.op1('Gemm', `gemm${i}`, [x, weight(`W${i}`, DType.FLOAT, [node.n, K], w)], { transB: 1 });
    }
    const blocks = K / 32;
    const blob = (32 * node.bits) / 8;
    const b = Buffer.alloc(node.n * blocks * blob);
    for (let j = 0; j < b.length; j++) b[j] = (j * 2654435761) >>> 24;
    const s = Buffer.alloc(node.n * blocks * 4);
    for (let j = 0; j < node.n * blocks; j++) s.writeFloatLE(0.01, j * 4);
    return g.op1('MatMulNBits', `mm${i}`, [x, weight(`B${i}`, DType.UINT8, [node.n, blocks, blob], b), weight(`S${i}`, DType.FLOAT, [node.n * blocks], s)],
      { K, N: node.n, bits: node.bits, block_size: 32, accuracy_level: 4 }, 'com.microsoft');
  });
  const y = outs.length === 1 ? outs[0]! : g.op1('Concat', 'cat', outs, { axis: 1 });
  g.output(y, 'y', DType.FLOAT, [1, nodes.reduce((a, n) => a + n.n, 0)]);
  writeFileSync(join(dir, `${name}.data`), Buffer.concat(chunks));
  writeFileSync(join(dir, `${name}.onnx`), g.encode(name));
  return join(dir, `${name}.onnx`);
}

async function time(name: string, nodes: readonly Node[]): Promise<void> {
  const session = await ort.InferenceSession.create(build(name, nodes), { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
  const feeds = { x: new ort.Tensor('float32', new Float32Array(K).fill(0.1), [1, K]) };
  for (let i = 0; i < 20; i++) await session.run(feeds);
  const perRun: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = performance.now();
    for (let i = 0; i < 100; i++) await session.run(feeds);
    perRun.push((performance.now() - t0) / 100);
  }
  perRun.sort((a, b) => a - b);
  console.log(`${name.padEnd(34)} ${perRun[3]!.toFixed(3)} ms`);
}

const nb = (bits: 4 | 8, n: number): Node => ({ kind: 'nbits', bits, n });
await time('2304x9216 int4', [nb(4, 9216)]);
await time('2304x9216 int8', [nb(8, 9216)]);
await time('2304x9216 fp32 Gemm', [{ kind: 'gemm', n: 9216 }]);
await time('q,k,v,gate,up int4: 5 nodes', [nb(4, 2048), nb(4, 1024), nb(4, 1024), nb(4, 9216), nb(4, 9216)]);
await time('q|k|v, gate|up int4: 2 fused nodes', [nb(4, 4096), nb(4, 18432)]);
