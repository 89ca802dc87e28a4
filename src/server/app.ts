/**
 * The HTTP app (no listen): OpenAI-compatible routes over one Engine, and the one error
 * handler that turns every failure into OpenAI's error JSON. GemmaServeErrors keep their
 * status, type, code and param; anything else is a 500 whose details stay in the log.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import fastifyWebsocket from '@fastify/websocket';
import { Engine } from '../engine/engine.ts';
import { GemmaServeError } from '../errors.ts';
import { registerAuth } from './auth.ts';
import { registerCors } from './cors.ts';
import { EngineState } from './engine-state.ts';
import { chatCompletionsRoute } from './routes/chat-completions.ts';
import { chatWebSocketRoute } from './routes/chat-ws.ts';
import { completionsRoute } from './routes/completions.ts';
import { registerRequestLog, requestId } from './logging.ts';
import { Metrics, type MetricsNames } from './metrics.ts';
import { healthRoute } from './routes/health.ts';
import { metricsRoute } from './routes/metrics.ts';
import { modelsRoute } from './routes/models.ts';
import { tokenizeRoutes } from './routes/tokenize.ts';

export interface AppOptions {
  /** The engine, or its state while it loads (routes answer 503 until it is ready). */
  readonly engine: Engine | EngineState;
  readonly logger?: Logger;
  /** Accepted API keys (Authorization: Bearer KEY); empty or absent = no authentication. */
  readonly apiKeys?: readonly string[];
  /** Origins allowed by CORS ('*' = any); empty or absent = CORS off. */
  readonly corsOrigins?: readonly string[];
  /** Largest accepted request body; larger ones get a 413. Default 4 MiB. */
  readonly bodyLimitBytes?: number;
  /** The metrics to feed and serve at GET /metrics; default: new ones named `metricsNames`. */
  readonly metrics?: Metrics;
  /** Metric names: gemma_serve: (default) or vLLM's exact vllm: names. */
  readonly metricsNames?: MetricsNames;
  /** Put prompt and completion text in the request log lines (off by default). */
  readonly logPrompts?: boolean;
}

export const DEFAULT_BODY_LIMIT_BYTES = 4 * 2 ** 20;

export interface OpenAiError {
  readonly error: { readonly message: string; readonly type: string; readonly param: string | null; readonly code: string | null };
}

export function errorBody(message: string, type: string, param: string | null, code: string | null): OpenAiError {
  return { error: { message, type, param, code } };
}

export function buildApp(opts: AppOptions): FastifyInstance {
  const bodyLimit = opts.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
  // Fastify's own request lines are off: logging.ts writes one line per request instead.
  const common = { bodyLimit, genReqId: requestId, logController: new LogController({ disableRequestLogging: true }) };
  const app: FastifyInstance = (opts.logger
    ? Fastify({ loggerInstance: opts.logger as unknown as FastifyBaseLogger, ...common })
    : Fastify({ logger: false, ...common })) as unknown as FastifyInstance;
  const state = opts.engine instanceof Engine ? new EngineState(opts.engine) : opts.engine;
  const metrics = opts.metrics ?? new Metrics({ state, names: opts.metricsNames });
  // Metrics made here stop listening to the engine with the app (a test's engine serves many apps).
  if (opts.metrics === undefined) app.addHook('onClose', async () => { metrics.detach(); });
  // First, before auth: every request gets its id header, its log line and its HTTP metrics.
  registerRequestLog(app, { metrics, logPrompts: opts.logPrompts ?? false });
  app.setErrorHandler((err: Error, request, reply) => {
    if (err instanceof GemmaServeError) {
      if (err.status >= 500) request.log.error({ err }, err.message);
      const retryAfter = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
      if (retryAfter !== undefined) reply.header('retry-after', String(retryAfter));
      return reply.status(err.status).send(errorBody(err.message, err.type, err.param, err.code));
    }
    const status = (err as { statusCode?: number }).statusCode;
    if ((err as { code?: string }).code === 'FST_ERR_CTP_BODY_TOO_LARGE' || status === 413) {
      return reply.status(413).send(errorBody(`Request body too large: the limit is ${bodyLimit} bytes.`, 'invalid_request_error', null, 'request_too_large'));
    }
    if (typeof status === 'number' && status >= 400 && status < 500) {
      // Fastify's own client errors: malformed JSON, wrong content type, body too large.
      return reply.status(status).send(errorBody(err.message, 'invalid_request_error', null, (err as { code?: string }).code ?? null));
    }
    request.log.error({ err }, 'internal error');
    return reply.status(500).send(errorBody('The server had an error while processing your request.', 'server_error', null, 'internal_error'));
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send(errorBody(`Unknown request URL: ${request.method} ${request.url}`, 'invalid_request_error', null, 'unknown_url'));
  });
  // The WebSocket plugin's hooks first: it must see every upgrade, including those the auth
  // and CORS hooks refuse, or a refused upgrade's socket is never destroyed.
  void app.register(fastifyWebsocket, { options: { maxPayload: bodyLimit } });
  void app.register(atRoot(async (root) => {
    registerCors(root, opts.corsOrigins ?? []);
    registerAuth(root, opts.apiKeys ?? []);
  }));
  healthRoute(app, state);
  metricsRoute(app, metrics);
  modelsRoute(app, state);
  chatCompletionsRoute(app, state);
  completionsRoute(app, state);
  tokenizeRoutes(app, state);
  void app.register(async (scoped) => chatWebSocketRoute(scoped, state));
  return app;
}

/** Marks a plugin as not encapsulated (what fastify-plugin does): its hooks apply to the whole app. */
function atRoot(plugin: (app: FastifyInstance) => Promise<void>): (app: FastifyInstance) => Promise<void> {
  Object.assign(plugin, { [Symbol.for('skip-override')]: true });
  return plugin;
}
