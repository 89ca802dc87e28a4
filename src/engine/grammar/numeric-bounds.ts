/**
 * Numeric bounds in JSON schemas, compiled by us instead of xgrammar. xgrammar 0.1.27 writes
 * wrong range grammars (seen in the EBNF it generates): `integer` 0..130 lets 131-139 through,
 * a one-sided negative minimum yields `"-" ( )` (a lone "-": invalid JSON), `maximum: -2` lets
 * -1 through, a `number` at its bound takes any fraction (1.27 under `maximum: 1`), and a
 * non-integer bound becomes `"0" [\u0000-\U0010FFFF] "5"` (any character for the point).
 *
 * So each bounded `integer` / `number` subschema is replaced by a placeholder constant before
 * xgrammar converts the schema to EBNF, and the placeholder's literal in that EBNF by our own
 * rule for the range: the decimal texts of exactly the integers in range, and for `number` an
 * integer part and up to 6 fraction digits chosen so every value is within the bounds (a
 * subset of the reals in range: no exponents; fractions only where a whole integer part fits).
 */
import { ConstraintError } from './constraint.ts';

const BOUNDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const;
/** Subschema keywords: a schema, a list of schemas, or a map of them. */
const ONE = ['items', 'additionalProperties', 'not', 'if', 'then', 'else', 'contains', 'propertyNames'];
const LIST = ['anyOf', 'oneOf', 'allOf', 'prefixItems', 'items'];
const MAP = ['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas'];
/** A missing side of a bounded range stops here (one-sided ranges to 1e15 made grammars xgrammar aborts on). */
const FAR = 1e9;

type Schema = Record<string, unknown>;
const isSchema = (v: unknown): v is Schema => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface BoundedSchema {
  /** The schema with each bounded numeric subschema replaced by `{const: placeholder}`. */
  readonly schema: Schema;
  /** Placeholder string -> EBNF for its range (empty when the schema has no bounds). */
  readonly rules: ReadonlyMap<string, string>;
}

/** Replaces bounded numeric subschemas by placeholders (see the header); ConstraintError for an empty range. */
export function extractNumericBounds(schema: Schema, tag: string): BoundedSchema {
  const rules = new Map<string, string>();
  const walk = (node: Schema, path: string): Schema => {
    const out: Schema = { ...node };
    for (const key of ONE) if (isSchema(out[key])) out[key] = walk(out[key], `${path}/${key}`);
    for (const key of LIST) {
      const v = out[key];
      if (Array.isArray(v)) out[key] = v.map((s, i) => (isSchema(s) ? walk(s, `${path}/${key}/${i}`) : s));
    }
    for (const key of MAP) {
      const v = out[key];
      if (isSchema(v)) out[key] = Object.fromEntries(Object.entries(v).map(([k, s]) => [k, isSchema(s) ? walk(s, `${path}/${key}/${k}`) : s]));
    }
    if (!BOUNDS.some((k) => typeof out[k] === 'number')) return out;
    const type = out.type;
    if (type !== 'integer' && type !== 'number') {
      if (type === undefined || (Array.isArray(type) && (type.includes('integer') || type.includes('number')))) {
        throw new ConstraintError(`${path}: numeric bounds need "type": "integer" or "number" alone`);
      }
      return out; // bounds on a non-numeric type constrain nothing
    }
    const num = (k: (typeof BOUNDS)[number]): number | null => (typeof out[k] === 'number' ? out[k] : null);
    const rule = type === 'integer' ? integerRule(num, path) : numberRule(num, path);
    const placeholder = `${tag}${rules.size}`;
    rules.set(placeholder, rule);
    const rest: Schema = {};
    for (const [k, v] of Object.entries(out)) if (k === 'description' || k === 'title') rest[k] = v;
    return { ...rest, const: placeholder };
  };
  return { schema: walk(schema, '#'), rules };
}

/** xgrammar's EBNF with each placeholder's literal replaced by its rule; throws if one is missing. */
export function substituteRules(ebnf: string, rules: ReadonlyMap<string, string>): string {
  let out = ebnf;
  for (const [placeholder, rule] of rules) {
    // A string constant is written as the JSON text in an EBNF literal: "\"<placeholder>\"".
    const literal = `"\\"${placeholder}\\""`;
    if (!out.includes(literal)) throw new Error(`numeric bounds: placeholder ${placeholder} not found in the generated grammar`);
    out = out.split(literal).join(`(${rule})`);
  }
  return out;
}

