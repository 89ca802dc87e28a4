/**
 * What validating a request costs on the HTTP path: app.inject() of a typical chat body
 * (system + user message, sampling fields, stream_options) whose model is not the served one,
 * so the request is parsed and validated in full and answered 404 before any template,
 * tokenizer or generation work; and the same body with a wrong type (a 400 from validation).
 * Prints the median over --runs batches of the mean time per request.
 *
 *   npx tsx bench/request-validation.ts [--requests 2000] [--runs 9]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeRandomCheckpoint } from '../src/checkpoint/make-random.ts';
import { Engine } from '../src/engine/engine.ts';
import { buildApp } from '../src/server/app.ts';

const { values: opts } = parseArgs({ options: { requests: { type: 'string', default: '2000' }, runs: { type: 'string', default: '9' } } });
const requests = Number(opts.requests);
const runs = Number(opts.runs);

const dir = mkdtempSync(join(tmpdir(), 'gs-bench-validation-'));
const checkpointDir = join(dir, 'ckpt');
makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: checkpointDir, set: { max_position_embeddings: '256' } });
const engine = await Engine.start({ modelDir: checkpointDir, dataDir: join(dir, 'data'), kvCacheBytes: 8 * 2 ** 20 });
const app = buildApp({ engine });
await app.ready();

const typical = {
  model: 'not-the-served-model',
  messages: [
    { role: 'system', content: 'You are a helpful assistant. Answer briefly.' },
    { role: 'user', content: 'What is the capital of France? Explain in one sentence.' },
  ],
  max_tokens: 64, temperature: 0.7, top_p: 0.95, seed: 42, stop: ['\n\n'], stream: true,
  stream_options: { include_usage: true }, logprobs: false, user: 'bench',
};

async function measure(name: string, body: object, status: number): Promise<void> {
  const payload = JSON.stringify(body);
  const once = async (): Promise<void> => {
    const r = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { 'content-type': 'application/json' }, payload });
    if (r.statusCode !== status) throw new Error(`${name}: expected ${status}, got ${r.statusCode} ${r.body}`);
  };
  for (let i = 0; i < 500; i++) await once(); // warm-up: JIT and compiled validators
  const perRequestUs: number[] = [];
  for (let run = 0; run < runs; run++) {
    const t0 = performance.now();
    for (let i = 0; i < requests; i++) await once();
    perRequestUs.push(((performance.now() - t0) * 1000) / requests);
  }
  perRequestUs.sort((a, b) => a - b);
  console.log(`${name}: median ${perRequestUs[Math.floor(runs / 2)]!.toFixed(1)} us/request (min ${perRequestUs[0]!.toFixed(1)}, max ${perRequestUs.at(-1)!.toFixed(1)}; ${runs} x ${requests})`);
}

try {
  await measure('typical chat body, validated in full, 404 model_not_found', typical, 404);
  await measure('the same body with temperature "hot", 400', { ...typical, temperature: 'hot' }, 400);
} finally {
  await app.close();
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
}
