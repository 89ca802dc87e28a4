/**
 * The HTTP app (no listen): composes the hooks, the error handler (error-handler.ts) and the
 * OpenAI-compatible and Ollama routes over one Engine. Nothing imports this module but the entry points
 * and tests, so it may import everything.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import fastifyWebsocket from '@fastify/websocket';
import { Engine } from '../engine/engine.ts';
import { registerAuth } from './auth.ts';
import { JsonParser, registerJsonBodyParser } from './json-body.ts';
import { registerCors } from './cors.ts';
import { EngineState } from './engine-state.ts';
import { clientErrorHandler, registerRawRefusals } from './client-errors.ts';
import { errorBody } from './error-body.ts';
import { registerErrorHandler } from './error-handler.ts';
import { chatCompletionsRoute } from './routes/chat-completions.ts';
import { chatWebSocketRoute } from './routes/chat-ws.ts';
import { completionsRoute } from './routes/completions.ts';
import { responsesRoute } from './routes/responses.ts';
import { anthropicRoutes } from './routes/anthropic.ts';
import { registerAnthropicErrors } from './anthropic/errors.ts';
import { registerRequestLog, requestId } from './logging.ts';
import { Metrics, type MetricsNames } from './metrics.ts';
import { healthRoute } from './routes/health.ts';
import { metricsRoute } from './routes/metrics.ts';
import { modelsRoute } from './routes/models.ts';
import { tokenizeRoutes } from './routes/tokenize.ts';
import { embeddingsRoute } from './routes/embeddings.ts';
import { ollamaEmbedRoutes } from './routes/ollama-embed.ts';
import { openApiRoute, registerOpenApi } from './openapi.ts';
import { registerOllamaErrors } from './ollama/errors.ts';
import { ollamaGenerationRoutes } from './routes/ollama.ts';
import { ollamaModelRoutes } from './routes/ollama-models.ts';
import { AJV_OPTIONS, schemaError, type SchemaError } from './schema-errors.ts';

export interface AppOptions {
  /** The engine, or its state while it loads (routes answer 503 until it is ready). */
  readonly engine: Engine | EngineState;
  readonly logger?: Logger;
  /** Accepted API keys (Authorization: Bearer KEY); empty or absent = no authentication. */
  readonly apiKeys?: readonly string[];
  /** Origins allowed by CORS ('*' = any); empty or absent = CORS off. */
  readonly corsOrigins?: readonly string[];
  /** Request bodies this large or larger are parsed off the event loop (default 64 KiB; Infinity: never, for benchmarks). */
  readonly jsonThreadMinBytes?: number;
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

export function buildApp(opts: AppOptions): FastifyInstance {
  const bodyLimit = opts.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
  // Fastify's own request lines are off: logging.ts writes one line per request instead.
  const common = {
    bodyLimit, genReqId: requestId, logController: new LogController({ disableRequestLogging: true }),
    // Request schemas validate as sent: unknown fields and wrong types are 400s naming them.
    ajv: { customOptions: AJV_OPTIONS },
    schemaErrorFormatter: (errors: readonly unknown[]) => schemaError(errors as SchemaError[]),
    clientErrorHandler,
    // A request without Host is refused by our hook (client-errors.ts), in the one error shape,
    // instead of Node's empty 400.
    http: { requireHostHeader: false },
    // The router's own refusals (a URL that does not decode, a bad content type) in the one shape.
    frameworkErrors: (error: FastifyError, _request: FastifyRequest, reply: FastifyReply) => {
      void reply.status(error.statusCode ?? 400).send(errorBody(error.message, 'invalid_request_error', null, error.code));
    },
  };
  const app: FastifyInstance = (opts.logger
    ? Fastify({ loggerInstance: opts.logger as unknown as FastifyBaseLogger, ...common })
    : Fastify({ logger: false, ...common })) as unknown as FastifyInstance;
  const state = opts.engine instanceof Engine ? new EngineState(opts.engine) : opts.engine;
  const metrics = opts.metrics ?? new Metrics({ state, names: opts.metricsNames });
  // Metrics made here stop listening to the engine with the app (a test's engine serves many apps).
  if (opts.metrics === undefined) app.addHook('onClose', async () => { metrics.detach(); });
  // First, before auth: every request gets its id header, its log line and its HTTP metrics.
  registerRequestLog(app, { metrics, logPrompts: opts.logPrompts ?? false });
  registerErrorHandler(app, bodyLimit);
  registerOllamaErrors(app);
  registerAnthropicErrors(app);
  registerRawRefusals(app);
  // Request JSON: large bodies are parsed in a thread of their own (json-body.ts).
  const jsonParser = new JsonParser(opts.jsonThreadMinBytes);
  registerJsonBodyParser(app, jsonParser);
  app.addHook('onRequest', async (request, reply) => {
    if (request.raw.httpVersionMajor === 1 && request.raw.httpVersionMinor >= 1 && request.headers.host === undefined) {
      return reply.status(400).send(errorBody('HTTP/1.1 requests need a Host header.', 'invalid_request_error', null, 'missing_host'));
    }
  });
  // The WebSocket plugin's hooks first: it must see every upgrade, including those the auth
  // and CORS hooks refuse, or a refused upgrade's socket is never destroyed.
  void app.register(fastifyWebsocket, { options: { maxPayload: bodyLimit } });
  void app.register(atRoot(async (root) => {
    registerCors(root, opts.corsOrigins ?? []);
    registerAuth(root, opts.apiKeys ?? []);
  }));
  // Before any route: it collects the routes' schemas as they are added.
  registerOpenApi(app, (opts.apiKeys ?? []).length > 0);
  void app.register(async (api) => {
    openApiRoute(api);
    healthRoute(api, state);
    metricsRoute(api, metrics);
    modelsRoute(api, state);
    chatCompletionsRoute(api, state);
    completionsRoute(api, state);
    responsesRoute(api, state);
    anthropicRoutes(api, state);
    tokenizeRoutes(api, state);
    chatWebSocketRoute(api, state, jsonParser);
    ollamaGenerationRoutes(api, state);
    ollamaModelRoutes(api, state);
    embeddingsRoute(api, state);
    ollamaEmbedRoutes(api, state);
  });
  return app;
}

/** Marks a plugin as not encapsulated (what fastify-plugin does): its hooks apply to the whole app. */
function atRoot(plugin: (app: FastifyInstance) => Promise<void>): (app: FastifyInstance) => Promise<void> {
  Object.assign(plugin, { [Symbol.for('skip-override')]: true });
  return plugin;
}
