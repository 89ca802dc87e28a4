/**
 * The one JSON parse of request bodies, shared by the event loop (small bodies) and the parser
 * thread (large ones, json-worker.ts), and the messages between them. Fastify's defaults for
 * prototype poisoning: `__proto__` and `constructor.prototype` keys are refused, never stripped.
 */
import sjson from 'secure-json-parse';

/** A body for the parser thread, and its answer. */
export interface JsonJob { readonly id: number; readonly body: Uint8Array }
export type JsonReply = { readonly id: number; readonly value: unknown } | { readonly id: number; readonly invalid: true };

const PARSE_OPTIONS = { protoAction: 'error', constructorAction: 'error' } as const;

/** The value of a UTF-8 JSON body; throws on invalid JSON or poisoning. */
export function parseJsonBytes(body: Uint8Array): unknown {
  return sjson.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength), undefined, PARSE_OPTIONS);
}
