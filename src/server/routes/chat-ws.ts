/**
 * Chat completions over one WebSocket (GET /v1/chat/completions/ws), several at once.
 *
 * Client -> server, one JSON object per text message:
 *   {"type": "request", "id": "<your id>", "body": {<a chat completion request>}}
 *   {"type": "cancel", "id": "<your id>"}
 * Server -> client:
 *   {"type": "chunk", "id", "chunk": <the chat.completion.chunk SSE would send>}
 *   {"type": "done", "id"}                       after the last chunk (SSE's [DONE])
 *   {"type": "cancelled", "id"}                  after a cancel; no more messages for that id
 *   {"type": "error", "id", "status", "error": {message, type, param, code}}
 *                                                a refused request (status as over HTTP) or a
 *                                                failure mid-stream; id null for a malformed message
 * `body.stream` is implied (absent or true); ids are the client's strings, unique among its
 * running requests. Closing the socket cancels all of its requests.
 *
 * Browsers apply no CORS to WebSockets, so an upgrade that carries an Origin the CORS settings
 * do not allow (any Origin while CORS is off) is refused with a 403: otherwise any web page
 * could use a server that HTTP's CORS policy keeps it away from. Clients outside a browser
 * send no Origin.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { WebSocket } from 'ws';
import { GemmaServeError, InvalidRequestError } from '../../errors.ts';
import { errorBody, publicErrorBody } from '../error-body.ts';
import type { JsonParser } from '../json-body.ts';
import { isObject } from '../body-fields.ts';
import type { EngineState } from '../engine-state.ts';
import { chunksUntilShutdown, ShutdownError } from '../drain.ts';
import { schemaError, type SchemaError } from '../schema-errors.ts';
import { ChatCompletionRequest, type ChatCompletionBody } from '../schemas/chat.ts';
import { ErrorResponse } from '../schemas/common.ts';
import { WsClientMessage, WsServerMessage } from '../schemas/ws.ts';
import { chatChunks, startChat } from './chat-completions.ts';

export const CHAT_WS_PATH = '/v1/chat/completions/ws';

/** Most requests one socket may run at once. */
const MAX_PER_SOCKET = 64;

/** Unsent bytes on a socket above which its requests wait before sending more. */
const HIGH_WATER_BYTES = 1 << 20;

/** The CORS hook (cors.ts) has run: it sets Access-Control-Allow-Origin only for an allowed Origin. */
/**
 * An upgrade the `ws` library would refuse with a text/html body (no valid Sec-WebSocket-Key,
 * a version other than 13 or 8) is refused here first, in the one error shape.
 */
async function refuseBadHandshake(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  if (request.headers.upgrade?.toLowerCase() !== 'websocket') return;
  const key = request.headers['sec-websocket-key'];
  const version = request.headers['sec-websocket-version'];
  const problem = typeof key !== 'string' || !/^[+/0-9A-Za-z]{22}==$/.test(key.trim()) ? 'a missing or invalid Sec-WebSocket-Key header'
    : version !== '13' && version !== '8' ? 'an unsupported Sec-WebSocket-Version (13 is supported)' : null;
  if (problem === null) return;
  return reply.status(400).header('sec-websocket-version', '13').send(errorBody(`WebSocket handshake refused: ${problem}.`, 'invalid_request_error', null, 'bad_websocket_handshake'));
}

async function refuseCrossOrigin(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const origin = request.headers.origin;
  if (origin === undefined || reply.hasHeader('access-control-allow-origin')) return;
  return reply.status(403).send(errorBody(
    `WebSocket connections from origin ${JSON.stringify(origin)} are not allowed (see --cors-origin).`,
    'invalid_request_error', null, 'origin_not_allowed'));
}

/** A compiled schema's check: true, or false with Ajv's errors on `errors`. */
interface Validator {
  (value: unknown): boolean;
  errors?: readonly SchemaError[] | null;
}


/** Made per app: @fastify/websocket writes `hide` into the route's schema object. */
const wsSchema = () => ({
  summary: 'Chat completions over a WebSocket, several at once',
  description: 'Upgrade to a WebSocket. The client sends WsClientMessage objects (JSON text); the server answers with WsServerMessage objects: '
    + 'the chunks of each request, then done, cancelled or error. A key may be given as the subprotocol openai-insecure-api-key.KEY.',
  tags: ['gemma-serve'],
  response: {
    101: {
      description: 'Switching protocols: client messages are WsClientMessage, server messages WsServerMessage.',
      content: { 'application/json': { schema: Type.Object({ client: WsClientMessage, server: WsServerMessage }) } },
    },
    '4xx': ErrorResponse,
  },
});

