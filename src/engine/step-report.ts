/**
 * The outbox of one step: the events of every sequence, in order, collected while the step
 * runs and sent to the main thread as one StepReport at its end (one message per step, not one
 * per token), with the scheduler's counters and the forward time.
 */
import type { SchedulerStats } from '../scheduler/types.ts';
import type { SequenceEvent, StepReport } from './types.ts';

export class StepReportBuilder {
  private events: SequenceEvent[] = [];

  add(event: SequenceEvent): void {
    this.events.push(event);
  }

  /** The report of the step so far; the outbox starts empty for the next. */
  take(stats: SchedulerStats, computed: boolean, forwardSeconds: number): StepReport {
    const events = this.events;
    this.events = [];
    return { type: 'step', events, stats, computed, forwardSeconds };
  }
}
