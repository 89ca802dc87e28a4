/**
 * The inference thread. Owns the runner (the ONNX model, or a scripted one) and drives the
 * scheduler (src/scheduler): each step it asks for a plan, runs it (all one-token decode rows
 * in one batched run, each prefill chunk in its own run so short rows are not padded to long
 * ones), samples for the rows that end at their last known token, and ends sequences that
 * stop. Sampling (sampling.ts) is greedy at temperature 0, else seeded (mulberry32): the
 * generator's state lives with the request, so a preempted and recomputed sequence draws the
 * same numbers and a seed fixes the output.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { logSoftmax, topLogprobs } from './logprobs.ts';
import { jsSoftmaxWeights, processLogits, sampleProcessed, TokenHistory, type SamplingParams } from './sampling.ts';
import { nativeSoftmaxWeights } from './native/softmax-weights.ts';
import { loadRunner, type StepRunner } from './runner.ts';
import { ScriptedRunner } from './scripted-runner.ts';
import { Scheduler, DEFAULT_MAX_NUM_BATCHED_TOKENS } from '../scheduler/scheduler.ts';
import type { PlannedRow, Sequence, SchedulerStats } from '../scheduler/types.ts';
import type { Device } from './session.ts';
import type { Int4Kernel } from './native/q4-graph.ts';
import type { Constraint } from './grammar/constraint.ts';
import { WorkerGrammars } from './grammar/worker-grammars.ts';
import type { SequenceGrammar } from './grammar/matcher.ts';

export interface WorkerInit {
  readonly exportDir: string;
  readonly device: Device;
  readonly kvCacheBytes?: number;
  /** At most this many sequences run together; later ones wait (priority, then arrival). */
  readonly maxNumSeqs: number;
  /** Most tokens one step computes (default DEFAULT_MAX_NUM_BATCHED_TOKENS). */
  readonly maxNumBatchedTokens?: number;
  /** ONNX Runtime intra-op threads (0 or absent: one per core). */
  readonly threads?: number;
  /** CPU int4 matmuls (ModelRunnerOptions.int4Kernel). */
  readonly int4Kernel?: Int4Kernel;
  /** Cache blocks of this many positions. */
  readonly blockSize?: number;
  /** Run a ScriptedRunner emitting these tokens instead of the ONNX model (tests, benchmarks). */
  readonly script?: readonly number[];
}

export interface SubmitMessage {
  readonly type: 'submit';
  readonly id: number;
  readonly promptIds: number[];
  readonly maxTokens: number;
  /** Lower runs sooner; equal priorities are first come, first served. */
  readonly priority: number;
  readonly sampling: SamplingParams;
  readonly seed: number;
  /** Token ids that end the sequence (empty with ignore_eos). */
  readonly stopIds: number[];
  /** Stop ids cannot be sampled before this many tokens are generated. */
  readonly minTokens: number;
  /** null: no logprobs; else how many top alternatives to send with each token. */
  readonly logprobs: number | null;
  /** null: none; else the logprob of every prompt token after the first, with this many alternatives. */
  readonly promptLogprobs: number | null;
  /** Constrained decoding (grammar/constraint.ts): compiled before the sequence is queued. */
  readonly constraint?: Constraint;
}
export interface TokenLogprobs {
  readonly logprob: number;
  readonly top: { id: number; logprob: number }[];
}
export type ToWorker = SubmitMessage | { readonly type: 'abort'; readonly id: number } | { readonly type: 'close' }
  /** Compile (and cache) a constraint; answered by 'compiled' with the same id. */
  | { readonly type: 'compile'; readonly id: number; readonly constraint: Constraint };
