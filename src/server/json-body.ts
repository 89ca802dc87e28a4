/**
 * Request JSON parsed off the event loop. Decoding and parsing cost about 10 ms per MiB on the
 * loop (utf8 decode plus JSON.parse), which every other client, /health included, would wait
 * for: a few clients sending megabyte prompts held /health at a p99 of hundreds of ms. Bodies
 * of `OFF_LOOP_BYTES` and more are parsed in a worker thread (json-parse.ts's `PARSER_THREAD`,
 * started when the server listens) and come back by structured clone, which for a prompt is mostly one string
 * copy; smaller ones are parsed in place, where a thread hop would cost more than the parse.
 * Both refuse what Fastify's own parser refuses (empty, invalid, `__proto__` or `constructor`
 * poisoning) with Fastify's own errors, so error bodies do not change.
 */
import { Worker } from 'node:worker_threads';
import { errorCodes, type FastifyInstance } from 'fastify';
import { parseJsonBytes, PARSER_THREAD, PARSER_THREAD_DATA, type JsonJob, type JsonReply } from './json-parse.ts';

/** Bodies this large or larger are parsed in the worker thread. */
export const OFF_LOOP_BYTES = 64 * 1024;

/** Why a body is not a request: Fastify's own errors (400s), shaped by the error handler. */
function invalid(): Error {
  return new errorCodes.FST_ERR_CTP_INVALID_JSON_BODY();
}

/** The body parsed on this thread (Fastify's invalid-JSON error when it is not JSON). */
function parseHere(body: Uint8Array): Promise<unknown> {
  try {
    return Promise.resolve(parseJsonBytes(body));
  } catch {
    return Promise.reject(invalid());
  }
}

/**
 * A value nested beyond what structured clone can carry: no request nests like that (the
 * schemas would refuse it), so it is refused as one, with Fastify's 400 for bodies it cannot use.
 */
function tooDeep(): Error {
  return Object.assign(new Error('The request body nests too deeply.'), { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY' });
}

/** One lazily started worker thread parsing JSON; a crash fails its pending jobs and the next job starts a new one. */
export class JsonParser {
  /** `minBytes`: bodies this large or larger go to the thread (Infinity: none do; benchmarks compare). */
  constructor(private readonly minBytes = OFF_LOOP_BYTES) {}

  private worker: Worker | null = null;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; body: Uint8Array | null }>();
  private nextId = 0;
  private closed = false;

  /**
   * The parsed body; rejects with Fastify's invalid/empty JSON errors. `transfer`: the caller
   * gives the body's memory away (moved to the thread, not copied, where it owns a whole buffer).
   */
  parse(body: Uint8Array, transfer = false): Promise<unknown> {
    if (body.length === 0) return Promise.reject(new errorCodes.FST_ERR_CTP_EMPTY_JSON_BODY());
    if (body.length < this.minBytes || this.closed) return parseHere(body);
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    const owned = transfer && body.byteOffset === 0 && body.buffer.byteLength === body.byteLength && body.buffer instanceof ArrayBuffer;
    return new Promise((resolve, reject) => {
      // A body moved away cannot be parsed here again if its value cannot come back (uncloneable).
      this.pending.set(id, { resolve, reject, body: owned ? null : body });
      worker.postMessage({ id, body } satisfies JsonJob, owned ? [body.buffer as ArrayBuffer] : []);
    });
  }

  /** Starts the thread now, so the first large body does not wait for it to boot. */
  warm(): void {
    if (this.worker === null && !this.closed && this.minBytes !== Infinity) this.start();
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = null;
    if (w !== null) await w.terminate();
  }

  private start(): Worker {
    const worker = new Worker(PARSER_THREAD, { eval: true, workerData: PARSER_THREAD_DATA, execArgv: [] });
    // Idle, it must not keep the process alive (a server that is closing waits for nothing here).
    worker.unref();
    worker.on('message', (r: JsonReply) => {
      const job = this.pending.get(r.id);
      if (job === undefined) return;
      this.pending.delete(r.id);
      if ('invalid' in r) job.reject(invalid());
      // Nested too deep to come back: parsed here when the body is still here (the schemas then
      // name the field), else refused as such.
      else if ('uncloneable' in r) {
        if (job.body !== null) void parseHere(job.body).then(job.resolve, job.reject);
        else job.reject(tooDeep());
      }
      else job.resolve(r.value);
    });
    const failAll = (e: Error): void => {
      if (this.worker === worker) this.worker = null;
      for (const job of this.pending.values()) job.reject(e);
      this.pending.clear();
    };
    worker.on('error', (e) => failAll(new Error(`JSON parser thread failed: ${e.message}`)));
    worker.on('exit', () => failAll(new Error('JSON parser thread exited')));
    this.worker = worker;
    return worker;
  }
}

/** Replaces Fastify's JSON body parser with `parser` (the same content types, errors and body limit). */
export function registerJsonBodyParser(app: FastifyInstance, parser: JsonParser): void {
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request: unknown, body: Buffer) =>
    // Fastify concatenates a body this large into a buffer of its own and keeps no reference.
    parser.parse(body, true));
  // A listening server boots the thread at once; an app only injected into never does.
  app.addHook('onListen', async () => { parser.warm(); });
  app.addHook('onClose', async () => { await parser.close(); });
}
