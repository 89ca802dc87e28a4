/**
 * The JSON parser thread (json-body.ts): decodes and parses large request bodies so the HTTP
 * event loop does not. Each job is answered with the value or `invalid`.
 */
import { parentPort } from 'node:worker_threads';
import { parseJsonBytes, type JsonJob, type JsonReply } from './json-parse.ts';

const port = parentPort;
if (port === null) throw new Error('json-worker.ts runs as a worker thread');
port.on('message', ({ id, body }: JsonJob) => {
  let reply: JsonReply;
  try {
    reply = { id, value: parseJsonBytes(body) };
  } catch {
    reply = { id, invalid: true };
  }
  port.postMessage(reply);
});
