// GET /metrics on the tiny model after known traffic: every counter and histogram count equals
// what the requests' usage says, HTTP metrics by route and status, vLLM's names with
// metricsNames 'vllm', and no API key needed to scrape.
import t from 'tap';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { buildApp } from '../../src/server/app.ts';
import { EngineState } from '../../src/server/engine-state.ts';
import { buckets125 } from '../../src/server/metrics.ts';
import { startTinyServer } from './tiny-server.ts';

// Each step lasts at least 5 ms: the stream cancelled after 4 chunks is still running on any machine.
const { client, model, baseURL, engine } = await startTinyServer('metrics', { minStepMs: 5 });

type Series = { name: string; labels: Record<string, string>; value: number };

function parse(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([^{\s]+)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (m === null) throw new Error(`bad exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(url = baseURL): Promise<Series[]> {
  const r = await fetch(`${url}/metrics`);
  t.equal(r.status, 200);
  t.match(r.headers.get('content-type'), /^text\/plain/);
  return parse(await r.text());
}

/** The value of the series with exactly these labels (undefined if none). */
function value(all: Series[], name: string, labels: Record<string, string>): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  return all.find((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want)?.value;
}

/** Scrapes until `ready` holds (the server records a response when its socket says it is over). */
async function settled(ready: (all: Series[]) => boolean, url = baseURL): Promise<Series[]> {
  let all = await scrape(url);
  for (let i = 0; i < 100 && !ready(all); i++) {
    await new Promise((r) => setTimeout(r, 20));
    all = await scrape(url);
  }
  return all;
}

const messages = (text: string) => [{ role: 'user' as const, content: text }];
const P = 'gemma_serve:';
const M = { model_name: model };
const HISTOGRAMS = ['time_to_first_token_seconds', 'e2e_request_latency_seconds', 'request_queue_time_seconds', 'request_prefill_time_seconds',
  'request_decode_time_seconds', 'request_inference_time_seconds', 'request_prompt_tokens', 'request_generation_tokens'];

t.test('known traffic: counters and histogram counts equal the usage of the requests', async (t) => {
  const before = await scrape();
  t.equal(value(before, `${P}request_success_total`, { ...M, finished_reason: 'length' }) ?? 0, 0, 'nothing yet');
  t.equal(value(before, `${P}num_requests_running`, M), 0);
  t.equal(value(before, `${P}num_preemptions_total`, M), 0);
  t.ok(before.some((s) => s.name === 'process_cpu_user_seconds_total'), 'Node process metrics');
  t.ok(before.some((s) => s.name === 'nodejs_heap_size_total_bytes'));

  t.equal(value(before, 'gemma_serve:model_forward_seconds_total', M), 0, 'no forward pass yet');
  const t0 = performance.now();
  const maxTokens = [5, 7, 9];
  const usages: OpenAI.CompletionUsage[] = [];
  for (const [i, max_tokens] of maxTokens.entries()) {
    const req = { model, messages: messages(`Request number ${i} ${'word '.repeat(i * 3)}`), max_tokens, temperature: 0, ignore_eos: true };
    if (i === 1) {
      const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
      for await (const c of stream) if (c.usage) usages.push(c.usage);
    } else {
      usages.push((await client.chat.completions.create(req as never) as OpenAI.ChatCompletion).usage!);
    }
  }
  t.same(usages.map((u) => u.completion_tokens), maxTokens);
  const over = await fetch(`${baseURL}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: messages('too long'), max_tokens: engine.contextLength }),
  });
  t.equal(over.status, 400, 'over the context: 400');
  t.equal((await fetch(`${baseURL}/no/such/route`)).status, 404);

  const promptSum = usages.reduce((a, u) => a + u.prompt_tokens, 0);
  // The prompts share their chat template's start: prompt tokens counted are the computed ones.
  const cachedSum = usages.reduce((a, u) => a + u.prompt_tokens_details!.cached_tokens!, 0);
  const genSum = usages.reduce((a, u) => a + u.completion_tokens, 0);
  // The worker's idle stats (running, cache usage) follow the last response: wait for them too.
  const all = await settled((a) => value(a, `${P}http_requests_total`, { route: 'unmatched', method: 'GET', status: '404' }) === 1
    && value(a, `${P}num_requests_running`, M) === 0 && value(a, `${P}kv_cache_usage_perc`, M) === 0);
  t.equal(value(all, `${P}prompt_tokens_total`, M), promptSum - cachedSum, 'prompt tokens = sum of usage.prompt_tokens less the cached ones');
  t.equal(value(all, `${P}prefix_cache_queries_total`, M), promptSum, 'prefix cache queries: every prompt token');
  t.equal(value(all, `${P}prefix_cache_hits_total`, M), cachedSum, 'prefix cache hits: the cached tokens of the usage');
  t.equal(value(all, `${P}generation_tokens_total`, M), genSum, 'generation tokens = sum of usage.completion_tokens');
  t.equal(value(all, `${P}request_success_total`, { ...M, finished_reason: 'length' }), 3);
  t.equal(value(all, `${P}request_success_total`, { ...M, finished_reason: 'stop' }) ?? 0, 0);
  for (const h of HISTOGRAMS) t.equal(value(all, `${P}${h}_count`, M), 3, `${h}_count = 3 requests`);
  t.equal(value(all, `${P}request_prompt_tokens_sum`, M), promptSum);
  t.equal(value(all, `${P}request_generation_tokens_sum`, M), genSum);
  t.equal(value(all, `${P}inter_token_latency_seconds_count`, M), genSum - 3, 'one inter-token interval per token after the first');
  // Each step computes a prompt once and every generated token but the last (never fed back).
  t.equal(value(all, `${P}iteration_tokens_total_sum`, M), promptSum - cachedSum + genSum - 3, 'tokens computed over all steps');
  t.equal(value(all, `${P}request_prompt_tokens_bucket`, { ...M, le: '+Inf' }), 3);
  t.ok(buckets125(engine.contextLength).every((b) => value(all, `${P}request_prompt_tokens_bucket`, { ...M, le: String(b) }) !== undefined), "vLLM's 1-2-5 buckets");
  t.equal(value(all, `${P}time_to_first_token_seconds_bucket`, { ...M, le: '0.001' }) !== undefined, true, "vLLM's TTFT buckets");
  const e2e = value(all, `${P}e2e_request_latency_seconds_sum`, M)!;
  const ttft = value(all, `${P}time_to_first_token_seconds_sum`, M)!;
  t.ok(e2e > 0 && ttft > 0 && ttft <= e2e, 'latencies are positive and TTFT <= e2e');
  const forward = value(all, 'gemma_serve:model_forward_seconds_total', M)!;
  t.ok(forward > 0 && forward < e2e && forward <= (performance.now() - t0) / 1000, `forward passes took ${forward.toFixed(4)} s of the requests' ${e2e.toFixed(3)} s`);

  t.equal(value(all, `${P}num_requests_running`, M), 0);
  t.equal(value(all, `${P}num_requests_waiting`, M), 0);
  for (const layer_type of ['global', 'sliding']) {
    const u = value(all, `${P}kv_cache_usage_perc`, { ...M, layer_type });
    t.ok(u !== undefined && u >= 0 && u <= 1, `kv_cache_usage_perc{layer_type="${layer_type}"} in 0..1`);
  }
  t.equal(value(all, `${P}kv_cache_usage_perc`, M), 0, 'the overall series (no layer_type): all freed');

  const http = (route: string, method: string, status: string): number | undefined => value(all, `${P}http_requests_total`, { route, method, status });
  t.equal(http('/v1/chat/completions', 'POST', '200'), 3);
  t.equal(http('/v1/chat/completions', 'POST', '400'), 1);
  t.equal(http('unmatched', 'GET', '404'), 1);
  t.equal(value(all, `${P}http_request_duration_seconds_count`, { route: '/v1/chat/completions', method: 'POST', status: '200' }), 3);
});

