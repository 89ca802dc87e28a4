/**
 * POST /v1/responses: OpenAI's Responses API, stateless, over the chat path (responses.ts): a
 * `response` object, or server-sent events of its typed stream events. A client that
 * disconnects aborts its generation in the worker.
 */
import type { FastifyInstance } from 'fastify';
import type { EngineState } from '../engine-state.ts';
import { postGeneration } from '../generation-route.ts';
import { collectResponse, responseEvents, startResponse } from '../responses.ts';
import { ResponseObject, ResponsesRequest, ResponseStreamEvent } from '../schemas/responses.ts';

export function responsesRoute(app: FastifyInstance, state: EngineState): void {
  postGeneration(app, '/v1/responses', state, {
    body: ResponsesRequest, response: ResponseObject, chunk: ResponseStreamEvent, summary: 'Response (Responses API: JSON or server-sent events)', tag: 'OpenAI', framing: 'sse-events',
  }, { start: startResponse, collect: collectResponse, chunks: responseEvents });
}
