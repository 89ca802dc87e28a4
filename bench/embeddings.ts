/**
 * Embedding throughput through the engine (no HTTP), and what embeddings do to a chat decode
 * running beside them.
 *
 *   npx tsx bench/embeddings.ts [MODEL_DIR] [--tokens 256] [--concurrency 1,8] [--inputs 32] [--chat-tokens 64] [--threads N] [--json FILE]
 *
 * MODEL_DIR: an export or a checkpoint (exported once into a temporary data dir); none: a tiny
 * random-weight model (1024-token context). What each number includes:
 * - embeddings at concurrency C: C lanes each call Engine.embed on the next of --inputs inputs
 *   of --tokens random token ids (mean pooling) as soon as their previous one returns; wall time
 *   from the first submit to the last vector, after one unmeasured round. inputs/s and prompt
 *   tokens/s over that time. Everything an embedding costs is in it: scheduling, the prefill
 *   chunks, the hidden-state copy, pooling, the vector's message to the main thread.
 * - chat decode: one greedy generation (16-token prompt, ignore_eos, --chat-tokens tokens),
 *   timed from its 2nd token to its last: alone, then while 8 embedding lanes run without pause
 *   (the embeddings' rate during it is printed too).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeRandomCheckpoint } from '../src/checkpoint/make-random.ts';
import { Engine } from '../src/engine/engine.ts';
import { seededRandom } from '../src/cli/bench/prompts.ts';
import { formatTable, round } from '../src/cli/bench/stats.ts';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    tokens: { type: 'string', default: '256' },
    concurrency: { type: 'string', default: '1,8' },
    inputs: { type: 'string', default: '32' },
    'chat-tokens': { type: 'string', default: '64' },
    threads: { type: 'string' },
    json: { type: 'string' },
  },
});
const tokens = Number(opts.tokens);
const levels = opts.concurrency.split(',').map(Number);
const numInputs = Number(opts.inputs);
const chatTokens = Number(opts['chat-tokens']);
if (!(tokens >= 1) || levels.some((c) => !Number.isInteger(c) || c < 1) || !(numInputs >= 1) || !(chatTokens >= 2)) {
  throw new Error('usage: bench/embeddings.ts [MODEL_DIR] [--tokens 256] [--concurrency 1,8] [--inputs 32] [--chat-tokens 64] [--threads N] [--json FILE]');
}

const tmp = mkdtempSync(join(tmpdir(), 'gs-bench-embed-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
let modelDir = positionals[0];
if (modelDir === undefined) {
  modelDir = join(tmp, 'tiny');
  makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: modelDir, set: { max_position_embeddings: '1024' } });
}
const maxLevel = Math.max(8, ...levels);
const engine = await Engine.start({ modelDir, dataDir: tmp, maxNumSeqs: maxLevel + 1, ...(opts.threads !== undefined ? { threads: Number(opts.threads) } : {}) });
const rand = seededRandom(1);
const randomIds = (n: number): number[] => Array.from({ length: n }, () => 1 + Math.floor(rand() * (engine.vocabSize - 1)));
const inputs = Array.from({ length: numInputs }, () => randomIds(tokens));

/** C lanes embedding `inputs` back to back; seconds from the first submit to the last vector. */
async function embedLanes(c: number, list: readonly number[][]): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => {
    while (next < list.length) await engine.embed(list[next++]!);
  }));
  return (performance.now() - t0) / 1000;
}

/** Seconds per decode step of one greedy generation, from its 2nd token to its last. */
async function chatStep(): Promise<number> {
  let first = 0;
  let last = 0;
  let n = 0;
  for await (const ev of engine.generate({ promptIds: randomIds(16), maxTokens: chatTokens, temperature: 0, ignoreEos: true })) {
    if (ev.type !== 'token') continue;
    n++;
    if (n === 2) first = performance.now();
    last = performance.now();
  }
  return (last - first) / 1000 / (n - 2);
}

const header = ['what', 'inputs/s', 'tokens/s', 'chat ms/token'];
const rows: (string | number | null)[][] = [];
await embedLanes(Math.max(...levels), inputs.slice(0, Math.max(...levels))); // warm-up
for (const c of levels) {
  const s = await embedLanes(c, inputs);
  rows.push([`embeddings, concurrency ${c}`, round(numInputs / s, 2), round(numInputs * tokens / s, 1), '']);
}
const alone = await chatStep();
rows.push(['chat decode alone', '', '', round(alone * 1000, 2)]);
// 8 lanes of embeddings without pause while one chat decodes.
let stop = false;
let embedded = 0;
const t0 = performance.now();
const lanes = Promise.all(Array.from({ length: 8 }, async () => {
  for (let i = 0; !stop; i++) { await engine.embed(inputs[i % numInputs]!); embedded++; }
}));
const beside = await chatStep();
stop = true;
const during = (performance.now() - t0) / 1000;
await lanes;
rows.push(['chat decode beside 8 embedding lanes', round(embedded / during, 2), round(embedded * tokens / during, 1), round(beside * 1000, 2)]);

console.log(`model ${engine.modelId} (hidden ${engine.embeddingSize}), ${tokens}-token inputs, ${cpus().length} CPUs, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(formatTable(header, rows));
if (opts.json !== undefined) writeFileSync(opts.json, `${JSON.stringify({ tokens, header, rows }, null, 2)}\n`);
await engine.close();
