/**
 * Graceful shutdown. drain(): stop admitting (/ready and every new request answer 503
 * server_draining), let in-flight generations finish for up to `timeoutMs`, then cut the rest
 * (state.cutOff()): a stream gets an error event `server_shutdown` then `data: [DONE]`, a JSON
 * request a 503 `server_shutdown` error; then close the server, which waits for those last
 * responses, but for CLOSE_MARGIN_MS at most: a client that stopped reading would otherwise
 * hold its response (and the process) open for as long as it keeps the socket, so past the
 * margin the remaining connections are closed. Shutdown ends within timeout + margin.
 *
 * The routes take part through untilShutdown() / chunksUntilShutdown(), which turn the cut
 * into a ShutdownError and stop their generations.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { UnavailableError } from '../errors.ts';
import type { EngineState } from './engine-state.ts';

export const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 30;
/** How long the last responses may take to reach their clients once the grace period ended. */
export const CLOSE_MARGIN_MS = 1000;

export class ShutdownError extends UnavailableError {
  constructor() {
    super('The server shut down before the request finished. Please retry.', 'server_shutdown', 1);
  }
}

export interface DrainResult {
  /** Generations still running when the grace period ended (cut with server_shutdown). */
  readonly cut: number;
}

/** Drains `state` for up to `timeoutMs` (sooner if state.cutOff() is called), then closes `app`. */
export async function drain(app: FastifyInstance, state: EngineState, timeoutMs: number): Promise<DrainResult> {
  state.drain();
  const engine = state.loaded;
  const deadline = performance.now() + timeoutMs;
  while (engine !== null && engine.inFlight > 0 && !state.shutdown.aborted) {
    const left = deadline - performance.now();
    if (left <= 0) break;
    await sleep(Math.min(20, left));
  }
  const cut = engine?.inFlight ?? 0;
  if (cut > 0) state.cutOff();
  const closing = app.close();
  const late = await Promise.race([closing.then(() => false), sleep(CLOSE_MARGIN_MS).then(() => true)]);
  if (late) {
    app.server.closeAllConnections();
    await closing;
  }
  return { cut };
}

/** `work`'s result, or a ShutdownError as soon as `signal` aborts (then `stop()` ends the work). */
export async function untilShutdown<T>(work: Promise<T>, signal: AbortSignal, stop: () => void): Promise<T> {
  if (signal.aborted) { stop(); throw new ShutdownError(); }
  let onAbort: (() => void) | undefined;
  const cut = new Promise<never>((_, reject) => {
    onAbort = () => { stop(); reject(new ShutdownError()); };
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, cut]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
    work.catch(() => undefined); // settled after the cut: nobody waits for it
  }
}

/** The items of `chunks` until `signal` aborts; then a ShutdownError (`stop()` ends the source). */
export async function* chunksUntilShutdown<T>(chunks: AsyncIterable<T>, signal: AbortSignal, stop: () => void): AsyncGenerator<T> {
  const it = chunks[Symbol.asyncIterator]();
  let done = false;
  try {
    for (;;) {
      const r = await untilShutdown(it.next(), signal, stop);
      if (r.done === true) { done = true; return; }
      yield r.value;
    }
  } finally {
    // After a cut the source may still be waiting for its next item: do not wait for it.
    if (!done) void it.return?.(undefined)?.catch(() => undefined);
  }
}
