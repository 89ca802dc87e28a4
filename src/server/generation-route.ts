/**
 * The shape both generation endpoints share: the body validated by its schema (a 400 naming
 * the parameter, schema-errors.ts), take the engine (503 if none), start (every other 4xx
 * before any byte), abort on client disconnect, then answer with one JSON object (serialized
 * by the response schema) or an SSE stream of chunks (written as they come; the chunk schema
 * only documents them). The request's trace watches its generations (logs, metrics); a
 * drain's cut ends it with a server_shutdown error (drain.ts). Ollama's routes stream NDJSON
 * instead (ollama/ndjson.ts).
 */
import type { FastifyInstance } from 'fastify';
import type { Static, TSchema } from 'typebox';
import type { Engine } from '../engine/engine.ts';
import type { ChoiceObserver } from './choices.ts';
import { chunksUntilShutdown, untilShutdown } from './drain.ts';
import type { EngineState } from './engine-state.ts';
import { ErrorResponse } from './schemas/common.ts';
import { sendNdjson } from './ollama/ndjson.ts';
import { responsesErrorEvent, sendSse, sendSseEvents } from './sse.ts';

export interface GenerationSchemas<B extends TSchema, R extends TSchema, C extends TSchema> {
  readonly body: B;
  /** The whole response (stream false). */
  readonly response: R;
  /** One streamed chunk (stream true). */
  readonly chunk: C;
  readonly summary: string;
  readonly tag: string;
  /** How a stream is framed: OpenAI's server-sent events of chunks (default), of typed events (the Responses API), or Ollama's NDJSON. */
  readonly framing?: 'sse' | 'sse-events' | 'ndjson';
  /** The error body's schema (default OpenAI's). */
  readonly error?: TSchema;
  /** sse-events: the data of the `error` event a failure after the headers sends (default the Responses API's). */
  readonly errorEvent?: (e: unknown, sequence: number) => object;
}

export interface GenerationEndpoint<B, R, C, T extends { readonly req: { readonly stream: boolean } }> {
  /** Validates what the schema cannot, templates and tokenizes (off the event loop), starts. */
  start(engine: Engine, body: B, signal: AbortSignal, observer?: ChoiceObserver): Promise<T>;
  collect(engine: Engine, started: T): Promise<R>;
  chunks(engine: Engine, started: T): AsyncIterable<C>;
}

export function postGeneration<B extends TSchema, R extends TSchema, C extends TSchema, T extends { readonly req: { readonly stream: boolean } }>(
  app: FastifyInstance, path: string, state: EngineState, schemas: GenerationSchemas<B, R, C>,
  endpoint: GenerationEndpoint<Static<B>, Static<R>, Static<C>, T>,
): void {
  const ndjson = schemas.framing === 'ndjson';
  const schema = {
    summary: schemas.summary,
    tags: [schemas.tag],
    body: schemas.body,
    response: {
      200: ndjson ? {
        description: 'The response (stream false), or newline-delimited JSON objects, the last with done: true (stream true or absent).',
        content: { 'application/json': { schema: schemas.response }, 'application/x-ndjson': { schema: schemas.chunk } },
      } : schemas.framing === 'sse-events' ? {
        description: 'The response (stream false), or server-sent events `event: <type>` / `data: <event>` (stream true; the event schema says how they end).',
        content: { 'application/json': { schema: schemas.response }, 'text/event-stream': { schema: schemas.chunk } },
      } : {
        description: 'The completion (stream false), or server-sent events `data: <chunk>` ending with `data: [DONE]` (stream true).',
        content: { 'application/json': { schema: schemas.response }, 'text/event-stream': { schema: schemas.chunk } },
      },
      '4xx': schemas.error ?? ErrorResponse,
      '5xx': schemas.error ?? ErrorResponse,
    },
  };
  // The body's type is the schema's (validated before the handler runs); the endpoint's types tie
  // collect() and chunks() to the response and chunk schemas.
  app.post(path, { schema }, async (request, reply) => {
    const engine = state.require();
    const controller = new AbortController();
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) controller.abort(); });
    const started = await endpoint.start(engine, request.body as Static<B>, controller.signal, request.trace);
    const stop = (): void => controller.abort();
    if (!started.req.stream) return untilShutdown(endpoint.collect(engine, started), state.shutdown, stop);
    const chunks = chunksUntilShutdown(endpoint.chunks(engine, started), state.shutdown, stop);
    if (schemas.framing === 'sse-events') await sendSseEvents(reply, chunks, request.log, schemas.errorEvent ?? responsesErrorEvent);
    else await (ndjson ? sendNdjson : sendSse)(reply, chunks, request.log);
  });
}