t.test('a cancelled stream counts as finished_reason="abort" with the tokens it got', async (t) => {
  const before = await scrape();
  const gen0 = value(before, `${P}generation_tokens_total`, M)!;
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    // logprobs: one chunk per token, even while the detokenizer holds a byte run's text back.
    { model, messages: messages('cancel me'), max_tokens: 200, temperature: 0, stream: true, ignore_eos: true, logprobs: true } as never,
    { signal: controller.signal },
  ) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
  let seen = 0;
  try {
    for await (const _ of stream) if (++seen === 4) controller.abort();
  } catch { /* the abort */ }
  const all = await settled((a) => value(a, `${P}request_success_total`, { ...M, finished_reason: 'abort' }) === 1);
  t.equal(value(all, `${P}request_success_total`, { ...M, finished_reason: 'abort' }), 1);
  t.equal(value(all, `${P}e2e_request_latency_seconds_count`, M), 4, 'histograms count the cancelled request too');
  const gen = value(all, `${P}generation_tokens_total`, M)! - gen0;
  t.ok(gen >= 3 && gen < 200, `its generated tokens count (${gen})`);
  t.equal(value(all, `${P}request_generation_tokens_sum`, M)! - value(before, `${P}request_generation_tokens_sum`, M)!, gen);
});

t.test("metricsNames 'vllm': vLLM's exact names; the split cache gauge and forward time stay gemma_serve:", async (t) => {
  const app = buildApp({ engine: new EngineState(engine), metricsNames: 'vllm' });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
  const r = await c.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, ignore_eos: true } as never) as OpenAI.Completion;
  // The worker's idle stats follow the response: wait for them too.
  const all = await settled((a) => value(a, 'gemma_serve:http_requests_total', { route: '/v1/completions', method: 'POST', status: '200' }) === 1 && value(a, 'vllm:num_requests_running', M) === 0, url);
  t.equal(value(all, 'vllm:request_success_total', { ...M, finished_reason: 'length' }), 1);
  t.equal(value(all, 'vllm:prompt_tokens_total', M), r.usage!.prompt_tokens - r.usage!.prompt_tokens_details!.cached_tokens!);
  t.equal(value(all, 'vllm:prefix_cache_queries_total', M), engine.stats!.prefixCache.queries, 'vllm:prefix_cache_queries_total');
  t.equal(value(all, 'vllm:prefix_cache_hits_total', M), engine.stats!.prefixCache.hits, 'vllm:prefix_cache_hits_total');
  t.equal(value(all, 'vllm:generation_tokens_total', M), 6);
  for (const name of ['vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:num_preemptions_total']) t.equal(value(all, name, M), 0, name);
  for (const h of HISTOGRAMS) t.equal(value(all, `vllm:${h}_count`, M), 1, `vllm:${h}`);
  t.equal(value(all, 'vllm:inter_token_latency_seconds_count', M), 5);
  t.ok(value(all, 'vllm:iteration_tokens_total_count', M)! >= 6);
  t.same(all.filter((s) => s.name === 'vllm:kv_cache_usage_perc').map((s) => s.labels), [M], 'one overall series, as in vLLM');
  t.same(all.filter((s) => s.name === 'gemma_serve:kv_cache_usage_perc').map((s) => s.labels.layer_type).sort(), ['global', 'sliding']);
  const engineSeries = all.filter((s) => s.labels.model_name !== undefined);
  // Two series of ours have no vLLM counterpart and keep their own names.
  const ours = ['gemma_serve:kv_cache_usage_perc', 'gemma_serve:model_forward_seconds_total'];
  t.ok(engineSeries.every((s) => s.name.startsWith('vllm:') || ours.includes(s.name)), 'engine metrics under vllm:');
});

