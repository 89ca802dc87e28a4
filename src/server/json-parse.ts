/**
 * The one JSON parse of request bodies, on the event loop (small bodies) and in the parser
 * thread (large ones: `PARSER_THREAD`, json-body.ts), and the messages between them. Fastify's
 * defaults for prototype poisoning: `__proto__` and `constructor.prototype` keys are refused,
 * never stripped.
 */
import { createRequire } from 'node:module';
import sjson from 'secure-json-parse';

/** A body for the parser thread, and its answer. */
export interface JsonJob { readonly id: number; readonly body: Uint8Array }
export type JsonReply =
  | { readonly id: number; readonly value: unknown }
  | { readonly id: number; readonly invalid: true }
  /** Parsed, but the value cannot cross threads (nested too deep for structured clone): parse it in place. */
  | { readonly id: number; readonly uncloneable: true };

const PARSE_OPTIONS = { protoAction: 'error', constructorAction: 'error' } as const;

/**
 * The parser thread's whole program, run with `eval: true` and `workerData: PARSER_THREAD_DATA`:
 * plain JavaScript needing no loader, so the thread is up in milliseconds from source (tsx) and
 * from dist/ alike. It loads the same secure-json-parse by absolute path.
 */
export const PARSER_THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const sjson = require(workerData.sjson);
parentPort.on('message', ({ id, body }) => {
  let reply;
  try { reply = { id, value: sjson.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength), undefined, workerData.options) }; }
  catch { reply = { id, invalid: true }; }
  try { parentPort.postMessage(reply); } catch { parentPort.postMessage({ id, uncloneable: true }); }
});`;
export const PARSER_THREAD_DATA = { sjson: createRequire(import.meta.url).resolve('secure-json-parse'), options: PARSE_OPTIONS };

/** The value of a UTF-8 JSON body; throws on invalid JSON or poisoning. */
export function parseJsonBytes(body: Uint8Array): unknown {
  return sjson.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength), undefined, PARSE_OPTIONS);
}
