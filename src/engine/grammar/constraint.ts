/**
 * What a caller may constrain a generation to, as the engine receives it (already parsed from
 * the HTTP request into native values; the server maps `response_format`, `structured_outputs`,
 * `guided_*` and tool calls onto it). Plain data: it crosses to the inference worker in the
 * submit message. The grammar engine (xgrammar, see grammar/compiler.ts) turns each kind into a
 * compiled grammar; `constraintKey` names the compiled result for the cache.
 */

export type Constraint =
  /**
   * Output is one JSON value valid against `schema` (a JSON Schema object, or its JSON text).
   * `strict` (OpenAI's flag) true or absent: properties and items the schema does not list are
   * not generated (xgrammar's strict mode, as `additionalProperties: false` everywhere);
   * false: the schema's own `additionalProperties` / `items` rules apply.
   */
  | { readonly kind: 'json_schema'; readonly schema: unknown; readonly strict?: boolean; readonly param?: string }
  /** Output is any one JSON value whose top level is an object (OpenAI's `json_object`). */
  | { readonly kind: 'json_object'; readonly param?: string }
  /** Output matches the regular expression `pattern` as a whole (ECMAScript-style syntax, no flags). */
  | { readonly kind: 'regex'; readonly pattern: string; readonly param?: string }
  /** Output is exactly one of `choices` (non-empty strings; vLLM's `guided_choice`). */
  | { readonly kind: 'choice'; readonly choices: readonly string[]; readonly param?: string }
  /** Output matches the EBNF grammar `ebnf` from its rule `root` (xgrammar's / GBNF-like syntax). */
  | { readonly kind: 'grammar'; readonly ebnf: string; readonly param?: string }
  /**
   * Output follows xgrammar's structural tag `tag` (its JSON form, `{type: 'structural_tag',
   * format}`): how tool calls are forced (src/server/tool-calls.ts), free text with tagged JSON.
   */
  | { readonly kind: 'structural_tag'; readonly tag: Readonly<Record<string, unknown>>; readonly param?: string };

// `param` (every kind): the request parameter the constraint came from (e.g. 'response_format',
// 'structured_outputs', 'tool_choice'); an InvalidRequestError for a constraint that does not
// compile names it. Default 'response_format'. It is not part of the compiled grammar's key.

export type ConstraintKind = Constraint['kind'];

/** A constraint the grammar engine refused; `message` says why (xgrammar's words, or ours). */
export class ConstraintError extends Error {
  override readonly name = 'ConstraintError';
}

export const DEFAULT_CONSTRAINT_PARAM = 'response_format';

/** Null when `c` is well formed for its kind, else what is wrong (engine input that skipped a server schema). */
export function checkConstraintShape(c: Constraint): string | null {
  const v = c as { kind?: unknown } & Record<string, unknown>;
  if (v.param !== undefined && typeof v.param !== 'string') return 'param must be a string';
  switch (v.kind) {
    case 'json_schema': return v.schema === undefined || v.schema === null ? 'a JSON schema is required' : null;
    case 'json_object': return null;
    case 'regex': return typeof v.pattern === 'string' ? null : 'the pattern must be a string';
    case 'choice': return Array.isArray(v.choices) && v.choices.length > 0 && v.choices.every((x) => typeof x === 'string' && x.length > 0)
      ? null : 'choices must be a non-empty list of non-empty strings';
    case 'grammar': return typeof v.ebnf === 'string' ? null : 'the grammar must be a string';
    case 'structural_tag': return typeof v.tag === 'object' && v.tag !== null && !Array.isArray(v.tag) ? null : 'the structural tag must be an object';
    default: return `unknown constraint kind ${JSON.stringify(v.kind)}`;
  }
}

/**
 * The cache key of a constraint's compiled grammar: its kind and content with object keys in
 * sorted order, so two requests with the same schema written in a different key order share
 * one compilation. Throws TypeError for a schema that is not JSON (cycles, BigInt).
 */
export function constraintKey(c: Constraint): string {
  switch (c.kind) {
    // Property order is kept: xgrammar generates properties in the order the schema lists them.
    case 'json_schema': return `json_schema:${c.strict === false ? 'loose' : 'strict'}:${JSON.stringify(schemaValue(c.schema))}`;
    case 'json_object': return 'json_object';
    case 'regex': return `regex:${c.pattern}`;
    case 'choice': return `choice:${JSON.stringify(c.choices)}`;
    case 'grammar': return `grammar:${c.ebnf}`;
    case 'structural_tag': return `structural_tag:${JSON.stringify(c.tag)}`;
  }
}

/** A schema given as JSON text is parsed; anything else is taken as the schema value. */
export function schemaValue(schema: unknown): unknown {
  return typeof schema === 'string' ? JSON.parse(schema) as unknown : schema;
}

/** JSON with object keys sorted at every level (the order JSON Schema semantics ignore). */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const keys = Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  const s = JSON.stringify(v);
  if (s === undefined) throw new TypeError(`not a JSON value: ${typeof v}`);
  return s;
}

/**
 * A choice as an EBNF alternation of string literals. xgrammar's EBNF string literals take
 * C-style escapes, so each character that needs one is written as \uXXXX / \U00XXXXXX.
 */
export function choiceEbnf(choices: readonly string[]): string {
  const literal = (s: string): string => {
    let out = '"';
    for (const ch of s) {
      const cp = ch.codePointAt(0)!;
      out += cp < 0x20 || ch === '"' || ch === '\\' || cp > 0x7e
        ? (cp > 0xffff ? `\\U${cp.toString(16).padStart(8, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`)
        : ch;
    }
    return `${out}"`;
  };
  return `root ::= ${choices.map(literal).join(' | ')}`;
}
