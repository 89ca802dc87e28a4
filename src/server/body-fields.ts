/**
 * Reading the parts of a request body its schema leaves open (Responses input items, Anthropic
 * content blocks, tools, response formats): the object test, a required string field named in
 * its 400, and the ids the adapters give what they create.
 */
import { randomUUID } from 'node:crypto';
import { InvalidRequestError } from '../errors.ts';

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `obj[name]` as a string, else a 400 naming `${p}.${name}`. */
export function requiredString(obj: Record<string, unknown>, name: string, p: string): string {
  const v = obj[name];
  if (typeof v !== 'string') throw new InvalidRequestError(`${p}.${name}: required, a string`, `${p}.${name}`);
  return v;
}

/** A fresh id: `prefix` and 32 hex digits (`resp_…`, `msg_…`). */
export function newId(prefix: string): string {
  return `${prefix}${randomUUID().replace(/-/g, '')}`;
}
