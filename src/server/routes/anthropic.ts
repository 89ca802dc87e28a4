/**
 * Anthropic's Messages API: POST /v1/messages (a `message`, or server-sent events of the
 * Messages stream) and POST /v1/messages/count_tokens, over the chat path (anthropic.ts). Their
 * errors answer in Anthropic's shape (anthropic/errors.ts).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { collectMessage, countMessageTokens, messageEvents, startMessage } from '../anthropic.ts';
import { anthropicErrorEvent } from '../anthropic/errors.ts';
import type { EngineState } from '../engine-state.ts';
import { postGeneration } from '../generation-route.ts';
import { AnthropicError, CountTokensRequest, CountTokensResponse, MessageObject, MessagesRequest, MessagesStreamEvent } from '../schemas/anthropic.ts';

export function anthropicRoutes(app: FastifyInstance, state: EngineState): void {
  postGeneration(app, '/v1/messages', state, {
    body: MessagesRequest, response: MessageObject, chunk: MessagesStreamEvent, summary: "Message (Anthropic's Messages API: JSON or server-sent events)", tag: 'Anthropic',
    framing: 'sse-events', error: AnthropicError, errorEvent: anthropicErrorEvent,
  }, { start: startMessage, collect: collectMessage, chunks: messageEvents });

  app.withTypeProvider<TypeBoxTypeProvider>().post('/v1/messages/count_tokens', {
    schema: { summary: "Count a message request's input tokens (Anthropic's)", tags: ['Anthropic'], body: CountTokensRequest, response: { 200: CountTokensResponse, '4xx': AnthropicError, '5xx': AnthropicError } },
  }, async (request) => countMessageTokens(state.require(), request.body));
}