t.test('/metrics needs no API key (as vLLM); the API still does', async (t) => {
  const app = buildApp({ engine: new EngineState(engine), apiKeys: ['sekrit'] });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  t.equal((await fetch(`${url}/metrics`)).status, 200);
  t.equal((await fetch(`${url}/v1/models`)).status, 401);
  const all = await settled((a) => value(a, 'gemma_serve:http_requests_total', { route: '/v1/models', method: 'GET', status: '401' }) === 1, url);
  t.equal(value(all, 'gemma_serve:http_requests_total', { route: '/v1/models', method: 'GET', status: '401' }), 1, 'refused requests are counted');
});

t.test('a closed app stops listening to the engine it served (the engine outlives it)', async (t) => {
  const listeners = (): number => (engine as unknown as { stepListeners: Set<unknown> }).stepListeners.size;
  const before = listeners();
  for (let i = 0; i < 3; i++) {
    const app = buildApp({ engine: new EngineState(engine) });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    t.equal((await fetch(`${url}/metrics`)).status, 200); // the scrape attaches the step listener
    t.equal(listeners(), before + 1, `app ${i}: one listener while it runs`);
    await app.close();
    t.equal(listeners(), before, `app ${i}: none after it closed`);
  }
});

t.test('n = 4 prefills its prompt once (prompt_tokens_total counts computed tokens); usage.prompt_tokens_details.cached_tokens is what was reused', async (t) => {
  const BLOCK = 16; // the engine's block size
  const prompt = `Prefix caching check: ${Array.from({ length: 40 }, (_, i) => `w${i * 7}`).join(' ')}`;
  const before = await scrape();
  const counter = (all: Series[], name: string): number => value(all, `${P}${name}`, M) ?? 0;
  const r = await client.completions.create({ model, prompt, n: 4, max_tokens: 3, temperature: 0, ignore_eos: true } as never) as OpenAI.Completion;
  const L = r.usage!.prompt_tokens;
  const reusable = Math.floor((L - 1) / BLOCK) * BLOCK;
  t.ok(L > 2 * BLOCK, `a prompt of ${L} tokens`);
  const first = r.usage!.prompt_tokens_details!.cached_tokens!;
  t.equal(first, 0, 'the choice that computed the prompt reused nothing (the prompt is new)');
  const all = await scrape(); // the choices' trackers counted before the response was sent
  // The first choice computes all L tokens; each of the 3 others reuses its full blocks and computes the rest.
  t.equal(counter(all, 'prompt_tokens_total') - counter(before, 'prompt_tokens_total'), L + 3 * (L - reusable), `prompt tokens computed: ${L} + 3 * ${L - reusable}`);
  t.equal(counter(all, 'prefix_cache_queries_total') - counter(before, 'prefix_cache_queries_total'), 4 * L, 'queries: 4 prompts');
  t.equal(counter(all, 'prefix_cache_hits_total') - counter(before, 'prefix_cache_hits_total'), 3 * reusable, 'hits: 3 reused prefixes');
  const again = await client.completions.create({ model, prompt, max_tokens: 3, temperature: 0, ignore_eos: true } as never) as OpenAI.Completion;
  t.equal(again.usage!.prompt_tokens_details!.cached_tokens, reusable, 'the same prompt again: its full blocks reused');
  t.same(again.choices[0]!.text, r.choices[0]!.text, 'same text');
  const chat = async (): Promise<OpenAI.ChatCompletion> => await client.chat.completions.create({ model, messages: messages(prompt), max_tokens: 2, temperature: 0 } as never) as OpenAI.ChatCompletion;
  const c1 = await chat();
  const c2 = await chat();
  t.equal(c1.usage!.prompt_tokens_details!.cached_tokens, 0, 'chat: a new prompt reuses nothing');
  t.equal(c2.usage!.prompt_tokens_details!.cached_tokens, Math.floor((c2.usage!.prompt_tokens - 1) / BLOCK) * BLOCK, 'chat: the same messages again reuse their full blocks');
});
