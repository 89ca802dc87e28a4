/**
 * llama.cpp's speed on a GGUF of the same model (bench/llama-cpp/to-gguf.ts), measured as
 * `npm run bench:engine` measures ours: prefill of a 512-token prompt (prompt → first token) and
 * decode tokens/s at batch 1 and B, greedy, never stopping at EOS. llama.cpp runs in-process
 * through node-llama-cpp's prebuilt CPU binaries (an npm package, so it installs offline from
 * the registry; it is not a gemma-serve dependency: install it in a folder of its own):
 *
 *   npm i --prefix /tmp/llcpp node-llama-cpp@3.22.1
 *   npx tsx bench/llama-cpp/bench.ts FILE.gguf --node-llama-cpp /tmp/llcpp [--threads 2] [--batches 1,8] [--prompt 512] [--steps 32] [--runs 3]
 *
 * Decode at batch B: B sequences of one context, each after a 16-token prompt, generate --steps
 * tokens concurrently (node-llama-cpp puts the B pending tokens into one llama_decode); the time
 * per step is the wall time over the last --steps - 1 steps; median over --runs.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { formatTable, median, round } from '../../src/cli/bench/stats.ts';

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'node-llama-cpp': { type: 'string' }, threads: { type: 'string', default: '2' }, batches: { type: 'string', default: '1,8' },
    prompt: { type: 'string', default: '512' }, steps: { type: 'string', default: '32' }, runs: { type: 'string', default: '3' },
  },
});
const file = positionals[0];
if (file === undefined || o['node-llama-cpp'] === undefined) {
  throw new Error('usage: bench/llama-cpp/bench.ts FILE.gguf --node-llama-cpp DIR [--threads 2] [--batches 1,8] [--prompt 512] [--steps 32] [--runs 3]');
}
const threads = Number(o.threads), promptLen = Number(o.prompt), steps = Number(o.steps), runs = Number(o.runs);
const batches = o.batches.split(',').map(Number);

// The package's ESM entry, from the folder it was installed into.
// node-llama-cpp is not a dependency (loaded from a folder given on the command line), so it
// has no types here: its objects are used untyped.
const lib = (await import(pathToFileURL(join(o['node-llama-cpp'], 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href)) as {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- untyped, see above
  getLlama(opts: Record<string, unknown>): Promise<any>;
};
const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: 'warn' });
const t0 = performance.now();
const model = await llama.loadModel({ modelPath: file, useMmap: true });
const loadS = (performance.now() - t0) / 1000;
const vocab: number = model.fileInfo.metadata.tokenizer.ggml.tokens.length;

let seed = 12345;
const randomIds = (n: number): number[] => Array.from({ length: n }, () => 3 + ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % (vocab - 3)));

/** One sequence's token generator, greedy. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- an untyped node-llama-cpp sequence
const generate = (seq: any, ids: number[]): AsyncGenerator<number> => seq.evaluate(ids, { temperature: 0 });

async function prefill(): Promise<number> {
  const ctx = await model.createContext({ contextSize: promptLen + 64, batchSize: promptLen, threads, sequences: 1 });
  try {
    const seq = ctx.getSequence();
    const ids = randomIds(promptLen);
    const start = performance.now();
    for await (const _ of generate(seq, ids)) break;
    return performance.now() - start;
  } finally {
    await ctx.dispose();
  }
}

/** Mean ms per decode step of B sequences generating together. */
async function decode(B: number): Promise<number> {
  const ctx = await model.createContext({ contextSize: B * (16 + steps + 8), batchSize: Math.max(16 * B, 64), threads, sequences: B });
  try {
    const stamps: number[][] = Array.from({ length: B }, () => []);
    await Promise.all(Array.from({ length: B }, async (_, b) => {
      const seq = ctx.getSequence();
      for await (const _t of generate(seq, randomIds(16))) {
        stamps[b]!.push(performance.now());
        if (stamps[b]!.length >= steps) break;
      }
    }));
    // steps 2..steps of every sequence: from the latest first token to the latest last token
    const first = Math.max(...stamps.map((s) => s[0]!));
    const last = Math.max(...stamps.map((s) => s[s.length - 1]!));
    return (last - first) / (steps - 1);
  } finally {
    await ctx.dispose();
  }
}

console.log(`${file}: llama.cpp (node-llama-cpp), ${threads} threads; loaded in ${loadS.toFixed(2)} s\n${String(llama.systemInfo).trim()}`);
const rows: (string | number | null)[][] = [];
const pre: number[] = [];
for (let r = 0; r < runs; r++) pre.push(await prefill());
rows.push([`prefill ${promptLen}`, promptLen, round(median(pre), 2), round((promptLen * 1000) / median(pre), 2), '-']);
for (const B of batches) {
  const ms: number[] = [];
  for (let r = 0; r < runs; r++) ms.push(await decode(B));
  const m = median(ms);
  rows.push([`decode batch ${B}`, B, round(m, 2), round((B * 1000) / m, 2), round(1000 / m, 2)]);
}
console.log(formatTable(['measure', 'tokens', 'median ms', 'tokens/s', 'per seq tok/s'], rows));
await model.dispose();
await llama.dispose();
