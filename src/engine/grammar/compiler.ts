/**
 * Compiled grammars for one vocabulary, in the thread that uses them (the inference worker):
 * xgrammar's token table is built on first use (Gemma's 256,000 pieces: see docs/API.md "Constrained decoding"
 * for the cost), constraints compile through xgrammar and stay in a bounded LRU keyed by
 * `constraintKey`, so a schema sent again (every turn of an agent loop) costs nothing.
 * A constraint that does not compile throws ConstraintError with xgrammar's reason.
 *
 * xgrammar refuses a bad schema, regex or grammar by aborting its WebAssembly program, which
 * unwinds through the C++ frames without restoring their stack (nor freeing what they held).
 * So each new constraint is first parsed in a second, disposable instance without a token
 * table (cheap: no vocabulary work), which is thrown away after a refusal; only constraints
 * that parsed reach the instance that holds the token table and the running matchers.
 */
import type { CompiledGrammar, Grammar, GrammarCompiler, TokenizerInfo } from '@mlc-ai/web-xgrammar';
import { choiceEbnf, ConstraintError, constraintKey, schemaValue, type Constraint } from './constraint.ts';
import { extractNumericBounds, substituteRules } from './numeric-bounds.ts';
import { loadXgrammar, type XgBinding, type Xgrammar } from './xgrammar.ts';
import type { GrammarVocab } from './vocab.ts';

export { ConstraintError };

export const DEFAULT_GRAMMAR_CACHE_SIZE = 128;

/**
 * JSON is generated on one line with json.dumps' separators (", " and ": "), no free
 * whitespace: a model may otherwise spend its tokens on spaces and newlines that the grammar
 * allows anywhere (vLLM's `disable_any_whitespace`), and a weak or random-weight model
 * seldom stops doing so. Arguments: anyWhitespace, indent (-1: one line), separators.
 */
/** Names the placeholders of bounded numbers (numeric-bounds.ts); no schema writes it. */
const BOUND_TAG = '__gemma_serve_numeric_bound_';

const JSON_LAYOUT = [false, -1, [', ', ': ']] as const satisfies [boolean, number, [string, string]];

export interface GrammarCompilerOptions {
  /** Compiled grammars kept (least recently used dropped first; default DEFAULT_GRAMMAR_CACHE_SIZE). */
  readonly cacheSize?: number;
}

/** A compiled grammar ready for matchers, with what they need to read masks. */
export interface ReadyGrammar {
  readonly compiled: CompiledGrammar;
  readonly binding: XgBinding;
  readonly xg: Xgrammar;
  readonly vocabSize: number;
  /**
   * Tokens refused on top of the grammar's mask, or null. JSON kinds refuse every token with a
   * control character: xgrammar 0.1.27 writes strings with minLength/maxLength as
   * `[^"\\\r\n]{m,n}`, which lets raw control characters (invalid in JSON) through.
   */
  readonly deny: readonly number[] | null;
  /** The byte-fallback token of each byte value, -1 for none (the matcher's UTF-8 guard). */
  readonly byteIds: Int32Array;
  /** The model's end tokens, xgrammar's stop tokens in the token table (GrammarVocab.stopIds). */
  readonly stopIds: readonly number[];
}

/** What parse hands the compiler instance in place of the constraint itself (null: the constraint). */
type Prepared = { readonly ebnf: string } | { readonly tag: Record<string, unknown> } | null;

export class ConstraintCompiler {
  private tokenizerInfo: TokenizerInfo | null = null;
  private compiler: GrammarCompiler | null = null;
  private binding: XgBinding | null = null;
  private warming: Promise<void> | null = null;
  private vocabSize = 0;
  /**
   * Compiled (or compiling: concurrent requests for one schema share one compilation) grammars
   * by key. Insertion order is recency: a hit is deleted and set again.
   */
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();
  private readonly cacheSize: number;
  private readonly xg: Xgrammar;
  /** The disposable instance that parses new constraints first (null: make one when needed). */
  private checker: Xgrammar | null = null;

  /** `vocab` is read on first compile (or `warm()`); until then nothing is built. */
  /** The vocabulary, read once (reading Gemma's tokenizer.json takes seconds: never per request). */
  private vocabRead: GrammarVocab | null = null;
  private vocab(): GrammarVocab {
    return this.vocabRead ??= this.readVocab();
  }

  constructor(private readonly readVocab: () => GrammarVocab, opts: GrammarCompilerOptions = {}) {
    this.cacheSize = Math.max(1, opts.cacheSize ?? DEFAULT_GRAMMAR_CACHE_SIZE);
    this.xg = loadXgrammar();
  }

  /** Builds the token table now (otherwise the first compile does). */
  warm(): Promise<void> {
    return this.warming ??= this.build().catch((e: unknown) => { this.warming = null; throw e; });
  }

