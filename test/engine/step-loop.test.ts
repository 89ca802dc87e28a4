// The runner contract from the runner's side: a fake runner that implements Runner knowing only
// the plan record (src/scheduler/runner-contract.ts) drives the worker's step loop, and the loop
// reports each step in one message. The fake's logits pick token (last input token + 1) mod V,
// so every generation's output follows from its prompt alone, batched or not.
import t from 'tap';
import { driveLoop } from './drive-loop.ts';
import { DEFAULT_SAMPLING } from '../../src/engine/sampling.ts';
import { DeviceSampler } from '../../src/engine/device-sampler.ts';
import { mulberry32 } from '../../src/engine/generation.ts';
import type { StepReport, SubmitMessage } from '../../src/engine/types.ts';
import type { CacheLayout, Runner, StepOutput, StepPlan } from '../../src/scheduler/runner-contract.ts';

const V = 64;

/** Knows nothing of sequences but what plans say: which ids it holds, what it was told ended. */
class FakeRunner implements Runner {
  readonly layout: CacheLayout = { blockSize: 4, numBlocks: { global: 65, sliding: 65 }, ringSlots: 8 };
  readonly plans: StepPlan[] = [];
  /** Positions stored per sequence id, as this runner computed them. */
  readonly stored = new Map<number, number>();
  readonly finished: number[] = [];

  async execute(plan: StepPlan): Promise<StepOutput> {
    this.plans.push(plan);
    for (const id of plan.finishedSeqIds) { this.finished.push(id); this.stored.delete(id); }
    for (const id of plan.preemptedSeqIds) this.stored.delete(id);
    const offsets = [0];
    for (const r of plan.rows) offsets.push(offsets.at(-1)! + (r.logits === 'all' ? r.tokenIds.length : 1));
    const logits = new Float32Array(offsets.at(-1)! * V).fill(-10);
    plan.rows.forEach((r, i) => {
      if ((this.stored.get(r.seqId) ?? 0) !== r.start) throw new Error(`row of ${r.seqId} starts at ${r.start}, ${this.stored.get(r.seqId) ?? 0} stored`);
      const width = Math.ceil((r.start + r.tokenIds.length) / this.layout.blockSize);
      if (r.blocks.global.length < width) throw new Error(`row of ${r.seqId}: no room reserved`);
      this.stored.set(r.seqId, r.start + r.tokenIds.length);
      for (let k = offsets[i]!, s = r.tokenIds.length - (offsets[i + 1]! - offsets[i]!); k < offsets[i + 1]!; k++, s++) {
        logits[k * V + ((r.tokenIds[s]! + 1) % V)] = 10;
      }
    });
    return { logits, offsets, vocabSize: V };
  }

  async release(): Promise<void> {}
}

const request = (id: number, promptIds: number[], maxTokens: number, extra: Partial<SubmitMessage> = {}): SubmitMessage => ({
  type: 'submit', id, promptIds, maxTokens, priority: 0, sampling: { ...DEFAULT_SAMPLING, temperature: 0 }, seed: id,
  stopIds: [], minTokens: 0, logprobs: null, promptLogprobs: null, ...extra,
});

/** Runs the loop until `ids` all ended; returns its reports. */
const drive = (runner: Runner, reqs: readonly SubmitMessage[], maxNumSeqs = 8, sampler: DeviceSampler | null = null): Promise<StepReport[]> =>
  driveLoop(runner, reqs, { maxNumSeqs, maxNumBatchedTokens: 64 }, sampler);

const expected = (promptIds: readonly number[], n: number): number[] => Array.from({ length: n }, (_, i) => (promptIds.at(-1)! + 1 + i) % V);

t.test('a runner that knows only the plan record drives the step loop: batched outputs follow the fake model', async (t) => {
  const runner = new FakeRunner();
  const reqs = [request(1, [5, 6, 7], 6), request(2, [40, 41, 42, 43, 44, 45, 46, 47, 48, 49], 4), request(3, [63], 5)];
  const reports = await drive(runner, reqs);
  for (const r of reqs) {
    const ids = reports.flatMap((rep) => rep.events).filter((e) => e.type === 'token' && e.id === r.id).map((e) => (e.type === 'token' ? e.tokenId : -1));
    t.same(ids, expected(r.promptIds, r.maxTokens), `sequence ${r.id}`);
  }
  t.ok(runner.plans.some((p) => p.rows.length === 3), 'the three ran in one step');
  // Step j's ends reach the runner in plan j + 1 (the last step's ends wait for a next plan).
  const computed = reports.filter((r) => r.computed);
  t.equal(computed.length, runner.plans.length);
  const ended = (j: number): number[] => computed[j]!.events.filter((e) => e.type === 'finish').map((e) => e.id);
  let told = 0;
  for (let j = 0; j + 1 < computed.length; j++) {
    t.same(runner.plans[j + 1]!.finishedSeqIds, ended(j), `plan ${j + 1} names the ends of step ${j}`);
    told += ended(j).length;
  }
  t.equal(told, 2, 'two of the three ended before the last step');
});

