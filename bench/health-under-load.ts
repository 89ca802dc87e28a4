// /health latency while clients send 1 MiB prompts, the time to the 400 for a 4 MiB prompt, and
// the real Gemma tokenizer's load and encode times (issue: nothing slow on the event loop).
// A tiny random model with Gemma's 256,000-token vocabulary and its real tokenizer files.
//   npx tsx bench/health-under-load.ts [--seconds 30] [--clients 4] [--mib 1] [--rounds 3]
// Rounds alternate request JSON parsed in its own thread (the default) and on the event loop.
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { makeRandomCheckpoint } from '../src/checkpoint/make-random.ts';
import { Engine } from '../src/engine/engine.ts';
import { loadTokenizer } from '../src/engine/tokenizer.ts';
import { buildApp } from '../src/server/app.ts';
import { GEMMA_TOKENIZER_CONFIG, GEMMA_TOKENIZER_JSON } from '../test/text/gemma-tokenizer.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '30' }, clients: { type: 'string', default: '4' }, mib: { type: 'string', default: '1' }, rounds: { type: 'string', default: '3' } } });
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const clients = Number(values.clients);
const mib = Number(values.mib);
const pct = (xs: number[], p: number): number => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

let t0 = performance.now();
const tok = loadTokenizer(GEMMA_TOKENIZER_JSON, GEMMA_TOKENIZER_CONFIG);
console.log(`tokenizer load (main thread): ${(performance.now() - t0).toFixed(0)} ms`);
const words = 'The quick brown fox jumps over the lazy dog while the server keeps answering its probes. '.split(' ');
for (const n of [1000, 8000]) {
  let text = '';
  for (let i = 0; tok.encode(text).length < n; i += 50) text += `${words.slice(0).join(' ')} ${i} `;
  const times: number[] = [];
  for (let r = 0; r < 5; r++) { t0 = performance.now(); tok.encode(text); times.push(performance.now() - t0); }
  times.sort((a, b) => a - b);
  console.log(`encode ~${n} tokens (${tok.encode(text).length}): median ${pct(times, 0.5).toFixed(1)} ms`);
}

const dir = mkdtempSync(join(tmpdir(), 'gs-health-'));
const ckpt = join(dir, 'ckpt');
makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: ckpt, set: { vocab_size: '256000', max_position_embeddings: '8192' } });
copyFileSync(GEMMA_TOKENIZER_JSON, join(ckpt, 'tokenizer.json'));
copyFileSync(GEMMA_TOKENIZER_CONFIG, join(ckpt, 'tokenizer_config.json'));
t0 = performance.now();
const engine = await Engine.start({ modelDir: ckpt, dataDir: join(dir, 'data'), kvCacheBytes: 64 * 2 ** 20 });
console.log(`Engine.start (export, main tokenizer, text worker, model): ${(performance.now() - t0).toFixed(0)} ms`);
const chat = (url: string, content: string) => fetch(`${url}/v1/chat/completions`, {
  method: 'POST', headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ model: engine.modelId, messages: [{ role: 'user', content }], max_tokens: 1 }),
}).then(async (r) => { await r.arrayBuffer(); return r.status; });

// The load's clients run in a thread of their own: in the server's thread their JSON.stringify
// and fetch bodies would block the loop being measured.
const CLIENTS = `
const { workerData, parentPort } = require('node:worker_threads');
const { url, model, mib, seconds, clients } = workerData;
const body = JSON.stringify({ model, messages: [{ role: 'user', content: 'lorem ipsum dolor sit amet '.repeat(Math.floor((mib * 2 ** 20) / 27)) }], max_tokens: 1 });
const end = Date.now() + seconds * 1000;
let sent = 0; const statuses = {};
Promise.all(Array.from({ length: clients }, async () => {
  while (Date.now() < end) {
    const r = await fetch(url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    await r.arrayBuffer(); sent++; statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  }
})).then(() => parentPort.postMessage({ sent, statuses }));
`;

/** One round: a server (JSON parsed in its thread, or on the loop), the load for `seconds`, /health probed every 20 ms. */
async function round(jsonThread: boolean): Promise<{ health: number[]; sent: number; to400: number[] }> {
  const app = buildApp({ engine, jsonThreadMinBytes: jsonThread ? undefined : Infinity });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const big = 'lorem ipsum dolor sit amet '.repeat(Math.floor((4 * 2 ** 20 - 4096) / 27));
  const to400: number[] = [];
  for (let i = 0; i < 3; i++) { t0 = performance.now(); const s = await chat(url, big); to400.push(performance.now() - t0); if (s !== 400) console.log(`unexpected status ${s}`); }
  const load = new Worker(CLIENTS, { eval: true, workerData: { url, model: engine.modelId, mib, seconds, clients } });
  const done = new Promise<{ sent: number; statuses: Record<string, number> }>((res) => load.once('message', res));
  let over = false;
  void done.then(() => { over = true; });
  const health: number[] = [];
  while (!over) {
    t0 = performance.now();
    const r = await fetch(`${url}/health`);
    await r.arrayBuffer();
    health.push(performance.now() - t0);
    await new Promise((res) => setTimeout(res, 20));
  }
  const { sent } = await done;
  await load.terminate();
  await app.close();
  return { health: health.sort((a, b) => a - b), sent, to400 };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results = { thread: [] as { p50: number; p99: number; max: number; sent: number; to400: number }[], loop: [] as { p50: number; p99: number; max: number; sent: number; to400: number }[] };
for (let r = 0; r < rounds; r++) {
  for (const mode of ['thread', 'loop'] as const) {
    const { health, sent, to400 } = await round(mode === 'thread');
    const row = { p50: pct(health, 0.5), p99: pct(health, 0.99), max: health.at(-1)!, sent, to400: median(to400) };
    results[mode].push(row);
    console.log(`round ${r + 1}, JSON parsed ${mode === 'thread' ? 'in its thread' : 'on the loop'}: ${clients} clients x ${mib} MiB for ${seconds} s, ${sent} requests; /health over ${health.length} probes p50 ${row.p50.toFixed(1)} ms, p99 ${row.p99.toFixed(1)} ms, max ${row.max.toFixed(1)} ms; 4 MiB prompt -> 400 in ${row.to400.toFixed(0)} ms`);
  }
}
for (const mode of ['thread', 'loop'] as const) {
  const rs = results[mode];
  console.log(`median of ${rounds} rounds, JSON ${mode === 'thread' ? 'in its thread' : 'on the loop'}: /health p50 ${median(rs.map((x) => x.p50)).toFixed(1)} ms, p99 ${median(rs.map((x) => x.p99)).toFixed(1)} ms, max ${median(rs.map((x) => x.max)).toFixed(1)} ms; requests ${median(rs.map((x) => x.sent))}; 4 MiB -> 400 ${median(rs.map((x) => x.to400)).toFixed(0)} ms`);
}
await engine.close();
rmSync(dir, { recursive: true, force: true });