  private async build(): Promise<void> {
    const { encoded, vocabSize, stopIds } = this.vocab();
    this.binding = await this.xg.binding();
    this.vocabSize = vocabSize;
    // The end tokens are declared as xgrammar's stop tokens, else their empty pieces make them
    // special tokens, and xgrammar 0.1.27 clears every special from a mask computed as "all but
    // the rejected" (free text: any_text, the text around tool calls) and never sets the stop
    // tokens back: such grammars could not end. Declared, they are allowed exactly where the
    // grammar can end. Each matcher still takes its sequence's own (grammar/matcher.ts).
    this.tokenizerInfo = await this.xg.TokenizerInfo.createTokenizerInfo(encoded, 'byte_fallback', false, vocabSize, [...stopIds]);
    // xgrammar's own cache is off: ours is bounded, xgrammar's would keep every schema ever seen.
    this.compiler = await this.xg.GrammarCompiler.createGrammarCompiler(this.tokenizerInfo, false);
  }

  get cachedCount(): number {
    return this.cache.size;
  }

  /** The compiled grammar for `c`, from the cache or compiled now; ConstraintError when it cannot be. */
  async compile(c: Constraint): Promise<ReadyGrammar> {
    let key: string;
    try {
      key = constraintKey(c);
    } catch (e) {
      throw new ConstraintError(`the schema is not valid JSON: ${(e as Error).message}`, { cause: e });
    }
    await this.warm();
    let compiled = this.cache.get(key);
    if (compiled !== undefined) {
      this.cache.delete(key);
    } else {
      compiled = this.compileNew(c);
      // A refusal is not kept: the same constraint is parsed again (and refused again) next time.
      // Only a success makes room: a refusal must not evict anything.
      compiled.then(() => this.trim(), () => { if (this.cache.get(key) === compiled) this.cache.delete(key); });
    }
    this.cache.set(key, compiled);
    const deny = c.kind === 'json_schema' || c.kind === 'json_object' ? this.vocab().controlIds : null;
    return { compiled: await compiled, binding: this.binding!, xg: this.xg, vocabSize: this.vocabSize, deny, byteIds: this.vocab().byteIds, stopIds: this.vocab().stopIds };
  }

  /**
   * Parses `c` in the disposable instance; ConstraintError with xgrammar's reason when it
   * cannot. Returns what the compiler instance compiles where it is not `c` itself: the EBNF of
   * a schema with numeric bounds (numeric-bounds.ts), a structural tag with its JSON schemas
   * already written as EBNF (compactJsonFormats: converted once, here).
   */
  private async parse(c: Constraint): Promise<Prepared> {
    if (c.kind === 'json_object') return null;
    const xg = this.checker ??= loadXgrammar();
    await xg.binding();
    let grammar: Grammar;
    let prepared: Prepared = null;
    try {
      switch (c.kind) {
        case 'json_schema': {
          const { schema, rules } = extractNumericBounds(jsonSchemaObject(c.schema), BOUND_TAG);
          if (rules.size === 0) {
            grammar = await xg.Grammar.fromJSONSchema(JSON.stringify(schema), ...JSON_LAYOUT, c.strict !== false);
          } else {
            const ebnf = substituteRules(await xg.Testings._jsonSchemaToEBNF(JSON.stringify(schema), ...JSON_LAYOUT, c.strict !== false), rules);
            grammar = await xg.Grammar.fromEBNF(ebnf);
            prepared = { ebnf };
          }
          break;
        }
        case 'regex':
          grammar = await xg.Grammar.fromStructuralTag({ type: 'structural_tag', format: { type: 'regex', pattern: c.pattern } });
          break;
        case 'choice':
          grammar = await xg.Grammar.fromEBNF(choiceEbnf(checkedChoices(c.choices)));
          break;
        case 'grammar':
          grammar = await xg.Grammar.fromEBNF(c.ebnf);
          break;
        case 'structural_tag': {
          const tag = await compactJsonFormats(c.tag, xg) as Record<string, unknown>;
          grammar = await xg.Grammar.fromStructuralTag(tag);
          prepared = { tag };
          break;
        }
      }
    } catch (e) {
      if (e instanceof ConstraintError) throw e;
      this.checker = null; // aborted: its stack is not to be trusted
      throw new ConstraintError(errorText(xg.takeError(), e), { cause: e });
    }
    grammar.dispose();
    return prepared;
  }

  /** Drops the least recently used grammars beyond the cache size. */
  private trim(): void {
    while (this.cache.size > this.cacheSize) {
      const [oldestKey, oldest] = this.cache.entries().next().value as [string, Promise<CompiledGrammar>];
      this.cache.delete(oldestKey);
      // Matchers built from it keep their own reference inside xgrammar (shared_ptr), so
      // freeing the handle here does not pull the grammar from under a running sequence.
      oldest.then((g) => g.dispose(), () => undefined);
    }
  }

