/**
 * The one mapping from a failed schema validation (Ajv's errors) to OpenAI's 400: a message
 * stating the violated constraint and the value, the parameter it names (`messages[0].role`,
 * `temperature`; an element of an array or a key of a map names the field holding it, as
 * OpenAI's param does), code unknown_parameter for a field no schema declares.
 *
 * Ajv runs with allErrors off, so validation stops at the first failure; combinators
 * (anyOf, nullable fields) record their branches' errors before their own, so the last error
 * is the decisive one. A nullable field's failure is explained by its non-null branch (the
 * role of a message, not "messages must be an array"). Messages show values through preview(), which is bounded in depth and
 * length: a 100 000-deep array in a typed field is a 400, never a stack overflow.
 */
import { InvalidRequestError } from '../errors.ts';

/** What this module reads of an Ajv error (the app's Ajv runs with `verbose`, which adds data and parentSchema). */
export interface SchemaError {
  readonly keyword: string;
  readonly instancePath: string;
  readonly schemaPath: string;
  readonly params: Readonly<Record<string, unknown>>;
  readonly data?: unknown;
  readonly parentSchema?: unknown;
  readonly schema?: unknown;
}

/** Ajv's options for request bodies: no field dropped, no type coerced, nothing filled in; errors carry the value and the schema. */
export const AJV_OPTIONS = { removeAdditional: false, coerceTypes: false, useDefaults: false, verbose: true } as const;

/**
 * The 400 for a failed validation. `prefix` goes before every parameter name ('' for none);
 * `subject` names the whole value when it is not an object.
 */
export function schemaError(errors: readonly SchemaError[], prefix = '', subject = 'the request body'): InvalidRequestError {
  const e = decisive(errors);
  if (e === undefined) return new InvalidRequestError(prefix === '' ? `${subject} is invalid` : `${prefix}: invalid`, prefix || null);
  const segments = e.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const at = (extra: readonly string[] = []): { path: string; param: string | null } => pathOf(prefix, [...segments, ...extra]);
  switch (e.keyword) {
    case 'additionalProperties': {
      const { path, param } = at([String(e.params['additionalProperty'])]);
      return new InvalidRequestError(`Unrecognized request argument supplied: ${path}`, param, 'unknown_parameter');
    }
    case 'required': {
      const missing = String(e.params['missingProperty']);
      const { path, param } = at([missing]);
      const schema = propertySchema(e.parentSchema, missing);
      return new InvalidRequestError(`${path}: required${schema === undefined ? '' : `, ${describe(schema)}`}`, param);
    }
    case 'propertyNames': {
      const { path, param } = at();
      return new InvalidRequestError(`${path}: the key ${preview(e.params['propertyName'])} is not allowed${keyRule(e.schema)}`, param);
    }
    default: {
      const { path, param } = at();
      if (path === '' || (segments.length === 0 && e.keyword === 'type')) {
        return new InvalidRequestError(prefix === '' ? `${subject} must be a JSON object` : `${prefix}: must be an object`, prefix || null);
      }
      return new InvalidRequestError(`${path}: must be ${describe(e.parentSchema)}, got ${preview(e.data)}`, param);
    }
  }
}

/** The last error, or for a nullable field's failure, the decisive error of its non-null branch. */
function decisive(errors: readonly SchemaError[]): SchemaError | undefined {
  let e = errors.at(-1);
  while (e !== undefined && e.keyword === 'anyOf' && Array.isArray(e.schema) && e.schema.length === 2) {
    const isNull = (b: unknown): boolean => isRecord(b) && b['type'] === 'null';
    if (isNull(e.schema[0]) === isNull(e.schema[1])) break; // a real choice, not a nullable field
    const branch = isNull(e.schema[0]) ? 1 : 0;
    const within = `${e.schemaPath}/${branch}/`;
    const inner = errors.filter((x) => x.schemaPath.startsWith(within)).at(-1);
    if (inner === undefined) break;
    e = inner;
  }
  return e;
}