export type FinishReason = 'stop' | 'length' | 'abort';
export type FromWorker =
  /** Loaded; `maxSequenceTokens`: the longest sequence the KV cache can hold alone. */
  | { type: 'ready'; maxSequenceTokens: number; maxRunning: number; int4Swapped: number }
  | { type: 'token'; id: number; tokenId: number; logprobs?: TokenLogprobs }
  /** Sent once before the first token when promptLogprobs was asked: entries for prompt tokens 1..n-1. */
  | { type: 'prompt_logprobs'; id: number; logprobs: TokenLogprobs[] }
  | { type: 'finish'; id: number; reason: FinishReason; promptTokens: number; completionTokens: number }
  /** `param`: the request parameter at fault (a constraint that does not compile: a 400). */
  | { type: 'error'; id: number | null; message: string; param?: string }
  /** The answer to 'compile': `error` is the refusal, absent when the constraint compiled. */
  | { type: 'compiled'; id: number; error?: { message: string; param: string } }
  /** Once, when the scheduler first admits the sequence; `at`: performance.timeOrigin + performance.now(). */
  | { type: 'scheduled'; id: number; at: number }
  /** After every step: the scheduler's counters (observability hooks); `step`: the step computes tokens. */
  | { type: 'stats'; stats: SchedulerStats; step?: boolean }
  /** Cumulative seconds inside the runner's forward passes (inputs, ORT run, cache writes), after each step. */
  | { type: 'forward'; seconds: number };

