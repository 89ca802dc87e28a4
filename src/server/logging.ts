/**
 * Structured logs (pino JSON, one object per line):
 *   - createLogger(): the server's logger; `authorization` headers (and API keys) are redacted
 *     wherever they would appear;
 *   - one line per request when its response is over (msg "request"): reqId (the client's
 *     `x-request-id` if it is sane, else a generated UUID; always returned as the
 *     `x-request-id` response header, SSE included), route, method, status, durationMs, and for
 *     generations promptTokens, completionTokens, ttftMs and finishReason; `aborted: true` when
 *     the client left before the end. Probes and scrapes (/health, /ready, /metrics) log at
 *     debug. Prompt and completion text only with `logPrompts` (--log-prompts).
 * Fastify's own "incoming request" / "request completed" lines are off (disableRequestLogging).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { Engine } from '../engine/engine.ts';
import type { ChoiceObserver, GenerationTracker } from './choices.ts';
import type { Metrics } from './metrics.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** This request's generations, for the request log line and the metrics. */
    trace: RequestTrace;
  }
}

export const REDACTED_PATHS = [
  'req.headers.authorization', 'request.headers.authorization', 'headers.authorization', 'authorization',
  '*.headers.authorization', 'apiKey', 'apiKeys', 'api_key',
];

/** The server's logger: JSON to `destination` (default stdout), secrets redacted. */
export function createLogger(opts: { destination?: DestinationStream; level?: string } = {}): Logger {
  const options = { name: 'gemma-serve', level: opts.level ?? 'info', redact: { paths: REDACTED_PATHS, censor: '[Redacted]' } };
  return opts.destination === undefined ? pino(options) : pino(options, opts.destination);
}

const SANE_REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/** Fastify's genReqId: the client's x-request-id when it is short printable ASCII, else a UUID. */
export function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && SANE_REQUEST_ID.test(given) ? given : randomUUID();
}

interface ChoiceRecord {
  readonly prompt: number;
  readonly promptTokens: number;
  completionTokens: number;
  finishReason: string | null;
  text: string;
}

/** One request's generations as the log sees them; forwards each to the metrics. */
export class RequestTrace implements ChoiceObserver {
  /** performance.now() when the request arrived. */
  readonly arrival = performance.now();
  private firstTokenAt: number | null = null;
  private readonly choices: ChoiceRecord[] = [];

  constructor(private readonly metrics: Metrics | null, private readonly keepText: boolean) {}

  /** A new trace for another request arriving now (the WebSocket's requests share one HTTP request). */
  fork(): RequestTrace {
    return new RequestTrace(this.metrics, this.keepText);
  }

  generation(engine: Engine, prompt: number, promptTokens: number): GenerationTracker {
    const m = this.metrics?.generation(engine, this.arrival, promptTokens);
    const c: ChoiceRecord = { prompt, promptTokens, completionTokens: 0, finishReason: null, text: '' };
    this.choices.push(c);
    return {
      event: (ev) => {
        m?.event(ev);
        if (ev.type === 'token') {
          this.firstTokenAt ??= performance.now();
          c.completionTokens++;
          if (this.keepText) c.text += ev.text;
        } else if (ev.type === 'finish') {
          c.completionTokens = ev.usage.completion_tokens;
          c.finishReason = ev.reason;
          if (this.keepText) c.text += ev.text;
        }
      },
      end: () => {
        m?.end();
        c.finishReason ??= 'abort';
      },
    };
  }

  /** The log fields of the generations (none when the request started none). */
  summary(): Record<string, unknown> {
    if (this.choices.length === 0) return {};
    const prompts = new Map(this.choices.map((c) => [c.prompt, c.promptTokens]));
    const reasons = this.choices.map((c) => c.finishReason ?? 'abort');
    return {
      promptTokens: [...prompts.values()].reduce((a, b) => a + b, 0),
      completionTokens: this.choices.reduce((a, c) => a + c.completionTokens, 0),
      ttftMs: this.firstTokenAt === null ? null : round(this.firstTokenAt - this.arrival),
      finishReason: reasons.length === 1 ? reasons[0] : reasons,
      ...(this.keepText ? { completion: this.choices.length === 1 ? this.choices[0]!.text : this.choices.map((c) => c.text) } : {}),
    };
  }
}

const round = (x: number): number => Math.round(x * 1000) / 1000;

const QUIET_ROUTES = new Set(['/health', '/ready', '/metrics']);

export interface RequestLogOptions {
  readonly metrics: Metrics | null;
  /** Log prompt and completion text (off by default). */
  readonly logPrompts: boolean;
}

/** The x-request-id header, a trace per request, and the request line + HTTP metrics at the end. */
export function registerRequestLog(app: FastifyInstance, opts: RequestLogOptions): void {
  app.decorateRequest('trace', null as unknown as RequestTrace);
  app.addHook('onRequest', async (request, reply) => {
    request.trace = new RequestTrace(opts.metrics, opts.logPrompts);
    reply.header('x-request-id', request.id);
    reply.raw.once('close', () => requestOver(request, reply, opts));
  });
}

function requestOver(request: FastifyRequest, reply: FastifyReply, opts: RequestLogOptions): void {
  const route = request.routeOptions.url ?? 'unmatched';
  const status = reply.raw.statusCode;
  const ms = performance.now() - request.trace.arrival;
  opts.metrics?.http(route, request.method, status, ms / 1000);
  const fields: Record<string, unknown> = {
    route, method: request.method, url: request.url, status, durationMs: round(ms), ...request.trace.summary(),
  };
  if (!reply.raw.writableFinished) fields['aborted'] = true;
  if (opts.logPrompts) {
    const body = request.body as { messages?: unknown; prompt?: unknown } | undefined;
    if (body?.messages !== undefined) fields['messages'] = body.messages;
    if (body?.prompt !== undefined) fields['prompt'] = body.prompt;
  }
  if (QUIET_ROUTES.has(route) && status < 400) request.log.debug(fields, 'request');
  else request.log.info(fields, 'request');
}
