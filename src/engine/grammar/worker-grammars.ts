/**
 * The inference worker's grammar service: one ConstraintCompiler for the served vocabulary
 * (the export's tokenizer.json, padded to the model's logits width; built on the first
 * constrained request, not at startup, so unconstrained serving pays nothing), and a
 * SequenceGrammar per constrained sequence.
 *
 * Compilation runs here, on the inference thread, between steps: xgrammar's compiled grammars
 * and matchers live in one WebAssembly instance and cannot be handed across threads, so a
 * separate compile thread would also have to own every matcher and send a mask per token. The
 * price: a grammar not in the cache stalls the running batch while it compiles (docs/API.md "Constrained decoding"
 * has the figures). The HTTP thread never compiles.
 */
import { join } from 'node:path';
import { readManifest } from '../manifest.ts';
import { ConstraintCompiler, ConstraintError } from './compiler.ts';
import { DEFAULT_CONSTRAINT_PARAM, type Constraint } from './constraint.ts';
import { SequenceGrammar } from './matcher.ts';
import { readGrammarVocab } from './vocab.ts';

/** Why a constraint was refused, for the error message the engine turns into a 400. */
export interface ConstraintRefusal {
  readonly message: string;
  readonly param: string;
}

export class WorkerGrammars {
  private compiler: ConstraintCompiler | null = null;

  /** `stopIds`: the model's end tokens (what a sequence stops on unless it ignores EOS). */
  constructor(private readonly exportDir: string, private readonly stopIds: readonly number[]) {}

  private get grammarCompiler(): ConstraintCompiler {
    if (this.compiler === null) {
      const path = join(this.exportDir, 'tokenizer.json');
      // Engine.start refuses an export without tokenizer.json, so it is there.
      this.compiler = new ConstraintCompiler(() => readGrammarVocab(path, readManifest(this.exportDir).config.vocabSize, this.stopIds));
    }
    return this.compiler;
  }

  /** Compiles (or finds in the cache) `c`; the refusal when it cannot be compiled. */
  async check(c: Constraint): Promise<ConstraintRefusal | null> {
    try {
      await this.grammarCompiler.compile(c);
      return null;
    } catch (e) {
      return refusal(c, e);
    }
  }

  /**
   * A fresh grammar state for one sequence. `endIds`: the tokens that end the sequence (the
   * request's stop ids; none with ignore_eos, when a complete structure simply ends it).
   */
  async start(c: Constraint, endIds: readonly number[]): Promise<SequenceGrammar | ConstraintRefusal> {
    try {
      return await SequenceGrammar.create(await this.grammarCompiler.compile(c), endIds);
    } catch (e) {
      return refusal(c, e);
    }
  }

  dispose(): void {
    this.compiler?.dispose();
    this.compiler = null;
  }
}

function refusal(c: Constraint, e: unknown): ConstraintRefusal {
  if (!(e instanceof ConstraintError)) throw e;
  const param = c.param ?? DEFAULT_CONSTRAINT_PARAM;
  return { message: `${param}: cannot compile the ${c.kind.replace('_', ' ')} constraint: ${e.message}`, param };
}
