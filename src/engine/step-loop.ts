/**
 * The worker's step loop, the one writer of scheduler state: each step it takes in aborts, asks
 * the scheduler for a plan, hands the plan to the runner in one call, scores prompt rows and
 * samples the rows that reached their last known token, gives the sampled tokens back to the
 * scheduler (Scheduler.update), ends the sequences that stop, and sends everything the step
 * produced as one StepReport. An embedding is a prefill-only sequence: its rows' hidden states
 * are pooled (embedding-pool.ts) and it ends with its vector after its last chunk. Requests come in through submit/abort/close between steps.
 * With a sampler graph that reads logits in place, the runner is asked to keep them on its device
 * (Runner.keepLogitsOnDevice): then only the rows the host needs (prompt logprobs, rows the graph
 * hands back to the JS sampler) are copied, by the sampler's readRows.
 */
import { Scheduler, type SchedulerConfig } from '../scheduler/scheduler.ts';
import { KvCacheManager } from '../scheduler/kv-cache-manager.ts';
import type { PlanRow, Runner, StepOutput } from '../scheduler/runner-contract.ts';
import type { SchedulerStep, Sequence } from '../scheduler/types.ts';
import { newGeneration, type Generation } from './generation.ts';
import type { EmbeddingPool } from './embedding-pool.ts';
import type { SequenceGrammar } from './grammar/matcher.ts';
import { scorePromptRow, wantsPromptLogits } from './prompt-scoring.ts';
import type { SoftmaxWeights } from './sampling.ts';
import type { DeviceSampler } from './device-sampler.ts';
import { StepReportBuilder } from './step-report.ts';
import { sampleRow, type SampledToken } from './step-sampling.ts';
import type { FinishReason, SequenceEvent, StepReport, SubmitMessage } from './types.ts';

export class StepLoop {
  readonly scheduler: Scheduler;
  private readonly gens = new Map<number, Generation>();
  private readonly aborted = new Set<number>();
  private readonly outbox = new StepReportBuilder();
  private closing = false;
  private wake: (() => void) | null = null;
  private forwardSeconds = 0;
  /** The scheduler's per-sequence questions, bound once (schedule() runs every step). */
  private readonly promptLogitsOf = (seq: Sequence): boolean => wantsPromptLogits(this.gens.get(seq.spec.id)!);
  private readonly poolingOf = (seq: Sequence) => this.gens.get(seq.spec.id)!.pool?.pooling;

  constructor(
    private readonly runner: Runner,
    config: SchedulerConfig,
    /** Where each step's report goes (the worker posts it to the main thread). */
    private readonly send: (report: StepReport) => void,
    private readonly weightsOf: SoftmaxWeights,
    /** The sampler graph (device-sampler.ts), or null: every row through the JS sampler. */
    private readonly sampler: DeviceSampler | null = null,
    /** EngineOptions.minStepMs (tests): a step that computes lasts at least this long. */
    private readonly minStepMs = 0,
  ) {
    this.scheduler = new Scheduler(new KvCacheManager(runner.layout), config);
    if (sampler?.inPlace === true) runner.keepLogitsOnDevice?.(sampler.device);
  }

  /** Queues a request; `grammar`: its constraint's state, compiled already (or null). */
  submit(req: SubmitMessage, grammar: SequenceGrammar | null = null): void {
    if (req.pooling !== undefined && this.runner.hiddenSize === undefined) {
      this.post({ type: 'error', id: req.id, message: 'this model cannot compute embeddings (its runner returns no hidden states)' });
      return;
    }
    this.gens.set(req.id, newGeneration(req, grammar, this.runner.hiddenSize));
    this.scheduler.add({ id: req.id, promptIds: req.promptIds, maxTokens: req.maxTokens, priority: req.priority });
    this.wake?.();
  }

  /** An event for a sequence the loop does not hold (a refused constraint): sent with the next report. */
  post(event: SequenceEvent): void {
    this.outbox.add(event);
    this.wake?.();
  }

  abort(id: number): void {
    this.aborted.add(id);
    this.wake?.();
  }

  /** Ends the loop after the current step. */
  close(): void {
    this.closing = true;
    this.wake?.();
  }

