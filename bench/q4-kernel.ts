/**
 * gemma-serve's int4 matmul (ai.gemma_serve.MatMulQ4, native/q4gemm.cc) against ONNX Runtime's
 * MatMulNBits on the same weights, at the batch sizes of decode and prefill:
 *
 *   npx tsx bench/q4-kernel.ts [--k 2304] [--n 9216] [--copies 12] [--m 1,2,4,8,16,64,512] [--rounds 2] [--threads 2] [--baseline DIR] [--no-ort] [--clock wall|cpu]
 *
 * One graph of --copies independent [K, N] int4 projections (block 32, float scales,
 * accuracy_level 4; --copies × the weights exceed the caches, so DRAM is in the figures, as in a
 * decode step), twice: with float32 scales (MatMulQ4 packs them float32: 5 bits a weight, as
 * exports before fp16 scale rounding) and with the same scales rounded to fp16 values (packed
 * fp16: 4.5 bits a weight, today's int4 exports). MatMulNBits runs the float32 graph.
 * --baseline DIR: also MatMulQ4 of another checkout (its bench/q4-kernel.ts and build/gs_ort.node,
 * e.g. the trunk before a kernel change; it needs this script's child mode) on both graphs.
 * --no-ort: MatMulQ4 arms only. --clock cpu: the process's CPU time instead of wall time, which
 * leaves out the time other processes hold the cores (a shared host); meant with --threads 1,
 * since ONNX Runtime's pool threads spin between operators and that spinning is CPU time too.
 * Each kernel runs in its own child process (two sessions in one process would leave each other's
 * spinning threads on the cores), alternating for --rounds rounds; per M the median of 9 runs
 * (3 from M 64) per round, then the median over rounds, in ms per projection.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DType, GraphBuilder } from '../src/engine/onnx-builder.ts';
import { NativeSession, OnnxType, loadNativeOrt } from '../src/engine/native/ort-native.ts';
import { formatTable, median, round } from '../src/cli/bench/stats.ts';
import { roundToF16 } from '../src/f16.ts';

const { values: o } = parseArgs({
  options: {
    k: { type: 'string', default: '2304' }, n: { type: 'string', default: '9216' }, copies: { type: 'string', default: '12' },
    m: { type: 'string', default: '1,2,4,8,16,64,512' }, rounds: { type: 'string', default: '2' }, threads: { type: 'string', default: '2' },
    child: { type: 'string' }, dir: { type: 'string' }, graph: { type: 'string', default: 'q4' }, baseline: { type: 'string' }, 'no-ort': { type: 'boolean', default: false }, clock: { type: 'string', default: 'wall' },
  },
});
const K = Number(o.k), N = Number(o.n), COPIES = Number(o.copies), threads = Number(o.threads);
const ms = o.m.split(',').map(Number);

/**
 * The graph file `name`.onnx: --copies MatMulNBits nodes over random weights, outputs
 * concatenated; `round` rounds each scale (to float32, or to an fp16 value).
 */
function build(dir: string, name: string, round: (s: number) => number): string {
  const blocks = Math.ceil(K / 32);
  const g = new GraphBuilder();
  const x = g.input('x', DType.FLOAT, ['m', K]);
  const chunks: Buffer[] = [];
  let offset = 0;
  const weight = (tensor: string, dtype: typeof DType.UINT8 | typeof DType.FLOAT, dims: number[], bytes: Buffer): string => {
    const ref = g.externalInitializer(tensor, dtype, dims, { location: `${name}.data`, offset, length: bytes.length });
    chunks.push(bytes);
    offset += bytes.length;
    return ref;
  };
  const outs: string[] = [];
  for (let i = 0; i < COPIES; i++) {
    const b = Buffer.alloc(N * blocks * 16);
    for (let j = 0; j < b.length; j++) b[j] = ((j + i * 7) * 2654435761) >>> 24;
    const s = Buffer.alloc(N * blocks * 4);
    for (let j = 0; j < N * blocks; j++) s.writeFloatLE(round(0.01 + 0.001 * ((j * 31) % 17)), j * 4);
    outs.push(g.op1('MatMulNBits', `mm${i}`, [x, weight(`B${i}`, DType.UINT8, [N, blocks, 16], b), weight(`S${i}`, DType.FLOAT, [N * blocks], s)],
      { K, N, bits: 4, block_size: 32, accuracy_level: 4 }, 'com.microsoft'));
  }
  g.output(g.op1('Concat', 'cat', outs, { axis: 1 }), 'y', DType.FLOAT, ['m', N * COPIES]);
  writeFileSync(join(dir, `${name}.data`), Buffer.concat(chunks));
  writeFileSync(join(dir, `${name}.onnx`), g.encode(name));
  return join(dir, `${name}.onnx`);
}

