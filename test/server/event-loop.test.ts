// Nothing slow runs on the HTTP event loop: while 4 MiB and 8k-token prompts are templated and
// tokenized (in the text worker), /health keeps answering; an over-long prompt is refused from
// its characters alone, before any tokenizing.
import t from 'tap';
import { startTinyServer } from './tiny-server.ts';

const s = await startTinyServer('event-loop');
const chat = (content: string) => fetch(`${s.baseURL}/v1/chat/completions`, {
  method: 'POST', headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ model: s.model, messages: [{ role: 'user', content }], max_tokens: 1 }),
});

/** Polls /health every 10 ms until `done` settles; the latencies in ms. */
async function healthWhile(done: Promise<unknown>): Promise<number[]> {
  let over = false;
  void done.finally(() => { over = true; });
  const ms: number[] = [];
  while (!over) {
    const t0 = performance.now();
    const r = await fetch(`${s.baseURL}/health`);
    await r.arrayBuffer();
    ms.push(performance.now() - t0);
    await new Promise((res) => setTimeout(res, 10));
  }
  return ms.sort((a, b) => a - b);
}

t.test('a 4 MiB prompt gets its 400 context_length_exceeded at once, /health answering meanwhile', async (t) => {
  const content = 'word '.repeat((4 * 2 ** 20 - 1024) / 5);
  const t0 = performance.now();
  const res = chat(content);
  const health = await healthWhile(res);
  const r = await res;
  const elapsed = performance.now() - t0;
  t.equal(r.status, 400);
  const body = await r.json() as { error: { code: string; param: string; message: string } };
  t.equal(body.error.code, 'context_length_exceeded');
  t.equal(body.error.param, 'messages');
  t.match(body.error.message, /at least \d+ tokens/);
  t.comment(`400 after ${elapsed.toFixed(0)} ms; /health p50 ${health[Math.floor(health.length / 2)]?.toFixed(1)} ms, max ${health.at(-1)?.toFixed(1)} ms over ${health.length} probes`);
});

t.test('long prompts (43k tokens each) are tokenized off the loop: /health answers within 50 ms (median)', async (t) => {
  // /tokenize has no length bound, so these are really tokenized (in the text worker).
  const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon'];
  const prompt = Array.from({ length: 8000 }, (_, i) => words[i % words.length]).join(' ');
  const runs = Array.from({ length: 4 }, () => fetch(`${s.baseURL}/tokenize`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: s.model, prompt }),
  }).then(async (r) => ({ status: r.status, body: await r.json() as { count: number } })));
  const health = await healthWhile(Promise.all(runs));
  for (const r of await Promise.all(runs)) {
    t.equal(r.status, 200);
    t.ok(r.body.count >= 8000, `${r.body.count} tokens`);
  }
  const p50 = health[Math.floor(health.length / 2)]!;
  t.ok(p50 < 50, `/health p50 ${p50.toFixed(1)} ms (max ${health.at(-1)!.toFixed(1)} ms, ${health.length} probes)`);
});

t.test('4 MiB prompts and 8k-token prompts together: /health answers within 50 ms (median)', async (t) => {
  const big = 'word '.repeat((4 * 2 ** 20 - 1024) / 5);
  const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon'];
  const long = Array.from({ length: 8000 }, (_, i) => words[i % words.length]).join(' ');
  const runs = [
    ...Array.from({ length: 2 }, () => chat(big).then((r) => r.status)),
    ...Array.from({ length: 2 }, () => fetch(`${s.baseURL}/tokenize`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: s.model, prompt: long }),
    }).then((r) => r.status)),
  ];
  const health = await healthWhile(Promise.all(runs));
  t.same(await Promise.all(runs), [400, 400, 200, 200]);
  const p50 = health[Math.floor(health.length / 2)]!;
  t.ok(p50 < 50, `/health p50 ${p50.toFixed(1)} ms (max ${health.at(-1)!.toFixed(1)} ms, ${health.length} probes)`);
});
