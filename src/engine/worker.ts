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
import { jsSoftmaxWeights, processLogits, sampleProcessed, TokenHistory } from './sampling.ts';
import { nativeSoftmaxWeights } from './native/softmax-weights.ts';
import { loadRunner } from './runner.ts';
import { ScriptedRunner } from './scripted-runner.ts';
import { Scheduler, DEFAULT_MAX_NUM_BATCHED_TOKENS } from '../scheduler/scheduler.ts';
import { KvCacheManager } from '../scheduler/kv-cache-manager.ts';
import type { Runner, StepOutput } from '../scheduler/runner-contract.ts';
import type { PlannedRow, SchedulerStep, Sequence } from '../scheduler/types.ts';
import type { FinishReason, FromWorker, SubmitMessage, TokenLogprobs, ToWorker, WorkerInit } from './types.ts';

/** For importers of the boundary types from here before they moved to types.ts (src/server/routes/completions.ts). */
export type { TokenLogprobs } from './types.ts';

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
}

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('worker.ts must run in a worker thread');
  const init = workerData as WorkerInit;
  const send = (m: FromWorker): void => port.postMessage(m);
  let runner: Runner;
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
  const scheduler = new Scheduler(new KvCacheManager(runner.layout), { maxNumSeqs, maxNumBatchedTokens });
  const gens = new Map<number, Generation>();
  const aborted = new Set<number>();
  let closing = false;
  let forwardSeconds = 0;
  let wake: (() => void) | null = null;

  port.on('message', (m: ToWorker) => {
    if (m.type === 'submit') {
      gens.set(m.id, {
        req: m, rand: mulberry32(m.seed), stop: new Set(m.stopIds), history: new TokenHistory(m.promptIds), scored: 0, promptEntries: [], scheduled: false,
      });
      scheduler.add({ id: m.id, promptIds: m.promptIds, maxTokens: m.maxTokens, priority: m.priority });
    } else if (m.type === 'abort') {
      aborted.add(m.id);
    } else {
      closing = true;
    }
    wake?.();
  });

  /** Ends a sequence: frees its cache in this step and tells the main thread. */
  const end = (id: number, m: FromWorker): void => {
    scheduler.finish(id);
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
  /** Samples the next token of a row that reached its last known token (the scheduler appends it in `update`). */
  const sample = (seq: Sequence, row: Float32Array): { tokenId: number; logprobs?: TokenLogprobs } => {
    const g = gens.get(seq.spec.id)!;
    const r = g.req;
    if (seq.outputIds.length < r.minTokens) for (const id of r.stopIds) if (id >= 0 && id < row.length) row[id] = -Infinity;
    const logits = processLogits(row, r.sampling, g.history);
    const tokenId = sampleProcessed(logits, r.sampling, g.rand, weightsOf);
    g.history.add(tokenId);
    if (r.logprobs === null || g.stop.has(tokenId)) return { tokenId };
    const lp = logSoftmax(logits);
    return { tokenId, logprobs: { logprob: lp[tokenId]!, top: r.logprobs > 0 ? topLogprobs(lp, r.logprobs) : [] } };
  };
  /** After `update` appended a sampled token: sends it, or ends the sequence on a stop token or at max tokens. */
  const emit = (seq: Sequence, tokenId: number, logprobs: TokenLogprobs | undefined): void => {
    const g = gens.get(seq.spec.id)!;
    if (g.stop.has(tokenId)) { finish(seq, 'stop'); return; }
    send({ type: 'token', id: seq.spec.id, tokenId, ...(logprobs ? { logprobs } : {}) });
    if (seq.outputIds.length >= g.req.maxTokens) finish(seq, 'length');
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
  const wantsAll = (seq: Sequence): boolean => {
    const g = gens.get(seq.spec.id)!;
    return g.req.promptLogprobs !== null && g.scored < g.req.promptIds.length;
  };

  /** Runs a step's plan in one call to the runner, scores and samples its rows, hands the samples to the scheduler. */
  const runStep = async (step: SchedulerStep): Promise<void> => {
    const t0 = performance.now();
    let out: StepOutput;
    try {
      out = await runner.execute(step.plan);
    } catch (e) {
      for (const p of step.rows) if (p.seq.status !== 'finished') end(p.seq.spec.id, { type: 'error', id: p.seq.spec.id, message: (e as Error).message });
      return;
    } finally {
      forwardSeconds += (performance.now() - t0) / 1000;
    }
    const sampled = new Map<number, number>();
    const emitted: { seq: Sequence; tokenId: number; logprobs: TokenLogprobs | undefined }[] = [];
    step.rows.forEach((p, i) => {
      if (p.seq.status === 'finished') return;
      const first = out.offsets[i]!;
      const last = out.offsets[i + 1]! - 1;
      if (step.plan.rows[i]!.logits === 'all') score(p.seq, p, out.logits, first, out.vocabSize);
      if (aborted.has(p.seq.spec.id)) { finish(p.seq, 'abort'); return; }
      if (!p.sample) return;
      if (gens.get(p.seq.spec.id)!.req.maxTokens === 0) { finish(p.seq, 'length'); return; } // prompt only (scored, when asked)
      const { tokenId, logprobs } = sample(p.seq, out.logits.subarray(last * out.vocabSize, (last + 1) * out.vocabSize));
      sampled.set(p.seq.spec.id, tokenId);
      emitted.push({ seq: p.seq, tokenId, logprobs });
    });
    scheduler.update(step, sampled);
    for (const e of emitted) emit(e.seq, e.tokenId, e.logprobs);
  };

  send({ type: 'ready', maxSequenceTokens: scheduler.cache.maxSequenceTokens(), maxRunning: maxNumSeqs, int4Swapped: runner.int4Swapped ?? 0 });
  while (!closing) {
    dropAborted();
    if (!scheduler.hasWork) {
      send({ type: 'stats', stats: scheduler.stats() });
      await new Promise<void>((res) => { wake = res; });
      wake = null;
      continue;
    }
    const plan = scheduler.schedule(wantsAll);
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
    await runStep(plan);
    send({ type: 'forward', seconds: forwardSeconds });
    // Take in submits and aborts between steps even when the runner never yields (the scripted one).
    await new Promise<void>((res) => setImmediate(res));
  }
  await runner.release();
  port.close();
}

await main();
