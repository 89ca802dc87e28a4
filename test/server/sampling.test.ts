// stop strings, sampling parameters and logprobs through the official openai client.
import t from 'tap';
import OpenAI from 'openai';
import { startTinyServer } from './tiny-server.ts';

const { client, model, engine } = await startTinyServer('sampling');
const messages = [{ role: 'user' as const, content: 'Hello there' }];

t.test('stop string: output is the prefix before it, finish_reason stop', async (t) => {
  const first = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 });
  const text = first.choices[0]!.message.content!;
  t.ok(text.length >= 4, `first run gave ${JSON.stringify(text)}`);
  const from = Math.floor(text.length / 2);
  const stop = text.slice(from, from + 3);
  const prefix = text.slice(0, text.indexOf(stop));
  const r = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0, stop: [stop, '\u0000never'] });
  t.equal(r.choices[0]!.message.content, prefix);
  t.equal(r.choices[0]!.finish_reason, 'stop');
  const stopReason = (c: object): unknown => (c as { stop_reason?: unknown }).stop_reason;
  t.equal(stopReason(r.choices[0]!), stop, "vLLM's stop_reason: the stop string that matched");
  t.equal(stopReason(first.choices[0]!), null, 'stop_reason null when no stop string ended it');
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0, stop, stream: true });
  let streamed = '';
  let reason: string | null = null;
  let streamedStop: unknown;
  for await (const c of stream) {
    streamed += c.choices[0]?.delta.content ?? '';
    reason = c.choices[0]?.finish_reason ?? reason;
    if (c.choices[0]?.finish_reason != null) streamedStop = stopReason(c.choices[0]);
  }
  t.equal(streamed, prefix);
  t.equal(reason, 'stop');
  t.equal(streamedStop, stop, 'the finish chunk carries stop_reason');
});

t.test('bad sampling parameters are 400s naming them', async (t) => {
  const bad: [string, unknown][] = [
    ['stop', ['a', 'b', 'c', 'd', 'e']], ['stop', [1]], ['top_k', -2], ['min_p', 2], ['presence_penalty', 3],
    ['frequency_penalty', -3], ['repetition_penalty', 0], ['logit_bias', { 5: 101 }], ['logit_bias', { x: 1 }], ['top_logprobs', 21],
  ];
  for (const [param, value] of bad) {
    const err = await client.chat.completions.create({ model, messages, max_tokens: 2, logprobs: true, [param]: value } as never).catch((e: unknown) => e);
    t.ok(err instanceof OpenAI.BadRequestError, `${param}=${JSON.stringify(value)}`);
    t.equal((err as InstanceType<typeof OpenAI.BadRequestError>).param, param);
  }
});

t.test('logit_bias +100 forces a token; top_k 1 equals greedy', async (t) => {
  const greedy = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0 });
  const k1 = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 1, seed: 7, top_k: 1 } as never);
  t.equal(k1.choices[0]!.message.content, greedy.choices[0]!.message.content);
  const r = await client.chat.completions.create({ model, messages, max_tokens: 3, temperature: 1, seed: 3, logit_bias: { '100': 100 }, logprobs: true });
  t.same(r.choices[0]!.logprobs!.content!.map((c) => c.token), Array(3).fill(engine.tokenizer.decode([100])));
  t.ok(r.choices[0]!.logprobs!.content!.every((c) => c.logprob > -1e-3));
});

t.test('logprobs: one entry per completion token, all <= 0', async (t) => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3, repetition_penalty: 1.2, presence_penalty: 0.5, frequency_penalty: 0.1, min_p: 0.01 } as never);
  const content = r.choices[0]!.logprobs!.content!;
  t.equal(content.length, r.usage!.completion_tokens);
  for (const c of content) {
    t.ok(c.logprob <= 0);
    t.equal(c.top_logprobs.length, 3);
    t.ok(c.top_logprobs.every((x) => x.logprob <= 0));
    t.ok(c.top_logprobs[0]!.logprob >= c.logprob - 1e-9, 'greedy picks the top token');
    t.same(c.bytes, [...Buffer.from(c.token, 'utf8')]);
  }
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, logprobs: true, stream: true, stream_options: { include_usage: true } });
  let n = 0;
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const c of stream) { n += c.choices[0]?.logprobs?.content?.length ?? 0; usage = c.usage ?? usage; }
  t.equal(n, usage!.completion_tokens);
});