type Num = (k: (typeof BOUNDS)[number]) => number | null;

/** The least and greatest integers within the bounds (FAR where a side is open). */
function integerLimits(num: Num): [number, number] {
  const lows = [num('minimum') === null ? -FAR : Math.ceil(num('minimum')!), num('exclusiveMinimum') === null ? -FAR : Math.floor(num('exclusiveMinimum')!) + 1];
  const highs = [num('maximum') === null ? FAR : Math.floor(num('maximum')!), num('exclusiveMaximum') === null ? FAR : Math.ceil(num('exclusiveMaximum')!) - 1];
  return [Math.max(-FAR, ...lows), Math.min(FAR, ...highs)];
}

function integerRule(num: Num, path: string): string {
  const [lo, hi] = integerLimits(num);
  if (lo > hi) throw new ConstraintError(`${path}: no integer lies within its bounds`);
  return intRange(lo, hi);
}

/**
 * A `number` in range: whole integers in range, integer parts k >= 0 with a fraction when
 * k + 1 stays within the upper bound, negative ones when k - 1 stays within the lower, and
 * "-0.x" when both -1 and 0 are in range.
 */
function numberRule(num: Num, path: string): string {
  const [lo, hi] = integerLimits(num);
  const low = Math.max(num('minimum') ?? -FAR, num('exclusiveMinimum') ?? -FAR);
  const high = Math.min(num('maximum') ?? FAR, num('exclusiveMaximum') ?? FAR);
  const frac = '"." [0-9]{1,6}';
  const alts: string[] = [];
  if (lo <= hi) alts.push(intRange(lo, hi));
  const posLo = Math.max(0, lo), posHi = Math.floor(high) - 1;
  if (posLo <= posHi) alts.push(`(${intRange(posLo, posHi)}) ${frac}`);
  const negLo = Math.ceil(low) + 1, negHi = Math.min(-1, hi);
  if (negLo <= negHi) alts.push(`(${intRange(negLo, negHi)}) ${frac}`);
  if (low <= -1 && high >= 0) alts.push(`"-0" ${frac}`);
  if (alts.length === 0) throw new ConstraintError(`${path}: the bounds leave no value the grammar engine can write (a whole integer part is needed)`);
  return alts.join(' | ');
}

/** EBNF for the decimal texts (JSON: no leading zeros, no "-0") of the integers lo..hi. */
export function intRange(lo: number, hi: number): string {
  const alts: string[] = [];
  if (lo < 0) alts.push(`"-" (${natRange(Math.max(1, -hi), -lo)})`);
  if (hi >= 0) alts.push(natRange(Math.max(0, lo), hi));
  return alts.join(' | ');
}

/** 0 <= a <= b: split by digit count, then equal-length ranges. */
function natRange(a: number, b: number): string {
  const alts: string[] = [];
  for (let d = String(a).length; d <= String(b).length; d++) {
    const from = Math.max(a, d === 1 ? 0 : 10 ** (d - 1));
    const to = Math.min(b, 10 ** d - 1);
    if (from <= to) alts.push(sameLength(String(from), String(to)));
  }
  return alts.join(' | ');
}

/** Digit strings of one length from x to y (x <= y). */
function sameLength(x: string, y: string): string {
  const n = x.length;
  if (n === 1) return x === y ? `"${x}"` : `[${x}-${y}]`;
  const x0 = Number(x[0]), y0 = Number(y[0]);
  const tailX = x.slice(1), tailY = y.slice(1);
  if (x0 === y0) return `"${x0}" (${sameLength(tailX, tailY)})`;
  const alts = [`"${x0}" (${sameLength(tailX, '9'.repeat(n - 1))})`];
  if (x0 + 1 <= y0 - 1) alts.push(`${x0 + 1 === y0 - 1 ? `"${x0 + 1}"` : `[${x0 + 1}-${y0 - 1}]`} [0-9]{${n - 1}}`);
  alts.push(`"${y0}" (${sameLength('0'.repeat(n - 1), tailY)})`);
  return alts.join(' | ');
}
