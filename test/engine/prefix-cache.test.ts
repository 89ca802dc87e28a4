// Prefix caching through the real engine on a tiny random ONNX model with a small sliding window
// (W = 20, blocks of 16, so the ring is 3 blocks with the cache on): a request whose prompt shares
// a prefix with an earlier one gives exactly the greedy ids and, within 1e-4, the token logprobs
// of the same request on an engine without the cache, for shared prefixes shorter than W, W,
// W ± 1, over 2W, block aligned and not, whole-prompt and chunked; usage says what was reused;
// prompt logprobs (no hit by design) agree too; n = 4 choices compute their prompt once.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine, type EngineOptions, type GenerateRequest, type Usage } from '../../src/engine/engine.ts';
import type { TokenLogprobs } from '../../src/engine/types.ts';

const W = 20;
const BLOCK = 16;
const dir = mkdtempSync(join(tmpdir(), 'gs-prefix-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const dataDir = join(dir, 'data');
const ckpt = join(dir, 'ckpt');
const { config } = makeRandomCheckpoint({ shape: 'tiny', seed: 3, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '256', sliding_window: String(W) } });

async function start(opts: Omit<EngineOptions, 'dataDir' | 'modelDir'>): Promise<Engine> {
  const engine = await Engine.start({ dataDir, modelDir: ckpt, ...opts });
  t.teardown(() => engine.close());
  return engine;
}

const tokens = (salt: number, len: number): number[] => Array.from({ length: len }, (_, j) => 3 + ((salt * 131 + j * 17 + j * j * 7) % (config.vocabSize - 3)));

interface Result { ids: number[]; logprobs: TokenLogprobs[]; prompt: readonly TokenLogprobs[] | null; usage: Usage | null }

async function generate(engine: Engine, req: GenerateRequest): Promise<Result> {
  const r: Result = { ids: [], logprobs: [], prompt: null, usage: null };
  for await (const e of engine.generate({ ignoreEos: true, temperature: 0, logprobs: 2, ...req })) {
    if (e.type === 'token') { r.ids.push(e.tokenId); r.logprobs.push(e.logprobs!); }
    if (e.type === 'prompt') r.prompt = e.logprobs;
    if (e.type === 'finish') r.usage = e.usage;
  }
  return r;
}

/** Largest difference between two logprob lists (chosen and alternatives). */
function maxDiff(a: readonly TokenLogprobs[], b: readonly TokenLogprobs[]): number {
  let d = a.length === b.length ? 0 : Infinity;
  a.forEach((x, i) => {
    const y = b[i];
    if (y === undefined) { d = Infinity; return; }
    d = Math.max(d, Math.abs(x.logprob - y.logprob));
    x.top.forEach((tp, j) => { d = Math.max(d, y.top[j]?.id === tp.id ? Math.abs(tp.logprob - y.top[j]!.logprob) : Infinity); });
  });
  return d;
}

const off = await start({ maxNumSeqs: 4, prefixCaching: false });
t.equal(off.prefixCaching, false, 'off when asked');

for (const [name, opts] of [['whole prompts', {}], ['chunks of 16', { maxNumBatchedTokens: 16 }], ['chunks of 24', { maxNumBatchedTokens: 24 }]] as const) {
  t.test(`${name}: outputs equal with and without the cache for shared prefixes around the window`, async (t) => {
    const on = await start({ maxNumSeqs: 4, ...opts });
    t.equal(on.prefixCaching, true, 'on by default');
    for (const shared of [W - 5, W - 1, W, W + 1, 2 * W + 5, 32, 48, 64, 67, 100]) {
      const prefix = tokens(shared, shared);
      // Distinct first suffix tokens: exactly `shared` tokens are common.
      const first = [...prefix, 400, ...tokens(1, 9)];
      const second = [...prefix, 401, ...tokens(2, 6)];
      await generate(on, { promptIds: first, maxTokens: 1 });
      const got = await generate(on, { promptIds: second, maxTokens: 8 });
      const want = await generate(off, { promptIds: second, maxTokens: 8 });
      const cached = Math.floor(shared / BLOCK) * BLOCK;
      const chunked = 'maxNumBatchedTokens' in opts;
      // Whole prompts keep only the last ring's sliding blocks of the first request: a hit needs its window's.
      const usable = chunked || Math.floor((cached - W + 1) / BLOCK) >= Math.ceil(first.length / BLOCK) - 3 || cached === 0;
      t.same(got.ids, want.ids, `shared ${shared}: greedy ids`);
      t.ok(maxDiff(got.logprobs, want.logprobs) < 1e-4, `shared ${shared}: token logprobs within 1e-4 (${maxDiff(got.logprobs, want.logprobs).toExponential(1)})`);
      if (usable) t.equal(got.usage?.prompt_tokens_details.cached_tokens, cached, `shared ${shared}: ${cached} cached`);
      else t.ok((got.usage?.prompt_tokens_details.cached_tokens ?? -1) % BLOCK === 0, `shared ${shared}: ${got.usage?.prompt_tokens_details.cached_tokens} cached`);
      t.equal(want.usage?.prompt_tokens_details.cached_tokens, 0, 'nothing cached without the cache');
      // The same prompt again: all but its last block-partial tail is reused.
      const again = await generate(on, { promptIds: second, maxTokens: 8 });
      t.same(again.ids, want.ids, `shared ${shared}: the same prompt again`);
      t.equal(again.usage?.prompt_tokens_details.cached_tokens, Math.floor((second.length - 1) / BLOCK) * BLOCK, 'all full blocks but the last token reused');
    }
  });
}

t.test('prompt logprobs with a warm cache equal those without it (prompt-logprob requests compute their prompt)', async (t) => {
  const on = await start({ maxNumSeqs: 4 });
  const prompt = tokens(7, 70);
  await generate(on, { promptIds: prompt, maxTokens: 3 });
  const got = await generate(on, { promptIds: prompt, maxTokens: 3, promptLogprobs: 2 });
  const want = await generate(off, { promptIds: prompt, maxTokens: 3, promptLogprobs: 2 });
  t.equal(got.usage?.prompt_tokens_details.cached_tokens, 0, 'no hit');
  t.ok(got.prompt !== null && got.prompt.length === prompt.length - 1, 'prompt logprobs');
  t.ok(maxDiff(got.prompt!, want.prompt!) < 1e-4, `prompt logprobs within 1e-4 (${maxDiff(got.prompt!, want.prompt!).toExponential(1)})`);
  t.same(got.ids, want.ids);
  // And a request reusing the prompt-logprob request's blocks.
  const after = await generate(on, { promptIds: [...prompt, 9], maxTokens: 3 });
  t.equal(after.usage?.prompt_tokens_details.cached_tokens, 64);
  t.same(after.ids, (await generate(off, { promptIds: [...prompt, 9], maxTokens: 3 })).ids);
});

t.test('n = 4 choices started together compute their prompt once', async (t) => {
  const on = await start({ maxNumSeqs: 8, maxNumBatchedTokens: 32 });
  const prompt = tokens(11, 75);
  const runs = await Promise.all(Array.from({ length: 4 }, () => generate(on, { promptIds: prompt, maxTokens: 5 })));
  const computed = runs.reduce((n, r) => n + r.usage!.prompt_tokens - r.usage!.prompt_tokens_details.cached_tokens, 0);
  const tail = prompt.length - Math.floor((prompt.length - 1) / BLOCK) * BLOCK;
  t.equal(computed, prompt.length + 3 * tail, `${computed} prompt tokens computed = ${prompt.length} + 3 * ${tail}`);
  for (const r of runs) t.same(r.ids, runs[0]!.ids);
  t.same(runs[0]!.ids, (await generate(off, { promptIds: prompt, maxTokens: 5 })).ids);
  const st = on.stats!;
  t.equal(st.prefixCache.queries, 4 * prompt.length, 'queries: every prompt token of every choice');
  t.equal(st.prefixCache.hits, 3 * (prompt.length - tail), 'hits: what three choices reused');
});

t.test('a scripted runner shares the accounting (cache on) and the slot-less engine frees all', async (t) => {
  const on = await start({ maxNumSeqs: 4, script: [5, 6, 7] });
  const prompt = tokens(13, 40);
  const a = await generate(on, { promptIds: prompt, maxTokens: 4 });
  const b = await generate(on, { promptIds: prompt, maxTokens: 4 });
  t.same(a.ids, [5, 6, 7, 5]);
  t.same(b.ids, a.ids);
  t.equal(b.usage?.prompt_tokens_details.cached_tokens, 32);
});
