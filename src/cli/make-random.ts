/** `gemma-serve make-random`: writes a random-weight checkpoint; JSON summary on stdout. */
import { SHAPES } from '../checkpoint/config.ts';
import { makeRandomCheckpoint, parseSetArgs, type RandomDtype, type ShapeName } from '../checkpoint/make-random.ts';
import { UsageError, parseFlags } from './usage.ts';

/** Checkpoints past this many bytes get a progress line on stderr. */
const PROGRESS_THRESHOLD_BYTES = 256 * 1024 * 1024;

export async function makeRandom(argv: string[]): Promise<number> {
  const values = parseFlags('make-random', argv, {
    shape: { type: 'string' },
    seed: { type: 'string' },
    dtype: { type: 'string', default: 'f32' },
    out: { type: 'string' },
    set: { type: 'string', multiple: true, default: [] },
  });
  const shape = values.shape;
  if (shape === undefined) throw new UsageError('make-random: --shape is required');
  if (!Object.hasOwn(SHAPES, shape)) throw new UsageError(`make-random: --shape must be one of ${Object.keys(SHAPES).join(', ')}, got ${JSON.stringify(shape)}`);
  if (values.out === undefined) throw new UsageError('make-random: --out is required');
  const seedText = values.seed ?? '0';
  if (!/^\d+$/.test(seedText)) throw new UsageError(`make-random: --seed must be a non-negative integer, got ${JSON.stringify(seedText)}`);
  const dtype = values.dtype;
  if (dtype !== 'f32' && dtype !== 'bf16') throw new UsageError(`make-random: --dtype must be f32 or bf16, got ${JSON.stringify(dtype)}`);

  const t0 = performance.now();
  let lastPrint = 0;
  let printed = false;
  const result = makeRandomCheckpoint({
    shape: shape as ShapeName,
    seed: Number(seedText),
    dtype: dtype as RandomDtype,
    out: values.out,
    set: parseSetArgs(values.set),
    onProgress(done, total) {
      if (total < PROGRESS_THRESHOLD_BYTES) return;
      const now = performance.now();
      if (now - lastPrint < 1000 && done < total) return;
      lastPrint = now;
      printed = true;
      const pct = ((done / total) * 100).toFixed(1);
      process.stderr.write(`\rmake-random: ${gb(done)} / ${gb(total)} GB (${pct}%)`);
    },
  });
  if (printed) process.stderr.write('\n');
  const summary = {
    dir: result.dir,
    shape,
    dtype,
    seed: Number(seedText),
    weightFiles: result.weightFiles,
    totalBytes: result.totalBytes,
    seconds: round3((performance.now() - t0) / 1000),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  return 0;
}

function gb(bytes: number): string {
  return (bytes / 1e9).toFixed(2);
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
