/**
 * Closing a connection whose request body was refused unread (413) without losing the answer.
 * Fastify marks such a reply `Connection: close` and Node then closes the socket as soon as the
 * response is written, while the client is still sending its body: closing a socket with unread
 * data makes the kernel send a reset, and a reset that reaches the client before it has read
 * the 413 discards it (the client sees ECONNRESET or EPIPE instead of an error it can show).
 * Instead the connection is kept until the body has arrived (Node reads and discards it), then
 * ended cleanly; a body still arriving after `LINGER_MS` is cut, so a client cannot hold the
 * socket by sending forever (nginx's lingering close, in the same spirit).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** How long a refused body may go on arriving after its error response before the connection is cut. */
export const LINGER_MS = 5000;

/**
 * Call while answering `req` with an error, before its body was read. The answer still says
 * `Connection: close`; only the moment the socket closes changes.
 */
export function closeAfterBody(req: IncomingMessage, res: ServerResponse, lingerMs = LINGER_MS): void {
  const socket = req.socket;
  // Node ends a `Connection: close` exchange by socket.destroySoon() once the response is
  // written; this socket instead ends below, when the body is in too.
  socket.destroySoon = () => undefined;
  const cut = setTimeout(() => socket.destroy(), lingerMs);
  cut.unref();
  socket.once('close', () => clearTimeout(cut));
  const bodyDone = req.complete ? Promise.resolve() : new Promise<void>((done) => { req.once('end', done); });
  const sent = res.writableFinished ? Promise.resolve() : new Promise<void>((done) => { res.once('finish', done); });
  void Promise.all([bodyDone, sent]).then(() => { clearTimeout(cut); socket.end(); });
}
