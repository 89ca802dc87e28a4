/**
 * The request fields that constrain output, mapped onto one engine Constraint: OpenAI's
 * `response_format` (`text`, `json_object`, `json_schema` with `strict`), vLLM's
 * `structured_outputs` (`json`, `json_object`, `regex`, `choice`, `grammar`) and its older
 * `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`; and the tool fields
 * (`tools`, `tool_choice`, `parallel_tool_calls`). At most one source of constraint per
 * request: two are a 400 naming the second, never a silent choice between them. Whether a
 * schema or grammar compiles is the engine's to say (a 400 naming the same parameter).
 */
import { InvalidRequestError } from '../errors.ts';
import { isObject } from './body-fields.ts';
import type { Constraint } from '../engine/grammar/constraint.ts';
import { checkTools, toolCallConstraint, type ToolChoice, type ToolFunction } from './tool-calls.ts';

/** Tool calling as the request asks for it (null: no tools offered). */
export interface ToolRequest {
  readonly tools: readonly ToolFunction[];
  readonly choice: ToolChoice;
  readonly parallel: boolean;
}

export interface OutputConstraints {
  readonly constraint: Constraint | null;
  readonly tools: ToolRequest | null;
}

type Body = Readonly<Record<string, unknown>>;


/** The constraint and tool request of a chat (tools allowed) or completions body. */
export function outputConstraints(body: Body, opts: { readonly tools: boolean }): OutputConstraints {
  const found: Constraint[] = [];
  const add = (c: Constraint | null): void => {
    if (c === null) return;
    if (found.length > 0) {
      throw new InvalidRequestError(`${c.param}: only one of response_format, structured_outputs and guided_* may constrain the output; ${found[0]!.param} already does`, c.param ?? null);
    }
    found.push(c);
  };
  add(responseFormat(body['response_format']));
  add(structuredOutputs(body['structured_outputs']));
  for (const c of guidedFields(body)) add(c);
  const tools = opts.tools ? toolRequest(body) : null;
  const toolConstraint = tools === null ? null : toolCallConstraint(tools.tools, tools.choice, tools.parallel);
  if (toolConstraint !== null && found.length > 0) {
    throw new InvalidRequestError(`${found[0]!.param}: cannot be combined with tools unless tool_choice is 'none'`, found[0]!.param ?? null);
  }
  const constraint: Constraint | null = toolConstraint !== null
    ? { kind: 'structural_tag', tag: toolConstraint, param: 'tools' }
    : found[0] ?? null;
  return { constraint, tools };
}

function responseFormat(v: unknown): Constraint | null {
  const param = 'response_format';
  if (v === undefined || v === null) return null;
  if (!isObject(v)) throw new InvalidRequestError(`${param}: must be an object with a type`, param);
  switch (v['type']) {
    case 'text': return null;
    case 'json_object': return { kind: 'json_object', param };
    case 'json_schema': {
      const js = v['json_schema'];
      if (!isObject(js)) throw new InvalidRequestError(`${param}.json_schema: required with type json_schema, an object with name and schema`, `${param}.json_schema`);
      if (typeof js['name'] !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(js['name'])) {
        throw new InvalidRequestError(`${param}.json_schema.name: required, 1-64 characters of a-z, A-Z, 0-9, _ and -`, `${param}.json_schema.name`);
      }
      const schema = js['schema'] ?? { type: 'object' };
      if (!isObject(schema) && typeof schema !== 'boolean') throw new InvalidRequestError(`${param}.json_schema.schema: must be a JSON Schema object`, `${param}.json_schema.schema`);
      const strict = js['strict'];
      if (strict !== undefined && strict !== null && typeof strict !== 'boolean') throw new InvalidRequestError(`${param}.json_schema.strict: must be a boolean`, `${param}.json_schema.strict`);
      // Absent is strict, as the engine documents it (no properties the schema does not list);
      // only `strict: false` lets the schema's own additionalProperties rules apply.
      return { kind: 'json_schema', schema, strict: strict !== false, param };
    }
    default:
      throw new InvalidRequestError(`${param}.type: must be text, json_object or json_schema`, `${param}.type`);
  }
}

function structuredOutputs(v: unknown): Constraint | null {
  const param = 'structured_outputs';
  if (v === undefined || v === null) return null;
  if (!isObject(v)) throw new InvalidRequestError(`${param}: must be an object with one of json, json_object, regex, choice, grammar`, param);
  const keys = ['json', 'json_object', 'regex', 'choice', 'grammar'].filter((k) => v[k] !== undefined && v[k] !== null && v[k] !== false);
  const unknown = Object.keys(v).filter((k) => !['json', 'json_object', 'regex', 'choice', 'grammar', 'disable_any_whitespace', 'disable_additional_properties', 'whitespace_pattern'].includes(k));
  if (unknown.length > 0) throw new InvalidRequestError(`${param}.${unknown[0]}: not supported (json, json_object, regex, choice and grammar are)`, `${param}.${unknown[0]}`);
  if (keys.length !== 1) throw new InvalidRequestError(`${param}: exactly one of json, json_object, regex, choice, grammar must be given${keys.length > 1 ? `, got ${keys.join(', ')}` : ''}`, param);
  const key = keys[0]!;
  return oneConstraint(key === 'json_object' ? 'json_object' : key, v[key], `${param}.${key}`);
}