export function chatWebSocketRoute(app: FastifyInstance, state: EngineState, json: JsonParser): void {
  const schema = wsSchema();
  // @fastify/websocket marks its routes hidden from OpenAPI; this one is part of the API.
  const config = { swaggerTransform: ({ url }: { url: string }) => ({ schema: { ...schema, hide: false }, url }) };
  app.route({
    method: 'GET', url: CHAT_WS_PATH, preHandler: [refuseBadHandshake, refuseCrossOrigin], schema, config,
    // A plain GET (no upgrade) is told what the endpoint needs, in the one error shape.
    handler: async (_request, reply) => reply.status(426).header('upgrade', 'websocket').send(errorBody(
      `${CHAT_WS_PATH} is a WebSocket endpoint: send an upgrade request (Connection: Upgrade, Upgrade: websocket)`, 'invalid_request_error', null, 'upgrade_required')),
    wsHandler: (socket: WebSocket, request) => {
    // Fastify's compiler (the app's Ajv and options): the chat body's validator is the one the
    // HTTP endpoint compiled for the same schema object.
    const validMessage = request.compileValidationSchema(WsClientMessage) as Validator;
    const validChat = request.compileValidationSchema(ChatCompletionRequest) as Validator;
    const running = new Map<string, AbortController>();
    const send = (m: object): void => { if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(m)); };
    const sendError = (id: string | null, e: unknown): void => {
      const status = e instanceof GemmaServeError ? e.status : 500;
      if (status >= 500) request.log.error({ err: e }, 'websocket request failed');
      send({ type: 'error', id, status, ...publicErrorBody(e) });
    };

    const run = async (id: string, body: Readonly<Record<string, unknown>>): Promise<void> => {
      const controller = new AbortController();
      const trace = request.trace.fork();
      try {
        if (running.has(id)) throw new InvalidRequestError(`id: request ${JSON.stringify(id)} is already running on this socket`, 'id');
        if (running.size >= MAX_PER_SOCKET) throw new InvalidRequestError(`at most ${MAX_PER_SOCKET} requests may run at once on one socket`, 'id', 'too_many_requests');
        if (body['stream'] === false) throw new InvalidRequestError('body.stream: WebSocket requests always stream', 'body.stream');
        const streamed = { ...body, stream: true };
        if (!validChat(streamed)) throw schemaError(validChat.errors ?? []);
        const engine = state.require();
        // Running (cancellable) from here: the prompt is tokenized in a text worker meanwhile.
        running.set(id, controller);
        const chat = await startChat(engine, streamed as ChatCompletionBody, controller.signal, trace);
        for await (const chunk of chunksUntilShutdown(chatChunks(engine, chat), state.shutdown, () => controller.abort())) {
          if (controller.signal.aborted) break;
          send({ type: 'chunk', id, chunk });
          // A slow reader slows its own generations instead of growing the send buffer.
          while (socket.bufferedAmount > HIGH_WATER_BYTES && socket.readyState === socket.OPEN && !controller.signal.aborted) {
            await new Promise((r) => setTimeout(r, 5));
          }
        }
        send(controller.signal.aborted ? { type: 'cancelled', id } : { type: 'done', id });
      } catch (e) {
        if (controller.signal.aborted && !(e instanceof ShutdownError)) send({ type: 'cancelled', id });
        else sendError(id, e);
      } finally {
        if (running.get(id) === controller) running.delete(id);
        request.log.info({ route: CHAT_WS_PATH, wsRequestId: id, durationMs: Math.round((performance.now() - trace.arrival) * 1000) / 1000, ...trace.summary() }, 'websocket request');
      }
    };

    // Messages are taken in the order sent, though a large one is parsed off the loop (a
    // cancel must not overtake the request it cancels).
    let inOrder: Promise<void> = Promise.resolve();
    socket.on('message', (data, isBinary) => {
      const bytes = isBinary ? null : wsBytes(data);
      const parsing = bytes === null ? Promise.resolve(undefined) : json.parse(bytes).then((v) => ({ v }), () => null);
      inOrder = inOrder.then(async () => {
        const result = await parsing;
        let id: string | undefined;
        try {
          if (result === undefined) throw new InvalidRequestError('send JSON text messages', null);
          if (result === null) throw new InvalidRequestError('the message is not valid JSON', null);
          const parsed = result.v;
          // The id first, so that every later refusal is addressed to its request.
          if (isObject(parsed) && typeof parsed['id'] === 'string' && parsed['id'] !== '') id = parsed['id'];
          if (!validMessage(parsed)) throw schemaError(validMessage.errors ?? [], '', 'the message');
          const msg = parsed as WsClientMessage;
          if (msg.type === 'request') {
            if (msg.body === undefined) throw new InvalidRequestError('body: a chat completion request (an object) is required', 'body');
            void run(msg.id, msg.body);
          } else {
            const c = running.get(msg.id);
            if (c === undefined) throw new InvalidRequestError(`id: no running request ${JSON.stringify(msg.id)} on this socket`, 'id');
            c.abort();
          }
        } catch (e) {
          sendError(id ?? null, e);
        }
      });
    });
    socket.on('close', () => {
      for (const c of running.values()) c.abort();
      running.clear();
    });
  } });
}

/** A text message's bytes, however ws framed them. */
function wsBytes(data: Buffer | ArrayBuffer | Buffer[]): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  return data instanceof ArrayBuffer ? new Uint8Array(data) : data;
}
