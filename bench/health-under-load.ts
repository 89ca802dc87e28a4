// /health latency while clients send 1 MiB prompts, the time to the 400 for a 4 MiB prompt, and
// the real Gemma tokenizer's load and encode times (issue: nothing slow on the event loop).
// A tiny random model with Gemma's 256,000-token vocabulary and its real tokenizer files.
//   npx tsx bench/health-under-load.ts [--seconds 30] [--clients 4] [--mib 1]
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { AddressInfo } from 'node:net';
import { makeRandomCheckpoint } from '../src/checkpoint/make-random.ts';
import { Engine } from '../src/engine/engine.ts';
import { loadTokenizer } from '../src/engine/tokenizer.ts';
import { buildApp } from '../src/server/app.ts';
import { GEMMA_TOKENIZER_CONFIG, GEMMA_TOKENIZER_JSON } from '../test/text/gemma-tokenizer.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '30' }, clients: { type: 'string', default: '4' }, mib: { type: 'string', default: '1' } } });
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
const app = buildApp({ engine });
await app.listen({ host: '127.0.0.1', port: 0 });
const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
const chat = (content: string) => fetch(`${url}/v1/chat/completions`, {
  method: 'POST', headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ model: engine.modelId, messages: [{ role: 'user', content }], max_tokens: 1 }),
}).then(async (r) => { await r.arrayBuffer(); return r.status; });

const big = 'lorem ipsum dolor sit amet '.repeat(Math.floor((4 * 2 ** 20 - 4096) / 27));
const to400: number[] = [];
for (let i = 0; i < 3; i++) { t0 = performance.now(); const s = await chat(big); to400.push(performance.now() - t0); if (s !== 400) console.log(`unexpected status ${s}`); }
console.log(`4 MiB prompt -> 400: ${to400.map((x) => x.toFixed(0)).join(', ')} ms`);

const prompt = 'lorem ipsum dolor sit amet '.repeat(Math.floor((mib * 2 ** 20) / 27));
const end = Date.now() + seconds * 1000;
let sent = 0;
const statuses = new Map<number, number>();
const load = Array.from({ length: clients }, async () => {
  while (Date.now() < end) { const s = await chat(prompt); sent++; statuses.set(s, (statuses.get(s) ?? 0) + 1); }
});
const health: number[] = [];
while (Date.now() < end) {
  t0 = performance.now();
  const r = await fetch(`${url}/health`);
  await r.arrayBuffer();
  health.push(performance.now() - t0);
  await new Promise((res) => setTimeout(res, 20));
}
await Promise.all(load);
health.sort((a, b) => a - b);
console.log(`${clients} clients x ${mib} MiB prompts for ${seconds} s: ${sent} requests (${[...statuses].map(([s, n]) => `${n}x${s}`).join(', ')})`);
console.log(`/health over ${health.length} probes: p50 ${pct(health, 0.5).toFixed(1)} ms, p99 ${pct(health, 0.99).toFixed(1)} ms, max ${health.at(-1)!.toFixed(1)} ms`);
await app.close();
await engine.close();
rmSync(dir, { recursive: true, force: true });
