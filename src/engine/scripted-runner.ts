/**
 * A model without weights (a Runner, src/scheduler/runner-contract.ts): its logits make greedy
 * (and, the margin being huge, any) sampling pick the next token of a fixed script, cycling; a
 * sequence moves along the script once per row it is sampled from (rows with `sample` false do
 * not move it, and a recomputation after preemption continues where it was: the count is kept
 * until the sequence is finished). Its cache layout is the paged one's (sized like ModelRunner's,
 * no storage behind it), so everything around the forward pass (worker loop, detokenizer, stop
 * handling, HTTP streaming, cache accounting) runs for real with a known output. For tests and
 * overhead benchmarks. Its hidden states (embedding rows) are a fixed function of each token id
 * and position, so pooling and batching can be checked without a model.
 */
import { readManifest } from './manifest.ts';
import { KvCache } from './kv-cache.ts';
import { hiddenOffsets, type CacheLayout, type PlanRow, type Runner, type StepOutput, type StepPlan } from '../scheduler/runner-contract.ts';
import { EngineError } from '../errors.ts';

export class ScriptedRunner implements Runner {
  /** Tokens each sequence (by id) has been given logits for so far. */
  private readonly produced = new Map<number, number>();

  private constructor(readonly layout: CacheLayout, private readonly maxPositions: number, private readonly vocabSize: number, private readonly script: readonly number[], readonly hiddenSize: number) {}

  static load(exportDir: string, script: readonly number[], kvCacheBytes = 8 * 2 ** 20, prefixCaching = false): ScriptedRunner {
    const { config } = readManifest(exportDir);
    if (script.length === 0) throw new EngineError('a scripted model needs at least one token');
    for (const id of script) if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) throw new EngineError(`scripted token ${id} is outside the vocabulary`);
    return new ScriptedRunner(KvCache.layoutFromBudget(config, 16, kvCacheBytes, undefined, 'fp32', prefixCaching), config.maxPositions, config.vocabSize, script, config.hiddenSize);
  }

  async execute(plan: StepPlan): Promise<StepOutput> {
    for (const id of plan.finishedSeqIds) this.produced.delete(id);
    const V = this.vocabSize;
    const offsets = [0];
    const picks: number[] = [];
    for (const r of plan.rows) {
      const n = r.tokenIds.length;
      if (r.start + n > this.maxPositions) throw new EngineError('position exceeds the context');
      const count = r.logits === 'all' ? n : 1;
      const k = this.produced.get(r.seqId) ?? 0;
      // Every returned position predicts the script's next token; only the last one is consumed.
      for (let i = 0; i < count; i++) picks.push(this.script[k % this.script.length]!);
      if (r.sample) this.produced.set(r.seqId, k + 1);
      offsets.push(picks.length);
    }
    const logits = new Float32Array(picks.length * V).fill(-20);
    picks.forEach((id, i) => { logits[i * V + id] = 20; });
    const hidden = this.hidden(plan.rows);
    return { logits, offsets, vocabSize: V, ...(hidden !== undefined ? { hidden } : {}) };
  }

  /** Hidden state of token `id` at position `pos`, component j: sin(0.37 (id + 1)(j + 1) + 0.11 pos). */
  private hidden(rows: readonly PlanRow[]): StepOutput['hidden'] {
    const offsets = hiddenOffsets(rows);
    if (offsets.at(-1) === 0) return undefined;
    const H = this.hiddenSize;
    const data = new Float32Array(offsets.at(-1)! * H);
    rows.forEach((r, i) => {
      const n = r.tokenIds.length;
      for (let s = r.hidden === 'last' ? n - 1 : 0, at = offsets[i]!; at < offsets[i + 1]!; s++, at++) {
        for (let j = 0; j < H; j++) data[at * H + j] = Math.sin(0.37 * (r.tokenIds[s]! + 1) * (j + 1) + 0.11 * (r.start + s));
      }
    });
    return { data, offsets, size: H };
  }

  async release(): Promise<void> {}
}