if (o.child !== undefined) {
  // A child: time one kernel, print {M: ms per projection} as JSON.
  const session = NativeSession.create(join(o.dir!, `${o.graph}.onnx`), { device: 'cpu', intraOpThreads: threads, int4Kernel: o.child === 'ort' ? 'ort' : 'gemma-serve' });
  const out: Record<number, number> = {};
  for (const m of ms) {
    const x = new Float32Array(m * K).map((_, i) => Math.sin(i * 0.37) * (1 + (i % 5)));
    const y = new Float32Array(m * N * COPIES);
    const run = (): void => session.run([{ name: 'x', type: OnnxType.FLOAT, dims: [m, K], data: x }], [{ name: 'y', type: OnnxType.FLOAT, dims: [m, N * COPIES], data: y }]);
    for (let i = 0; i < 2; i++) run();
    const times: number[] = [];
    const now = o.clock === 'cpu' ? (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; } : (): number => performance.now();
    for (let r = 0; r < (m >= 64 ? 3 : 9); r++) { const t0 = now(); run(); times.push(now() - t0); }
    out[m] = median(times) / COPIES;
  }
  process.stdout.write(JSON.stringify({ kernel: o.child, swapped: session.int4Swapped, ms: out }));
  session.release();
} else {
  const native = loadNativeOrt();
  if ('error' in native) throw new Error(native.error);
  const dir = mkdtempSync(join(tmpdir(), 'gs-q4-bench-'));
  try {
    build(dir, 'q4', Math.fround);
    build(dir, 'q4-f16', roundToF16);
    // [column, script, kernel, graph]
    const arms: [string, string, string, string][] = [
      ...(o['no-ort'] ? [] : [['MatMulNBits', process.argv[1]!, 'ort', 'q4'] as [string, string, string, string]]),
      ['MatMulQ4 f32 scales', process.argv[1]!, 'gemma-serve', 'q4'],
      ['MatMulQ4 f16 scales', process.argv[1]!, 'gemma-serve', 'q4-f16'],
      ...(o.baseline === undefined ? [] : [
        ['baseline MatMulQ4', join(o.baseline, 'bench', 'q4-kernel.ts'), 'gemma-serve', 'q4'] as [string, string, string, string],
        ['baseline MatMulQ4 f16', join(o.baseline, 'bench', 'q4-kernel.ts'), 'gemma-serve', 'q4-f16'] as [string, string, string, string],
      ]),
    ];
    const results = new Map<string, Record<number, number[]>>(arms.map(([col]) => [col, {}]));
    for (let r = 0; r < Number(o.rounds); r++) {
      for (const [col, script, kernel, graph] of arms) {
        const args = [...process.execArgv, script, '--child', kernel, '--dir', dir, '--clock', o.clock, '--graph', graph, '--k', o.k, '--n', o.n, '--copies', o.copies, '--m', o.m, '--threads', o.threads];
        const res = JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8' })) as { ms: Record<number, number> };
        for (const m of ms) (results.get(col)![m] ??= []).push(res.ms[m]!);
      }
    }
    const mb = (N * Math.ceil(K / 32) * 20 * COPIES) / 1e6;
    process.stdout.write(`[${K}, ${N}] int4 projections × ${COPIES} (${mb.toFixed(0)} MB with float32 scales), ${threads} threads, ${o.rounds} rounds, ${o.clock} clock; this CPU's kernel: ${native.addon.q4Kernel()}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
    const f16 = 'MatMulQ4 f16 scales';
    const speedUps = arms.filter(([col]) => col !== f16);
    process.stdout.write(formatTable(['M', ...arms.map(([col]) => `${col} ms`), ...speedUps.map(([col]) => `f16 vs ${col}`), 'f16 GMAC/s'], ms.map((m) => {
      const at = (col: string): number => median(results.get(col)![m]!);
      return [m, ...arms.map(([col]) => round(at(col), 3)), ...speedUps.map(([col]) => round(at(col) / at(f16), 2)), round((m * N * K) / at(f16) / 1e6, 0)];
    })));
    // every round's figure, since on a shared host the medians of a few rounds still drift
    for (const [col] of arms) process.stdout.write(`${col}: ${ms.map((m) => `M ${m} [${results.get(col)![m]!.map((x) => round(x, 3)).join(', ')}]`).join('; ')}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