  /** Steps until closed; idles (one report per wait) while there is no work. */
  async run(): Promise<void> {
    while (!this.closing) {
      this.dropAborted();
      if (!this.scheduler.hasWork) {
        this.send(this.outbox.take(this.scheduler.stats(), false, this.forwardSeconds));
        await new Promise<void>((res) => { this.wake = res; });
        this.wake = null;
        continue;
      }
      const step = this.scheduler.schedule(this.promptLogitsOf, this.poolingOf);
      for (const seq of step.unservable) {
        this.end(seq.spec.id, { type: 'error', id: seq.spec.id, message: `the sequence (${Scheduler.numTokens(seq)} tokens) does not fit the KV cache even alone; raise --kv-cache-memory` });
      }
      for (const p of step.rows) {
        const g = this.gens.get(p.seq.spec.id);
        if (g !== undefined && !g.scheduled) { g.scheduled = true; this.outbox.add({ type: 'scheduled', id: p.seq.spec.id, at: performance.timeOrigin + performance.now(), cachedTokens: p.seq.cachedTokens }); }
      }
      // Counters as planned (lastStep is this step), taken before the step ends sequences.
      const stats = this.scheduler.stats();
      const stepStart = this.minStepMs > 0 ? performance.now() : 0;
      if (step.rows.length > 0) await this.runStep(step);
      const pad = this.minStepMs > 0 && step.rows.length > 0 ? this.minStepMs - (performance.now() - stepStart) : 0;
      if (pad > 0) await new Promise<void>((res) => setTimeout(res, pad));
      this.send(this.outbox.take(stats, step.rows.length > 0, this.forwardSeconds));
      // Take in submits and aborts between steps even when the runner never yields (the scripted one).
      if (step.rows.length > 0 || step.unservable.length === 0) await new Promise<void>((res) => setImmediate(res));
    }
  }

  /** Runs a step's plan in one call to the runner, scores and samples its rows, hands the samples to the scheduler. */
  private async runStep(step: SchedulerStep): Promise<void> {
    const t0 = performance.now();
    let out: StepOutput;
    try {
      out = await this.runner.execute(step.plan);
    } catch (e) {
      for (const p of step.rows) if (p.seq.status !== 'finished') this.end(p.seq.spec.id, { type: 'error', id: p.seq.spec.id, message: (e as Error).message });
      return;
    } finally {
      this.forwardSeconds += (performance.now() - t0) / 1000;
    }
    const V = out.vocabSize;
    const sampled = new Map<number, number>();
    const emitted: { seq: Sequence; token: SampledToken }[] = [];
    const pending: { seq: Sequence; g: Generation; row: number }[] = [];
    step.rows.forEach((p, i) => {
      if (p.seq.status === 'finished') return;
      const g = this.gens.get(p.seq.spec.id)!;
      if (step.plan.rows[i]!.logits === 'all') {
        const first = out.offsets[i]!, n = out.offsets[i + 1]! - first;
        let entries;
        try {
          entries = out.device === undefined ? scorePromptRow(g, p.start, p.count, out.logits, first, V) : scorePromptRow(g, p.start, p.count, this.sampler!.readRows(out.device, V, first, n), 0, V);
        } catch (e) { this.end(p.seq.spec.id, { type: 'error', id: p.seq.spec.id, message: `the sampler failed: ${(e as Error).message}` }); return; }
        if (entries !== null) this.outbox.add({ type: 'prompt_logprobs', id: p.seq.spec.id, logprobs: entries });
      }
      if (this.aborted.has(p.seq.spec.id)) { this.finish(p.seq, 'abort'); return; }
      if (g.pool !== null) { this.pool(p.seq, g.pool, step.plan.rows[i]!, i, out); return; }
      if (!p.sample) return;
      if (g.req.maxTokens === 0) { this.finish(p.seq, 'length'); return; } // prompt only (scored, when asked)
      // Constrained decoding: the state follows the output tokens (rebuilt from them after a
      // preemption); disallowed tokens get -Infinity before the processors (the JS sampler masks
      // the row, the sampler graph takes the bitmask), so the sample and the reported logprobs
      // are of the masked distribution.
      try {
        if (g.grammar !== null && !g.grammar.syncTo(p.seq.outputIds)) { this.grammarFailed(p.seq, 'the output no longer fits its grammar'); return; }
        g.grammar?.fillMask();
      } catch (e) { this.grammarFailed(p.seq, `the grammar engine failed: ${(e as Error).message}`); return; }
      pending.push({ seq: p.seq, g, row: out.offsets[i + 1]! - 1 });
    });
    const tokens = this.sample(out, pending);
    pending.forEach(({ seq, g }, k) => {
      const token = tokens[k]!;
      if ('error' in token) { this.end(seq.spec.id, { type: 'error', id: seq.spec.id, message: token.error }); return; }
      let accepted: boolean;
      try { accepted = g.grammar === null || g.grammar.accept(token.tokenId); } catch (e) { this.grammarFailed(seq, `the grammar engine failed: ${(e as Error).message}`); return; }
      if (!accepted) { this.grammarFailed(seq, `the grammar refused token ${token.tokenId}`); return; }
      sampled.set(seq.spec.id, token.tokenId);
      emitted.push({ seq, token });
    });
    this.scheduler.update(step, sampled);
    for (const { seq, token } of emitted) this.emit(seq, token);
  }