t.test('one message per step: every row\'s token of a step arrives in the same report', async (t) => {
  const runner = new FakeRunner();
  const reqs = Array.from({ length: 8 }, (_, i) => request(10 + i, [i + 1, i + 2], 5));
  const reports = await drive(runner, reqs);
  const computed = reports.filter((r) => r.computed);
  t.equal(computed.length, runner.plans.filter((p) => p.rows.length > 0).length, 'one report per executed step');
  const decodeSteps = computed.filter((r) => r.stats.lastStep.batchSize === 8 && r.stats.lastStep.numTokens === 8);
  t.ok(decodeSteps.length >= 4, `${decodeSteps.length} lockstep decode steps`);
  for (const r of decodeSteps) t.equal(r.events.filter((e) => e.type === 'token').length, 8, 'eight tokens in one report');
  const last = computed.at(-1)!;
  t.equal(last.events.filter((e) => e.type === 'finish').length, 8, 'the finishes ride with the last tokens');
  t.ok(last.forwardSeconds > 0, 'forward seconds are reported');
});

t.test('prompt rows ask for every position\'s logits until the prompt is scored; the scores come before the first token', async (t) => {
  const runner = new FakeRunner();
  const prompt = [3, 9, 27, 17, 51];
  const reports = await drive(runner, [request(1, prompt, 2, { promptLogprobs: 1 })]);
  t.equal(runner.plans[0]!.rows[0]!.logits, 'all');
  t.equal(runner.plans[1]!.rows[0]!.logits, 'last');
  const events = reports.flatMap((r) => r.events).filter((e) => e.id === 1).map((e) => e.type);
  t.same(events, ['scheduled', 'prompt_logprobs', 'token', 'token', 'finish']);
  const scores = reports.flatMap((r) => r.events).find((e) => e.type === 'prompt_logprobs');
  if (scores?.type !== 'prompt_logprobs') throw new Error('no prompt logprobs');
  // Position p predicts p + 1; the fake puts its mass on token p + 1 only where prompt[p + 1] = prompt[p] + 1.
  t.same(scores.logprobs.map((e) => e.top[0]!.id), prompt.slice(0, -1).map((id) => (id + 1) % V));
});

/** Logits that follow from the sequence and position alone (seeded noise), so both samplers see the same rows. */
class NoiseRunner extends FakeRunner {
  override async execute(plan: StepPlan): Promise<StepOutput> {
    const out = await super.execute(plan);
    plan.rows.forEach((r, i) => {
      for (let k = out.offsets[i]!; k < out.offsets[i + 1]!; k++) {
        const rand = mulberry32(r.seqId * 1000 + r.start + k - out.offsets[i]!);
        for (let v = 0; v < V; v++) out.logits[k * V + v] = (rand() - 0.5) * 6;
      }
    });
    return out;
  }
}

const sampler = DeviceSampler.create({ device: 'cpu', intraOpThreads: 1 });
t.test('the sampler graph and the JS sampler give the same tokens and logprobs through the step loop', { skip: 'error' in sampler ? sampler.error : false }, async (t) => {
  const mixed: Partial<SubmitMessage>[] = [
    { sampling: { ...DEFAULT_SAMPLING, temperature: 1 } },
    { sampling: { ...DEFAULT_SAMPLING, temperature: 0.7, topK: 8, topP: 0.9 }, logprobs: 3 },
    { sampling: { ...DEFAULT_SAMPLING, temperature: 1.3, minP: 0.1, repetitionPenalty: 1.3, frequencyPenalty: 0.5, presencePenalty: 0.3 } },
    { sampling: { ...DEFAULT_SAMPLING, temperature: 0, logitBias: [[9, 2]] }, logprobs: 0 },
    { sampling: { ...DEFAULT_SAMPLING, temperature: 1 }, stopIds: [3], minTokens: 4 },
  ];
  const reqs = mixed.map((extra, i) => request(i + 1, [1 + i, 20 + i, 40 + i], 12, { seed: 100 + i, ...extra }));
  const events = (reports: StepReport[]) => reports.flatMap((r) => r.events).filter((e) => e.type === 'token' || e.type === 'finish');
  const js = events(await drive(new NoiseRunner(), reqs));
  const graph = events(await drive(new NoiseRunner(), reqs, 8, sampler as DeviceSampler));
  t.equal(graph.length, js.length);
  graph.forEach((e, i) => {
    const r = js[i]!;
    if (e.type !== 'token' || r.type !== 'token') { t.same(e, r); return; }
    t.same([e.id, e.tokenId], [r.id, r.tokenId], `token ${i}`);
    t.same(e.logprobs?.top.map((x) => x.id), r.logprobs?.top.map((x) => x.id));
    if (r.logprobs !== undefined) t.ok(Math.abs(e.logprobs!.logprob - r.logprobs.logprob) < 1e-4);
  });
  (sampler as DeviceSampler).release();
});
