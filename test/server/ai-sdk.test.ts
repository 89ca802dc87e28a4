// Vercel's AI SDK (`ai` with `@ai-sdk/openai`) pointed at the real server on a tiny random model,
// as its users write it: `openai(model)` (the Responses API, the provider's default) and
// `openai.chat(model)` (chat completions), through generateText, streamText, generateObject and a
// tool loop that runs the tool and sends its result back. With random weights the values are
// arbitrary; the text is compared with the chat endpoint's for the same conversation.
import t from 'tap';
import { z } from 'zod';
import { createOpenAI } from '@ai-sdk/openai';
import { generateObject, generateText, stepCountIs, streamText, tool } from 'ai';
import { startTinyServer } from './tiny-server.ts';

// The tool instructions take ~400 tokens of the tiny character-level tokenizer.
const { client, model, baseURL } = await startTinyServer('ai-sdk', { maxPositions: 2048 });
const openai = createOpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'none' });

async function chatAnswer(content: string, maxTokens: number): Promise<{ text: string; finish: string }> {
  const c = (await client.chat.completions.create({ model, messages: [{ role: 'user', content }], temperature: 0, max_tokens: maxTokens })).choices[0]!;
  return { text: c.message.content ?? '', finish: c.finish_reason };
}

for (const [label, llm] of [['openai(model): the Responses API', openai(model)], ['openai.chat(model): chat completions', openai.chat(model)]] as const) {
  t.test(`${label}: generateText and streamText give the chat endpoint's text`, async (t) => {
    const { text: expected, finish } = await chatAnswer('Hello there', 12);
    const r = await generateText({ model: llm, prompt: 'Hello there', temperature: 0, maxOutputTokens: 12 });
    t.equal(r.text, expected);
    t.equal(r.finishReason, finish === 'length' ? 'length' : 'stop', `finish reason (chat: ${finish})`);
    t.ok(r.usage.inputTokens! > 0 && r.usage.outputTokens! > 0, `usage ${JSON.stringify(r.usage)}`);
    const s = streamText({ model: llm, prompt: 'Hello there', temperature: 0, maxOutputTokens: 12 });
    let streamed = '';
    for await (const piece of s.textStream) streamed += piece;
    t.equal(streamed, expected, 'streamed');
    t.equal(await s.finishReason, r.finishReason);
  });

  t.test(`${label}: generateObject returns an object of the schema`, async (t) => {
    const Answer = z.object({ answer: z.enum(['yes', 'no', 'maybe']), confidence: z.number().int().min(0).max(10) });
    let ok = 0;
    // Greedy (the Responses provider sends no seed): three prompts, three answers.
    for (const prompt of ['Is it raining?', 'Is the sky blue?', 'Will it snow?']) {
      try {
        const r = await generateObject({ model: llm, schema: Answer, prompt, temperature: 0, maxOutputTokens: 200 });
        t.same(Answer.parse(r.object), r.object, JSON.stringify(r.object));
        ok++;
      } catch (e) {
        t.comment(`${prompt}: ${(e as Error).message}`); // cut by maxOutputTokens: the SDK throws
      }
    }
    t.ok(ok >= 2, `${ok}/3 objects`);
  });

  t.test(`${label}: a tool loop: the call, the tool's result sent back, the next step answers`, async (t) => {
    const calls: unknown[] = [];
    const r = await generateText({
      model: llm, prompt: 'What is the weather in Paris?', temperature: 0, maxOutputTokens: 150,
      tools: {
        weather: tool({
          description: 'Current weather in a city',
          inputSchema: z.object({ city: z.string().min(1).max(12), unit: z.enum(['C', 'F']) }),
          execute: async (input) => { calls.push(input); return { temperature: 21 }; },
        }),
      },
      // The first step must call; the second may not (the loop ends with text).
      prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? 'required' : 'none' }),
      stopWhen: stepCountIs(2),
    });
    t.equal(r.steps.length, 2, 'two steps');
    t.ok(calls.length >= 1, `the tool ran with ${JSON.stringify(calls)}`);
    t.same(r.steps[0]!.toolCalls.map((c) => c.toolName), calls.map(() => 'weather'));
    t.same(r.steps[0]!.toolResults.map((x) => x.output), calls.map(() => ({ temperature: 21 })));
    t.same(r.steps[1]!.toolCalls, [], 'the second step only answers');
    t.ok(r.steps[1]!.request !== undefined, 'the second request was sent (with the tool result)');
  });
}