  /**
   * An embedding's row: its hidden states go into the pool; after the prompt's last chunk the
   * sequence ends with its vector, its cache free at once (prefill only, nothing sampled).
   */
  private pool(seq: Sequence, pool: EmbeddingPool, row: PlanRow, i: number, out: StepOutput): void {
    const h = out.hidden;
    const n = h === undefined ? 0 : h.offsets[i + 1]! - h.offsets[i]!;
    if (row.hidden !== undefined) {
      if (h === undefined || n === 0) { this.end(seq.spec.id, { type: 'error', id: seq.spec.id, message: 'the runner returned no hidden states for an embedding row' }); return; }
      pool.add(row.start, h.data, h.offsets[i]!, n);
    }
    if (row.sample) this.end(seq.spec.id, { type: 'embedding', id: seq.spec.id, embedding: pool.result(), promptTokens: seq.spec.promptIds.length });
  }

  /**
   * The step's sampled rows: through the sampler graph where there is one (rows it hands back,
   * and every row if it fails, go through the JS sampler with the uniform already drawn), else
   * each through the JS sampler (sampleRow) on its logits row.
   */
  private sample(out: StepOutput, pending: readonly { seq: Sequence; g: Generation; row: number }[]): (SampledToken | { error: string })[] {
    const V = out.vocabSize;
    // Device-resident logits: a row the JS sampler takes is copied then (only that row).
    const rowOf = (r: number): Float32Array => (out.device === undefined ? out.logits.subarray(r * V, (r + 1) * V) : this.sampler!.readRows(out.device, V, r, 1));
    const js = (g: Generation, seq: Sequence, r: number, rand?: () => number): SampledToken | { error: string } => {
      let row: Float32Array;
      try { row = rowOf(r); } catch (e) { return { error: `the sampler failed: ${(e as Error).message}` }; }
      try {
        g.grammar?.applyMask(row);
      } catch (e) { return { error: `the grammar engine failed: ${(e as Error).message}` }; }
      return sampleRow(g, seq.outputIds.length, row, this.weightsOf, rand);
    };
    if (this.sampler === null || pending.length === 0) return pending.map(({ g, seq, row }) => js(g, seq, row));
    let results;
    try {
      results = this.sampler.sample(out.device ?? out.logits, V, pending.map(({ g, seq, row }) => ({ g, numOutput: seq.outputIds.length, row, allowed: g.grammar?.mask ?? null })));
    } catch (e) {
      return pending.map(() => ({ error: `the sampler failed: ${(e as Error).message}` }));
    }
    return results.map((res, k) => {
      if (!('fallback' in res)) return res;
      const { g, seq, row } = pending[k]!;
      return js(g, seq, row, () => res.fallback);
    });
  }

  /** A grammar failure (xgrammar throws or aborts its WebAssembly program) fails this sequence only, never the worker and the other sequences. */
  private grammarFailed(seq: Sequence, what: string): void {
    this.end(seq.spec.id, { type: 'error', id: seq.spec.id, message: what });
  }

  /** After the scheduler appended a sampled token: reports it, or ends the sequence on a stop token or at max tokens. */
  private emit(seq: Sequence, { tokenId, logprobs }: SampledToken): void {
    const g = this.gens.get(seq.spec.id)!;
    if (g.stop.has(tokenId)) { this.finish(seq, 'stop'); return; }
    this.outbox.add({ type: 'token', id: seq.spec.id, tokenId, ...(logprobs ? { logprobs } : {}) });
    // A complete structure that nothing may follow ends here, without another forward pass.
    // canOnlyEnd is also true once the matcher has terminated (its mask is then empty).
    let complete: boolean;
    try {
      complete = g.grammar !== null && g.grammar.canOnlyEnd();
    } catch (e) {
      this.end(seq.spec.id, { type: 'error', id: seq.spec.id, message: `the grammar engine failed: ${(e as Error).message}` });
      return;
    }
    if (complete) { this.finish(seq, 'stop'); return; }
    if (seq.outputIds.length >= g.req.maxTokens) this.finish(seq, 'length');
  }

  private dropAborted(): void {
    for (const id of this.aborted) {
      const seq = this.scheduler.get(id);
      if (seq === undefined) this.aborted.delete(id); // ended already: a stale abort
      else this.finish(seq, 'abort');
    }
  }

  private finish(seq: Sequence, reason: FinishReason): void {
    this.end(seq.spec.id, { type: 'finish', id: seq.spec.id, reason, promptTokens: seq.spec.promptIds.length, completionTokens: seq.outputIds.length });
  }

  /** Ends a sequence: its cache is free at once (the runner hears with the next plan); `event` is its last. */
  private end(id: number, event: SequenceEvent): void {
    this.scheduler.finish(id);
    this.gens.get(id)?.grammar?.dispose();
    this.gens.delete(id);
    this.aborted.delete(id);
    this.outbox.add(event);
  }
}
