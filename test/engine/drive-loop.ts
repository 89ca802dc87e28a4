// Test support: runs a StepLoop over a runner until every submitted request has ended (its
// finish, error or embedding event), and returns the loop's reports.
import { StepLoop } from '../../src/engine/step-loop.ts';
import { jsSoftmaxWeights } from '../../src/engine/sampling.ts';
import type { StepReport, SubmitMessage } from '../../src/engine/types.ts';
import type { Runner } from '../../src/scheduler/runner-contract.ts';
import type { SchedulerConfig } from '../../src/scheduler/scheduler.ts';
import type { DeviceSampler } from '../../src/engine/device-sampler.ts';

/** `sampler`: the sampler graph to sample with (null: the JS sampler). */
export async function driveLoop(runner: Runner, reqs: readonly SubmitMessage[], config: SchedulerConfig, sampler: DeviceSampler | null = null): Promise<StepReport[]> {
  const reports: StepReport[] = [];
  const pending = new Set(reqs.map((r) => r.id));
  let done!: () => void;
  const allEnded = new Promise<void>((res) => { done = res; });
  const loop = new StepLoop(runner, config, (report) => {
    reports.push(report);
    for (const e of report.events) if (e.type === 'finish' || e.type === 'error' || e.type === 'embedding') pending.delete(e.id);
    if (pending.size === 0) done();
  }, jsSoftmaxWeights, sampler);
  const running = loop.run();
  for (const r of reqs) loop.submit(r);
  await allEnded;
  loop.close();
  await running;
  return reports;
}