  private async compileNew(c: Constraint): Promise<CompiledGrammar> {
    const prepared = await this.parse(c);
    const compiler = this.compiler!;
    try {
      if (prepared !== null) return 'ebnf' in prepared ? await compiler.compileGrammar(prepared.ebnf) : await compiler.compileStructuralTag(prepared.tag);
      switch (c.kind) {
        case 'json_schema':
          return await compiler.compileJSONSchema(JSON.stringify(jsonSchemaObject(c.schema)), ...JSON_LAYOUT, c.strict !== false);
        case 'json_object':
          return await compiler.compileJSONSchema('{"type":"object"}', ...JSON_LAYOUT, false);
        case 'regex':
          return await compiler.compileStructuralTag({ type: 'structural_tag', format: { type: 'regex', pattern: c.pattern } });
        case 'choice':
          return await compiler.compileGrammar(choiceEbnf(c.choices));
        case 'grammar':
          return await compiler.compileGrammar(c.ebnf);
        case 'structural_tag':
          throw new Error('unreachable: parse prepares every structural tag');
      }
    } catch (e) {
      // Parsed in the checker but refused here (not seen in testing): this instance's stack
      // lost the aborted frames; it keeps serving (WebAssembly stacks are 64 KB+ and one
      // abort leaks at most its own frames) rather than failing the running sequences.
      throw new ConstraintError(errorText(this.xg.takeError(), e), { cause: e });
    }
  }

  /** Frees every compiled grammar and the token table (matchers must be disposed first). */
  dispose(): void {
    for (const g of this.cache.values()) g.then((compiled) => compiled.dispose(), () => undefined);
    this.cache.clear();
    this.compiler?.dispose();
    this.tokenizerInfo?.dispose();
    this.compiler = null;
    this.tokenizerInfo = null;
    this.warming = null;
  }
}

/**
 * The reason for a refusal: xgrammar's printed `[FATAL] /path/file.cc:123: reason` without its
 * source location, else the exception's own text.
 */
function errorText(printed: string | null, e: unknown): string {
  if (printed !== null) return printed.replace(/^\[FATAL\]\s*(\S+:\d+:\s*)?/, '').trim();
  return (e instanceof Error ? e.message : String(e)).trim() || 'the grammar engine refused it';
}

/** The schema as an object (JSON text is parsed); ConstraintError for anything else. */
function jsonSchemaObject(schema: unknown): Record<string, unknown> {
  let v: unknown;
  try {
    v = schemaValue(schema);
  } catch (e) {
    throw new ConstraintError(`the schema is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConstraintError('the schema must be a JSON object');
  return v as Record<string, unknown>;
}

function checkedChoices(choices: readonly string[]): readonly string[] {
  if (choices.length === 0 || choices.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new ConstraintError('choices must be a non-empty list of non-empty strings');
  }
  return choices;
}

/**
 * A structural tag with each `json_schema` format replaced by the same schema as an EBNF
 * grammar in JSON_LAYOUT (one line, no free whitespace), strict: xgrammar's structural tags
 * otherwise allow any whitespace inside JSON, which a weak or random-weight model fills with
 * spaces and newlines until max_tokens.
 */
/** xgrammar 0.1.27's character class for a length-bounded JSON string, and the one JSON allows. */
const STRING_CHAR_CLASS = '[^"\\\\\\r\\n]';
const JSON_STRING_CHAR_CLASS = '[^\\0-\\x1f"\\\\]';

async function compactJsonFormats(v: unknown, xg: Xgrammar): Promise<unknown> {
  if (Array.isArray(v)) return Promise.all(v.map((x) => compactJsonFormats(x, xg)));
  if (typeof v !== 'object' || v === null) return v;
  const o = v as Record<string, unknown>;
  if (o['type'] === 'json_schema' && 'json_schema' in o) {
    await xg.binding();
    // The same exact numeric ranges as a json_schema constraint (numeric-bounds.ts).
    const { schema, rules } = extractNumericBounds(jsonSchemaObject(o['json_schema']), BOUND_TAG);
    const raw = await xg.Testings._jsonSchemaToEBNF(JSON.stringify(schema), ...JSON_LAYOUT, true);
    const ebnf = rules.size === 0 ? raw : substituteRules(raw, rules);
    // A structural tag cannot take the control-character deny list (its tags and free text
    // have newlines), so a string with minLength/maxLength, written `[^"\\\r\n]{m,n}`, is
    // narrowed here to exclude U+0000-U+001F as JSON requires (tool arguments had raw \x0f).
    return { type: 'grammar', grammar: ebnf.replaceAll(STRING_CHAR_CLASS, JSON_STRING_CHAR_CLASS) };
  }
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(o)) out[k] = await compactJsonFormats(x, xg);
  return out;
}