function guidedFields(body: Body): Constraint[] {
  const out: Constraint[] = [];
  for (const [field, kind] of [['guided_json', 'json'], ['guided_regex', 'regex'], ['guided_choice', 'choice'], ['guided_grammar', 'grammar']] as const) {
    const v = body[field];
    if (v !== undefined && v !== null) out.push(oneConstraint(kind, v, field));
  }
  return out;
}

/** One vLLM-style constraint value, checked for its kind. */
function oneConstraint(kind: string, v: unknown, param: string): Constraint {
  switch (kind) {
    case 'json': {
      let schema = v;
      if (typeof v === 'string') {
        try { schema = JSON.parse(v) as unknown; } catch { throw new InvalidRequestError(`${param}: not valid JSON`, param); }
      }
      if (!isObject(schema) && typeof schema !== 'boolean') throw new InvalidRequestError(`${param}: must be a JSON Schema (an object, or its JSON text)`, param);
      // Strict, as vLLM compiles guided JSON with xgrammar (its strict mode is the default).
      return { kind: 'json_schema', schema, strict: true, param };
    }
    case 'json_object':
      if (v !== true) throw new InvalidRequestError(`${param}: must be true`, param);
      return { kind: 'json_object', param };
    case 'regex':
      if (typeof v !== 'string' || v === '') throw new InvalidRequestError(`${param}: must be a non-empty string`, param);
      return { kind: 'regex', pattern: v, param };
    case 'choice':
      if (!Array.isArray(v) || v.length === 0 || !v.every((c) => typeof c === 'string' && c !== '')) {
        throw new InvalidRequestError(`${param}: must be a non-empty array of non-empty strings`, param);
      }
      return { kind: 'choice', choices: v as string[], param };
    default:
      if (typeof v !== 'string' || v.trim() === '') throw new InvalidRequestError(`${param}: must be a non-empty EBNF grammar`, param);
      return { kind: 'grammar', ebnf: v, param };
  }
}

function toolRequest(body: Body): ToolRequest | null {
  const raw = body['tools'];
  const choiceRaw = body['tool_choice'];
  const parallelRaw = body['parallel_tool_calls'];
  if (parallelRaw !== undefined && parallelRaw !== null && typeof parallelRaw !== 'boolean') {
    throw new InvalidRequestError('parallel_tool_calls: must be a boolean', 'parallel_tool_calls');
  }
  if (raw === undefined || raw === null || (Array.isArray(raw) && raw.length === 0)) {
    if (choiceRaw !== undefined && choiceRaw !== null && choiceRaw !== 'none' && choiceRaw !== 'auto') {
      throw new InvalidRequestError('tool_choice: requires a non-empty tools list', 'tool_choice');
    }
    return null;
  }
  if (!Array.isArray(raw)) throw new InvalidRequestError('tools: must be an array of {type: "function", function: {...}}', 'tools');
  const tools = raw.map((t: unknown, i): ToolFunction => {
    const p = `tools[${i}]`;
    if (!isObject(t) || t['type'] !== 'function' || !isObject(t['function'])) throw new InvalidRequestError(`${p}: must be {type: "function", function: {name, description?, parameters?}}`, p);
    const f = t['function'];
    if (typeof f['name'] !== 'string') throw new InvalidRequestError(`${p}.function.name: required, a string`, `${p}.function.name`);
    if (f['description'] !== undefined && typeof f['description'] !== 'string') throw new InvalidRequestError(`${p}.function.description: must be a string`, `${p}.function.description`);
    const params = f['parameters'] ?? { type: 'object', properties: {} };
    if (!isObject(params)) throw new InvalidRequestError(`${p}.function.parameters: must be a JSON Schema object`, `${p}.function.parameters`);
    return { name: f['name'], ...(typeof f['description'] === 'string' ? { description: f['description'] } : {}), parameters: params };
  });
  const choice = toolChoice(choiceRaw);
  checkTools(tools, choice);
  return { tools, choice, parallel: parallelRaw !== false };
}

function toolChoice(v: unknown): ToolChoice {
  if (v === undefined || v === null) return 'auto';
  if (v === 'none' || v === 'auto' || v === 'required') return v;
  if (isObject(v) && v['type'] === 'function' && isObject(v['function']) && typeof v['function']['name'] === 'string') return { name: v['function']['name'] };
  throw new InvalidRequestError('tool_choice: must be none, auto, required or {type: "function", function: {name}}', 'tool_choice');
}