/** mulberry32: a tiny seeded PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}


/** A request's sampling state, kept across preemptions. */
interface Generation {
  readonly req: SubmitMessage;
  readonly rand: () => number;
  readonly stop: ReadonlySet<number>;
  readonly history: TokenHistory;
  /** Prompt positions whose next-token logprobs were sent (promptLogprobs). */
  scored: number;
  readonly promptEntries: TokenLogprobs[];
  /** The 'scheduled' message was sent. */
  scheduled: boolean;
  /** The constraint's state (constrained decoding), or null. */
  readonly grammar: SequenceGrammar | null;
}

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('worker.ts must run in a worker thread');
  const init = workerData as WorkerInit;
  const send = (m: FromWorker): void => port.postMessage(m);
  let runner: StepRunner;
  try {
    runner = init.script !== undefined
      ? ScriptedRunner.load(init.exportDir, init.script, init.kvCacheBytes)
      : await loadRunner(init.exportDir, { device: init.device, kvCacheBytes: init.kvCacheBytes, blockSize: init.blockSize, maxNumSeqs: init.maxNumSeqs, intraOpThreads: init.threads, int4Kernel: init.int4Kernel });
  } catch (e) {
    send({ type: 'error', id: null, message: (e as Error).message });
    return;
  }
  // The sampler's softmax through ONNX Runtime's vectorized Exp where the native runner is built.
  const weightsOf = nativeSoftmaxWeights() ?? jsSoftmaxWeights;
  const maxNumBatchedTokens = Math.max(init.maxNumBatchedTokens ?? DEFAULT_MAX_NUM_BATCHED_TOKENS, init.maxNumSeqs);
  // A runner with fixed cache slots (the device-resident one) runs at most that many sequences at once.
  const maxNumSeqs = Math.min(init.maxNumSeqs, runner.maxRunning ?? Infinity);
  const scheduler = new Scheduler(runner.cache, { maxNumSeqs, maxNumBatchedTokens });
  const gens = new Map<number, Generation>();
  const aborted = new Set<number>();
  let closing = false;
  let forwardSeconds = 0;
  let wake: (() => void) | null = null;
  const grammars = new WorkerGrammars(init.exportDir);
  /** Constrained submits still compiling; true once an abort for one has arrived. */
  const compiling = new Map<number, boolean>();

  const admit = (m: SubmitMessage, grammar: SequenceGrammar | null): void => {
    gens.set(m.id, {
      req: m, rand: mulberry32(m.seed), stop: new Set(m.stopIds), history: new TokenHistory(m.promptIds), scored: 0, promptEntries: [], scheduled: false, grammar,
    });
    scheduler.add({ id: m.id, promptIds: m.promptIds, maxTokens: m.maxTokens, priority: m.priority });
  };
  port.on('message', (m: ToWorker) => {
    if (m.type === 'submit' && m.constraint === undefined) {
      admit(m, null);
    } else if (m.type === 'submit' && m.constraint !== undefined) {
      // Constrained: compiled (or found in the cache) before it is queued; a refusal is the
      // generation's only message. The first compile awaits WebAssembly instantiation, so an
      // abort may arrive meanwhile: it is kept in `compiling` and honoured here.
      compiling.set(m.id, false);
      void grammars.start(m.constraint, m.stopIds).then(
        (g) => {
          const abortedMeanwhile = compiling.get(m.id) === true;
          compiling.delete(m.id);
          if ('param' in g) send({ type: 'error', id: m.id, ...g });
          else if (abortedMeanwhile) { g.dispose(); send({ type: 'finish', id: m.id, reason: 'abort', promptTokens: m.promptIds.length, completionTokens: 0 }); }
          else { admit(m, g); wake?.(); }
        },
        (e: unknown) => { compiling.delete(m.id); send({ type: 'error', id: m.id, message: (e as Error).message }); });
    } else if (m.type === 'compile') {
      void grammars.check(m.constraint).then(
        (error) => send({ type: 'compiled', id: m.id, ...(error !== null ? { error } : {}) }),
        (e: unknown) => send({ type: 'error', id: m.id, message: (e as Error).message }));
    } else if (m.type === 'abort') {
      if (compiling.has(m.id)) compiling.set(m.id, true);
      else aborted.add(m.id);
    } else {
      closing = true;
    }
    wake?.();
  });

  /** Ends a sequence: frees its cache in this step and tells the main thread. */
  const end = (id: number, m: FromWorker): void => {
    scheduler.finish(id);
    gens.get(id)?.grammar?.dispose();
    gens.delete(id);
    aborted.delete(id);
    send(m);
  };
  const finish = (seq: Sequence, reason: FinishReason): void => end(seq.spec.id, {
    type: 'finish', id: seq.spec.id, reason, promptTokens: seq.spec.promptIds.length, completionTokens: seq.outputIds.length,
  });
  const dropAborted = (): void => {
    for (const id of aborted) {
      const seq = scheduler.get(id);
      if (seq === undefined) aborted.delete(id); // ended already: a stale abort
      else finish(seq, 'abort');
    }
  };
  /** Samples the next token of a row that reached its last known token; false when it ended. */
  const accept = (seq: Sequence, row: Float32Array): void => {
    const g = gens.get(seq.spec.id)!;
    const r = g.req;
    if (r.maxTokens === 0) { finish(seq, 'length'); return; } // prompt only (scored, when asked)
    if (seq.outputIds.length < r.minTokens) for (const id of r.stopIds) if (id >= 0 && id < row.length) row[id] = -Infinity;
    // Constrained decoding: the state follows the output tokens (rebuilt from them if it is not
    // in step); disallowed tokens get -Infinity before processing, so sampling and the reported
    // logprobs are of the masked distribution.
    if (g.grammar !== null && !g.grammar.syncTo(seq.outputIds)) { end(r.id, { type: 'error', id: r.id, message: 'the output no longer fits its grammar' }); return; }
    g.grammar?.applyMask(row);
    const logits = processLogits(row, r.sampling, g.history);
    const tokenId = sampleProcessed(logits, r.sampling, g.rand, weightsOf);
    if (g.grammar !== null && !g.grammar.accept(tokenId)) { end(r.id, { type: 'error', id: r.id, message: `the grammar refused token ${tokenId}` }); return; }
    scheduler.appendToken(seq, tokenId);
    g.history.add(tokenId);
    if (g.stop.has(tokenId)) { finish(seq, 'stop'); return; }
    let logprobs: TokenLogprobs | undefined;
    if (r.logprobs !== null) {
      const lp = logSoftmax(logits);
      logprobs = { logprob: lp[tokenId]!, top: r.logprobs > 0 ? topLogprobs(lp, r.logprobs) : [] };
    }
    send({ type: 'token', id: r.id, tokenId, ...(logprobs ? { logprobs } : {}) });
    // A complete structure that nothing may follow ends here, without another forward pass.
    if (g.grammar?.canOnlyEnd() === true) { finish(seq, 'stop'); return; }
    if (seq.outputIds.length >= r.maxTokens) finish(seq, 'length');
  };
  /** Scores prompt positions of a row (promptLogprobs); sends them all once the prompt is done. */
  const score = (seq: Sequence, p: PlannedRow, logits: Float32Array, offset: number, V: number): void => {
    const g = gens.get(seq.spec.id)!;
    const ids = g.req.promptIds;
    const k = g.req.promptLogprobs ?? 0;
    for (let s = 0; s < p.count; s++) {
      const pos = p.start + s;
      if (pos < g.scored || pos + 1 >= ids.length) continue; // already scored before a preemption; or not a prompt position
      const lp = logSoftmax(logits.subarray((offset + s) * V, (offset + s + 1) * V));
      g.promptEntries.push({ logprob: lp[ids[pos + 1]!]!, top: k > 0 ? topLogprobs(lp, k) : [] });
      g.scored = pos + 1;
    }
    if (g.scored === ids.length - 1 && p.start + p.count >= ids.length) {
      send({ type: 'prompt_logprobs', id: seq.spec.id, logprobs: g.promptEntries });
      g.scored = ids.length; // sent
    }
  };
  const wantsAll = (p: PlannedRow): boolean => {
    const g = gens.get(p.seq.spec.id)!;
    return g.req.promptLogprobs !== null && g.scored < g.req.promptIds.length;
  };

  /** Runs a group of rows in one forward pass, then scores and samples them. */
  const runGroup = async (group: readonly PlannedRow[]): Promise<void> => {
    const t0 = performance.now();
    const out = await runner.step(group.map((p) => ({
      seq: p.seq.cache,
      tokenIds: Array.from({ length: p.count }, (_, i) => Scheduler.tokenAt(p.seq, p.start + i)),
      logits: wantsAll(p) ? 'all' as const : 'last' as const,
      sample: p.sample,
    })));
    forwardSeconds += (performance.now() - t0) / 1000;
    group.forEach((p, i) => {
      if (p.seq.status === 'finished') return;
      const first = out.offsets[i]!;
      const last = out.offsets[i + 1]! - 1;
      if (wantsAll(p)) score(p.seq, p, out.logits, first, out.vocabSize);
      if (aborted.has(p.seq.spec.id)) { finish(p.seq, 'abort'); return; }
      if (p.sample) accept(p.seq, out.logits.subarray(last * out.vocabSize, (last + 1) * out.vocabSize));
    });
  };

  send({ type: 'ready', maxSequenceTokens: runner.cache.maxSequenceTokens(), maxRunning: maxNumSeqs, int4Swapped: runner.int4Swapped ?? 0 });
  while (!closing) {
    dropAborted();
    if (!scheduler.hasWork) {
      send({ type: 'stats', stats: scheduler.stats() });
      await new Promise<void>((res) => { wake = res; });
      wake = null;
      continue;
    }
    const plan = scheduler.schedule();
    for (const seq of plan.unservable) {
      end(seq.spec.id, { type: 'error', id: seq.spec.id, message: `the sequence (${Scheduler.numTokens(seq)} tokens) does not fit the KV cache even alone; raise --kv-cache-memory` });
    }
    for (const p of plan.rows) {
      const g = gens.get(p.seq.spec.id);
      if (g !== undefined && !g.scheduled) { g.scheduled = true; send({ type: 'scheduled', id: p.seq.spec.id, at: performance.timeOrigin + performance.now() }); }
    }
    send({ type: 'stats', stats: scheduler.stats(), step: plan.rows.length > 0 });
    if (plan.rows.length === 0) {
      if (plan.unservable.length === 0) await new Promise<void>((res) => setImmediate(res));
      continue;
    }
    const decodes = plan.rows.filter((p) => p.count === 1);
    const groups = [...(decodes.length > 0 ? [decodes] : []), ...plan.rows.filter((p) => p.count > 1).map((p) => [p])];
    for (const group of groups) {
      try {
        await runGroup(group);
      } catch (e) {
        for (const p of group) if (p.seq.status !== 'finished') end(p.seq.spec.id, { type: 'error', id: p.seq.spec.id, message: (e as Error).message });
      }
    }
    send({ type: 'forward', seconds: forwardSeconds });
    // Take in submits and aborts between steps even when the runner never yields (the scripted one).
    await new Promise<void>((res) => setImmediate(res));
  }
  await runner.release();
  for (const g of gens.values()) g.grammar?.dispose();
  grammars.dispose();
  port.close();
}

await main();
