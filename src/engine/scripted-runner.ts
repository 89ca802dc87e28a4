/**
 * A model without weights: its logits make greedy (and, the margin being huge, any) sampling
 * pick the next token of a fixed script, cycling; a sequence moves along the script once per
 * row it is sampled from (rows marked `sample: false` do not move it, and a recomputation
 * after preemption continues where it was, since the count lives with the sequence's cache). It has the
 * real paged KV cache (reserved and released exactly like ModelRunner's, K/V left at zero), so
 * everything around the forward pass (worker loop, detokenizer, stop handling, HTTP streaming,
 * cache accounting) runs for real with a known output. For tests and overhead benchmarks.
 */
import { readManifest } from './manifest.ts';
import { KvCache, type SequenceCache } from './kv-cache.ts';
import type { StepLogits, StepRow } from './model-runner.ts';
import { EngineError } from '../errors.ts';

export class ScriptedRunner {
  /** Tokens each sequence has been given logits for so far. */
  private readonly produced = new WeakMap<SequenceCache, number>();

  private constructor(readonly cache: KvCache, private readonly vocabSize: number, private readonly script: readonly number[]) {}

  static load(exportDir: string, script: readonly number[], kvCacheBytes = 8 * 2 ** 20): ScriptedRunner {
    const { config } = readManifest(exportDir);
    if (script.length === 0) throw new EngineError('a scripted model needs at least one token');
    for (const id of script) if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) throw new EngineError(`scripted token ${id} is outside the vocabulary`);
    return new ScriptedRunner(KvCache.fromBudget(config, 16, kvCacheBytes), config.vocabSize, script);
  }

  async step(rows: readonly StepRow[]): Promise<StepLogits> {
    const V = this.vocabSize;
    const offsets = [0];
    const picks: number[] = [];
    for (const r of rows) {
      const n = r.tokenIds.length;
      if (r.seq.numCached + n > this.cache.config.maxPositions) throw new EngineError('position exceeds the context');
      const count = r.logits === 'all' ? n : 1;
      for (let i = 0; i < count; i++) {
        const k = this.produced.get(r.seq) ?? 0;
        // Every returned position predicts the script's next token; only the last one is consumed.
        picks.push(this.script[k % this.script.length]!);
      }
      if (r.sample !== false) this.produced.set(r.seq, (this.produced.get(r.seq) ?? 0) + 1);
      r.seq.numCached += n;
      offsets.push(picks.length);
    }
    const logits = new Float32Array(picks.length * V).fill(-20);
    picks.forEach((id, i) => { logits[i * V + id] = 20; });
    return { logits, offsets, vocabSize: V };
  }

  async release(): Promise<void> {}
}
