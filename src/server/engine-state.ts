/**
 * Where the HTTP layer gets its engine: the server listens before the model has loaded, so
 * routes ask this for the engine and get a 503 (with Retry-After) while it loads, after it
 * failed to load, or once the server drains.
 */
import type { Engine } from '../engine/engine.ts';
import { UnavailableError } from '../errors.ts';

export type EnginePhase = 'loading' | 'ready' | 'failed' | 'draining';

export class EngineState {
  private engine: Engine | null = null;
  private failure: Error | null = null;
  private drainingSince: number | null = null;
  private readonly cutoff = new AbortController();

  /** A ready engine, or a promise of one (the state is 'loading' until it settles). */
  constructor(source: Engine | Promise<Engine>) {
    if (source instanceof Promise) {
      source.then((e) => { this.engine = e; }, (e: unknown) => { this.failure = e instanceof Error ? e : new Error(String(e)); });
    } else {
      this.engine = source;
    }
  }

  get phase(): EnginePhase {
    if (this.drainingSince !== null) return 'draining';
    if (this.failure !== null) return 'failed';
    return this.engine === null ? 'loading' : 'ready';
  }

  /** The engine if it has loaded (draining or not), else null. */
  get loaded(): Engine | null {
    return this.engine;
  }

  /** Stops admitting: every later require() is a 503. */
  drain(): void {
    this.drainingSince ??= Date.now();
  }

  /** Aborted when a drain's grace period is over: generations still running end at once (drain.ts). */
  get shutdown(): AbortSignal {
    return this.cutoff.signal;
  }

  /** Ends the grace period: draining (if not yet), and every in-flight generation is ended. */
  cutOff(): void {
    this.drain();
    this.cutoff.abort();
  }

  /** The engine to serve a new request with, or a 503 saying why there is none. */
  require(): Engine {
    switch (this.phase) {
      case 'ready': return this.engine!;
      case 'draining': throw new UnavailableError('The server is shutting down and takes no new requests.', 'server_draining', 1);
      case 'failed': throw new UnavailableError('The model failed to load; see the server log.', 'model_failed', 30);
      default: throw new UnavailableError('The model is still loading. Please retry shortly.', 'model_loading', 5);
    }
  }
}
