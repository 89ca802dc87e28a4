/**
 * POST /v1/chat/completions: render the chat template, tokenize, generate; a JSON response or
 * an SSE stream of chunks ending in `data: [DONE]`. A client that disconnects aborts its
 * generation in the worker.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Engine, Usage } from '../../engine/engine.ts';
import type { TokenLogprobs } from '../../engine/worker.ts';
import { parseChatRequest } from '../chat-request.ts';

export function chatCompletionsRoute(app: FastifyInstance, engine: Engine): void {
  const fingerprint = `fp_gemma_serve_${engine.modelId}`.slice(0, 40);
  app.post('/v1/chat/completions', async (request, reply) => {
    const req = parseChatRequest(request.body);
    const prompt = engine.chatTemplate.renderChat(req.messages, { addGenerationPrompt: true });
    const promptIds = engine.tokenizer.encode(prompt);
    const controller = new AbortController();
    // Throws ContextLengthError here, before any byte is sent.
    const events = engine.generate({
      promptIds, maxTokens: req.maxTokens, temperature: req.temperature, topP: req.topP, seed: req.seed,
      sampling: req.sampling, stop: req.stop, logprobs: req.logprobs,
    }, controller.signal);
    const tokenText = (id: number): { token: string; bytes: number[] } => {
      const token = engine.tokenizer.decode([id]);
      return { token, bytes: [...Buffer.from(token, 'utf8')] };
    };
    const lpEntry = (tokenId: number, lp: TokenLogprobs): object => ({
      ...tokenText(tokenId), logprob: lp.logprob,
      top_logprobs: lp.top.map((t) => ({ ...tokenText(t.id), logprob: t.logprob })),
    });
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) controller.abort(); });
    const id = `chatcmpl-${randomUUID().replace(/-/g, '')}`;
    const created = Math.floor(Date.now() / 1000);
    const base = { id, created, model: req.model, system_fingerprint: fingerprint };

    if (!req.stream) {
      let content = '';
      let finishReason = 'stop';
      let usage: Usage | null = null;
      const lps: object[] = [];
      for await (const ev of events) {
        if (ev.type === 'token') {
          content += ev.text;
          if (ev.logprobs) lps.push(lpEntry(ev.tokenId, ev.logprobs));
        }
        else { content += ev.text; finishReason = ev.reason; usage = ev.usage; }
      }
      return {
        ...base, object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content, refusal: null },
          logprobs: req.logprobs === null ? null : { content: lps, refusal: null }, finish_reason: finishReason }],
        usage,
      };
    }

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    const send = (obj: unknown): void => { if (!res.destroyed) res.write(`data: ${JSON.stringify(obj)}\n\n`); };
    const chunk = (delta: object, finishReason: string | null, usage?: Usage, logprobs: object[] | null = null): object => ({
      ...base, object: 'chat.completion.chunk',
      choices: [{ index: 0, delta, logprobs: logprobs === null ? null : { content: logprobs, refusal: null }, finish_reason: finishReason }],
      ...(req.includeUsage ? { usage: usage ?? null } : {}),
    });
    send(chunk({ role: 'assistant', content: '' }, null));
    try {
      for await (const ev of events) {
        if (ev.type === 'token') {
          if (ev.logprobs) send(chunk({ content: ev.text }, null, undefined, [lpEntry(ev.tokenId, ev.logprobs)]));
          else if (ev.text !== '') send(chunk({ content: ev.text }, null));
        } else {
          if (ev.text !== '') send(chunk({ content: ev.text }, null));
          send(chunk({}, ev.reason));
          if (req.includeUsage) send({ ...base, object: 'chat.completion.chunk', choices: [], usage: ev.usage });
        }
      }
      if (!res.destroyed) res.end('data: [DONE]\n\n');
    } catch (e) {
      request.log.error({ err: e }, 'generation failed mid-stream');
      send({ error: { message: (e as Error).message, type: 'server_error', param: null, code: 'engine_error' } });
      if (!res.destroyed) res.end('data: [DONE]\n\n');
    }
  });
}
