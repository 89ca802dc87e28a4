/**
 * The shape both generation endpoints share: take the engine (503 if none), validate and
 * start (every 4xx before any byte), abort on client disconnect, then answer with one JSON
 * object or an SSE stream of chunks. The request's trace watches its generations (logs,
 * metrics); a drain's cut ends it with a server_shutdown error (drain.ts).
 */
import type { FastifyInstance } from 'fastify';
import type { Engine } from '../engine/engine.ts';
import type { ChoiceObserver } from './choices.ts';
import { chunksUntilShutdown, untilShutdown } from './drain.ts';
import type { EngineState } from './engine-state.ts';
import { sendSse } from './sse.ts';

export interface GenerationEndpoint<T extends { readonly req: { readonly stream: boolean } }> {
  start(engine: Engine, body: unknown, signal: AbortSignal, observer?: ChoiceObserver): T;
  collect(engine: Engine, started: T): Promise<object>;
  chunks(engine: Engine, started: T): AsyncIterable<object>;
}

export function postGeneration<T extends { readonly req: { readonly stream: boolean } }>(
  app: FastifyInstance, path: string, state: EngineState, endpoint: GenerationEndpoint<T>,
): void {
  app.post(path, async (request, reply) => {
    const engine = state.require();
    const controller = new AbortController();
    const started = endpoint.start(engine, request.body, controller.signal, request.trace);
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) controller.abort(); });
    const stop = (): void => controller.abort();
    if (!started.req.stream) return untilShutdown(endpoint.collect(engine, started), state.shutdown, stop);
    await sendSse(reply, chunksUntilShutdown(endpoint.chunks(engine, started), state.shutdown, stop), request.log);
  });
}
