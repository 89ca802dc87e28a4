/**
 * Python's string stripping inside chat templates. Hugging Face renders templates with Python's
 * Jinja, whose `trim` filter and `.strip()` / `.lstrip()` / `.rstrip()` methods are Python's
 * `str.strip` family; `@huggingface/jinja` uses JavaScript's `String.prototype.trim`, which
 * strips another set of characters (U+FEFF, but not U+001C–U+001F nor U+0085), and so renders
 * some prompts differently by tokens. `pythonStripCalls` rewrites those calls in a parsed
 * template into calls to functions given with the render variables (`PYTHON_STRIP_FUNCTIONS`).
 */

/** The characters for which Python's `str.isspace()` is true: what `str.strip()` removes. */
const PYTHON_WHITESPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

type Side = 'both' | 'left' | 'right';

/** Python's `s.strip(chars)` / `lstrip` / `rstrip`: `chars` null or absent is the whitespace set. */
export function pythonStrip(s: string, side: Side = 'both', chars: string | null = null): string {
  // Every Python whitespace character is one UTF-16 unit; `chars` may hold astral characters.
  const set = chars === null ? null : new Set(Array.from(chars, (c) => c.codePointAt(0)!));
  const strips = (cp: number): boolean => (set === null ? PYTHON_WHITESPACE.has(cp) : set.has(cp));
  const cps = Array.from(s, (c) => c.codePointAt(0)!);
  let start = 0;
  let end = cps.length;
  if (side !== 'right') while (start < end && strips(cps[start]!)) start++;
  if (side !== 'left') while (end > start && strips(cps[end - 1]!)) end--;
  return start === 0 && end === cps.length ? s : String.fromCodePoint(...cps.slice(start, end));
}

const FUNCTION_OF: Readonly<Record<string, Side>> = { strip: 'both', lstrip: 'left', rstrip: 'right' };
const name = (side: Side): string => `__gemma_serve_py_${side}strip__`;

function callable(side: Side, what: string): (value: unknown, chars?: unknown) => string {
  return (value, chars) => {
    if (typeof value !== 'string') throw new Error(`${what}: expected a string, got ${value === null ? 'none' : typeof value}`);
    if (chars !== undefined && chars !== null && typeof chars !== 'string') throw new Error(`${what}: chars must be a string`);
    return pythonStrip(value, side, chars ?? null);
  };
}

/** Render variables the rewritten template calls (give them after any user-supplied variables). */
export const PYTHON_STRIP_FUNCTIONS: Readonly<Record<string, (value: unknown, chars?: unknown) => string>> = {
  [name('both')]: callable('both', 'strip'),
  [name('left')]: callable('left', 'lstrip'),
  [name('right')]: callable('right', 'rstrip'),
};

/** An AST node of @huggingface/jinja (classes whose `type` names the kind). */
interface Node { readonly type: string; readonly [key: string]: unknown }

const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && typeof (v as { type?: unknown }).type === 'string';

const call = (side: Side, args: readonly unknown[]): Node => ({ type: 'CallExpression', callee: { type: 'Identifier', value: name(side) }, args });

/** `x | trim`, `x | trim(chars)`, `x.strip()`, `x.lstrip(chars)`… as calls of PYTHON_STRIP_FUNCTIONS; others unchanged. */
function replacement(node: Node): Node | null {
  if (node.type === 'FilterExpression' && isNode(node['filter'])) {
    const filter = node['filter'];
    if (filter.type === 'Identifier' && filter['value'] === 'trim') return call('both', [node['operand']]);
    if (filter.type === 'CallExpression' && isNode(filter['callee']) && filter['callee'].type === 'Identifier' && filter['callee']['value'] === 'trim') {
      const args = filter['args'] as readonly unknown[];
      if (args.length <= 1) return call('both', [node['operand'], ...args]);
    }
  }
  if (node.type === 'CallExpression' && isNode(node['callee']) && node['callee'].type === 'MemberExpression') {
    const member = node['callee'];
    const property = member['property'];
    const args = node['args'] as readonly unknown[];
    if (member['computed'] !== true && isNode(property) && property.type === 'Identifier' && args.length <= 1) {
      const side = FUNCTION_OF[String(property['value'])];
      if (side !== undefined) return call(side, [member['object'], ...args]);
    }
  }
  return null;
}

/** Rewrites, in place, every stripping call under `program` (a parsed template's AST). */
export function pythonStripCalls(program: object): void {
  const visit = (value: unknown): unknown => {
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = visit(value[i]);
      return value;
    }
    if (value instanceof Map) {
      // Object literals keep their entries in a Map of key node -> value node.
      const entries = [...value.entries()].map(([k, v]) => [visit(k), visit(v)] as const);
      value.clear();
      for (const [k, v] of entries) value.set(k, v);
      return value;
    }
    if (!isNode(value)) return value;
    for (const key of Object.keys(value)) (value as Record<string, unknown>)[key] = visit(value[key]);
    return replacement(value) ?? value;
  };
  visit(program);
}