/** The path as written in messages (`messages[0].content[1]`) and the param: the path without trailing indices or map keys. */
function pathOf(prefix: string, segments: readonly string[]): { path: string; param: string | null } {
  let path = prefix;
  let param = prefix;
  for (const s of segments) {
    if (/^[0-9]+$/.test(s)) {
      path += `[${s}]`;
    } else {
      path = path === '' ? s : `${path}.${s}`;
      param = path;
    }
  }
  return { path, param: param === '' ? null : param };
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function propertySchema(schema: unknown, key: string): unknown {
  return isRecord(schema) && isRecord(schema['properties']) ? schema['properties'][key] : undefined;
}

function keyRule(keySchema: unknown): string {
  return isRecord(keySchema) && typeof keySchema['pattern'] === 'string' ? ` (keys must match ${keySchema['pattern']})` : '';
}

/** What a schema accepts, in words: "a number from 0 to 2", "a string or an array of up to 4 strings". */
export function describe(schema: unknown, depth = 0): string {
  if (!isRecord(schema) || depth > 3) return 'a valid value';
  const alternatives = schema['anyOf'] ?? schema['oneOf'];
  if (Array.isArray(alternatives)) {
    // null means "not set" on every optional field: it is accepted, not worth stating.
    const words = alternatives.filter((a) => !(isRecord(a) && a['type'] === 'null')).map((a) => describe(a, depth + 1));
    return words.length <= 1 ? words[0] ?? 'null' : `${words.slice(0, -1).join(', ')} or ${words.at(-1)}`;
  }
  if ('const' in schema) return JSON.stringify(schema['const']);
  if (Array.isArray(schema['enum'])) return `one of ${schema['enum'].map((v) => JSON.stringify(v)).join(', ')}`;
  switch (schema['type']) {
    case 'integer': return `an integer${range(schema)}`;
    case 'number': return `a number${range(schema)}`;
    case 'boolean': return 'a boolean';
    case 'null': return 'null';
    case 'string': {
      const pattern = typeof schema['pattern'] === 'string' ? ` matching ${schema['pattern']}` : '';
      return `${schema['minLength'] === 1 ? 'a non-empty string' : 'a string'}${pattern}`;
    }
    case 'array': {
      const min = schema['minItems'];
      const max = schema['maxItems'];
      const size = typeof max === 'number' ? `up to ${max} ` : '';
      const items = describe(schema['items'], depth + 1).replace(/^an? /, '');
      return `${min === 1 ? 'a non-empty array' : 'an array'} of ${size}${plural(items)}`;
    }
    case 'object': {
      const props = schema['properties'];
      if (!isRecord(props) || Object.keys(props).length === 0 || Object.keys(props).length > 3) return 'an object';
      const fields = Object.entries(props).map(([k, v]) => (isRecord(v) && 'const' in v ? `${k}: ${JSON.stringify(v['const'])}` : k));
      return `an object {${fields.join(', ')}}`;
    }
    default: return 'a valid value';
  }
}

function range(schema: Readonly<Record<string, unknown>>): string {
  const num = (k: string): number | undefined => (typeof schema[k] === 'number' ? schema[k] : undefined);
  const min = num('minimum');
  const max = num('maximum');
  const exMin = num('exclusiveMinimum');
  // SafeInteger's bounds (schemas/common.ts) are stated briefly, not as 16 digits.
  const hasMin = min !== undefined && min > -Number.MAX_SAFE_INTEGER;
  const hasMax = max !== undefined && max < Number.MAX_SAFE_INTEGER;
  const safe = max === Number.MAX_SAFE_INTEGER ? (hasMin ? ' (up to 2^53 - 1)' : ' (|n| <= 2^53 - 1)') : '';
  if (exMin !== undefined) return hasMax ? ` > ${exMin} and <= ${max}` : ` > ${exMin}`;
  if (hasMin && hasMax) return ` from ${min} to ${max}`;
  if (hasMin) return ` >= ${min}${safe}`;
  if (hasMax) return ` <= ${max}`;
  return safe;
}

/** "string" -> "strings", "non-empty array of integers" -> "non-empty arrays of integers". */
function plural(noun: string): string {
  const kind = /\b(string|integer|number|boolean|object|array)\b/;
  return kind.test(noun) && !/^(one of|null|")/.test(noun) ? noun.replace(kind, '$1s') : `items that are ${noun}`;
}

const PREVIEW_CHARS = 60;

/**
 * A short, bounded rendering of a client's value for an error message: at most a few
 * elements or keys, two levels deep, PREVIEW_CHARS per string. Never recursive past that,
 * whatever the value's depth or size.
 */
export function preview(v: unknown, depth = 0): string {
  if (typeof v === 'string') return JSON.stringify(v.length > PREVIEW_CHARS ? `${v.slice(0, PREVIEW_CHARS)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) {
    if (depth >= 2) return v.length === 0 ? '[]' : '[...]';
    const items = v.slice(0, 3).map((x) => preview(x, depth + 1));
    return `[${items.join(', ')}${v.length > 3 ? ', ...' : ''}]`;
  }
  if (isRecord(v)) {
    const keys = Object.keys(v);
    if (depth >= 2) return keys.length === 0 ? '{}' : '{...}';
    const entries = keys.slice(0, 3).map((k) => `${JSON.stringify(k.slice(0, PREVIEW_CHARS))}: ${preview(v[k], depth + 1)}`);
    return `{${entries.join(', ')}${keys.length > 3 ? ', ...' : ''}}`;
  }
  return typeof v;
}
