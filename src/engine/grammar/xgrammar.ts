/**
 * Loads xgrammar's WebAssembly build (`@mlc-ai/web-xgrammar`) in the calling thread, once.
 *
 * Why not a plain `import`: the package says `"type": "module"`, but its lib/index.js is a UMD
 * bundle that reaches for `require`, `__filename` and `exports`, so Node 20 refuses it as ESM
 * ("require is not defined in ES module scope") and `require()` refuses it as an ES module.
 * We read the file and run it as the CommonJS script it is (the same wrapper Node's CJS loader
 * uses); the WebAssembly binary is inlined as base64, so nothing else is fetched.
 *
 * Two additions to the bundle's text, each at an anchor checked at load (a later version that
 * moves one fails loudly here rather than misbehaving):
 * - the bundle keeps its Emscripten module (`binding`) private, and its `getNextTokenBitmask()`
 *   is async and copies every mask into a new Int32Array; we expose the binding so the matcher
 *   reads the mask synchronously, from WebAssembly memory into a buffer it reuses (matcher.ts);
 * - xgrammar reports a bad schema or grammar by printing `[FATAL] file:line: reason` to stderr
 *   and aborting the WebAssembly program (the exception says only "Aborted()"); we pass the
 *   module a printErr that keeps the reason, so a refusal can say why (`takeError`).
 *
 * Each call makes a separate instance (its own WebAssembly memory). Objects of one instance
 * (token tables, compiled grammars, matchers) cannot be used with another.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as XG from '@mlc-ai/web-xgrammar';

/** The part of the Emscripten module the matcher reads masks through. */
export interface XgBinding {
  vecIntToView(vector: XgVector): Int32Array;
}
/** A `std::vector<int32_t>` owned by WebAssembly; `delete()` frees it. */
export interface XgVector { delete(): void }
/** The embind GrammarMatcher object behind `GrammarMatcher` (its `handle`). */
export interface XgMatcherHandle {
  GetNextTokenBitmask(vocabSize: number): XgVector;
  AcceptToken(tokenId: number, verbose: boolean): boolean;
  IsTerminated(): boolean;
  Reset(): void;
  Rollback(numTokens: number): void;
  delete(): void;
}

export interface Xgrammar {
  readonly TokenizerInfo: typeof XG.TokenizerInfo;
  readonly GrammarCompiler: typeof XG.GrammarCompiler;
  readonly GrammarMatcher: typeof XG.GrammarMatcher;
  readonly Grammar: typeof XG.Grammar;
  readonly Testings: typeof XG.Testings;
  /**
   * Resolves once the WebAssembly module is instantiated. Await it before any other call: the
   * library instantiates lazily in each factory, and two factories running before the first
   * instantiation ends would instantiate twice ("Cannot register public name ... twice").
   */
  binding(): Promise<XgBinding>;
  /** The reason xgrammar printed before its last abort (null when none since the last call). */
  takeError(): string | null;
}

const EXPORTS_ANCHOR = '\n  var index = { Grammar,';
const INIT_ANCHOR = 'binding = await Module();';

/** A new instance of the library (~40-60 ms to evaluate the bundle, ~30 ms to instantiate on first use). */
export function loadXgrammar(): Xgrammar {
  const require = createRequire(import.meta.url);
  const path = require.resolve('@mlc-ai/web-xgrammar');
  const source = readFileSync(path, 'utf8');
  if (!source.includes(EXPORTS_ANCHOR) || !source.includes(INIT_ANCHOR)) {
    throw new Error(`${path}: unrecognized @mlc-ai/web-xgrammar build (cannot reach its WebAssembly binding)`);
  }
  const patched = source
    .replace(EXPORTS_ANCHOR, `\n  exports.__binding = async () => { await asyncInitBinding(); return binding; };${EXPORTS_ANCHOR}`)
    .replace(INIT_ANCHOR, 'binding = await Module(exports.__moduleArg);');
  let lastError: string | null = null;
  const module = { exports: { __moduleArg: { printErr: (text: string) => { if (text.startsWith('[FATAL]')) lastError = text; } } } as Record<string, unknown> };
  const run = new Function('exports', 'require', 'module', '__filename', '__dirname', patched) as
    (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string) => void;
  run(module.exports, createRequire(path), module, path, path.slice(0, path.lastIndexOf('/')));
  const lib = module.exports as unknown as Omit<Xgrammar, 'binding'> & { __binding(): Promise<XgBinding> };
  let ready: Promise<XgBinding> | null = null;
  return {
    TokenizerInfo: lib.TokenizerInfo, GrammarCompiler: lib.GrammarCompiler, GrammarMatcher: lib.GrammarMatcher,
    Grammar: lib.Grammar, Testings: lib.Testings, binding: () => (ready ??= lib.__binding()),
    takeError: () => { const e = lastError; lastError = null; return e; },
  };
}
