/**
 * Answers for what never reaches a route, in the one error shape: Node's HTTP parser errors
 * (malformed requests, headers over the limit: 431, a bad chunk, an HTTP/2 preface), a missing
 * Host header, an `Expect` other than 100-continue (417), and CONNECT (405). Without these,
 * Node and Fastify answer with their own bodies, an empty response, or a closed socket.
 */
import type { Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { errorBody } from './error-body.ts';

/** A raw HTTP/1.1 response carrying an OpenAI error body; the connection closes after it. */
function rawResponse(status: number, reason: string, message: string, code: string, extra = ''): string {
  const body = JSON.stringify(errorBody(message, 'invalid_request_error', null, code));
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${extra}\r\n${body}`;
}

/** Fastify's clientErrorHandler option: what Node's parser refused. */
export function clientErrorHandler(err: NodeJS.ErrnoException & { bytesParsed?: number }, socket: Socket): void {
  // A response already under way cannot be replaced (a bad chunk in a body being read can: its headers are not sent).
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (!socket.writable || inFlight?.headersSent === true) { socket.destroy(); return; }
  let answer: string;
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      answer = rawResponse(431, 'Request Header Fields Too Large', 'The request line and headers are larger than the server accepts.', 'headers_too_large');
      break;
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      answer = rawResponse(408, 'Request Timeout', 'The request was not received in time.', 'request_timeout');
      break;
    case 'ECONNRESET':
      socket.destroy();
      return;
    default:
      answer = rawResponse(400, 'Bad Request', `Malformed HTTP request (${err.code ?? 'parse error'}).`, 'bad_request');
  }
  socket.end(answer);
}

/** Node's server events that Fastify leaves unanswered: Expect other than 100-continue, CONNECT. */
export function registerRawRefusals(app: FastifyInstance): void {
  const server = app.server;
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const body = JSON.stringify(errorBody(`Expectation not supported: ${String(req.headers.expect).slice(0, 100)} (only 100-continue is).`, 'invalid_request_error', null, 'expectation_failed'));
    res.writeHead(417, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
  });
  server.on('connect', (_req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => undefined);
    socket.end(rawResponse(405, 'Method Not Allowed', 'CONNECT is not supported: this is not a proxy.', 'method_not_allowed', 'allow: GET, POST, OPTIONS\r\n'));
  });
}
