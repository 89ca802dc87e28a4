/**
 * How a runner splits a step into forward passes, and how the passes' logits (and hidden states,
 * for embedding rows) are put back in plan order. Both ONNX runners share the policy: all single-token rows (decodes) in one
 * batched pass, each multi-token row (a prefill chunk) in a pass of its own, so short rows are
 * not padded to long ones (the paged graph) and prefill chunks never mix with decodes (GQA
 * refuses that). Decodes go first, as the scheduler lists them.
 */
import { hiddenOffsets, type HiddenRows, type PlanRow } from '../scheduler/runner-contract.ts';

/** Row indices of each pass, ascending within a pass: [decodes] then [chunk] per chunk. */
export function stepGroups(rows: readonly PlanRow[]): number[][] {
  const decodes: number[] = [];
  const chunks: number[][] = [];
  rows.forEach((r, i) => { if (r.tokenIds.length === 1) decodes.push(i); else chunks.push([i]); });
  return decodes.length > 0 ? [decodes, ...chunks] : chunks;
}

/** [numRows + 1] where each row's logits start: 'all' rows return n positions, 'last' rows one. */
export function logitOffsets(rows: readonly PlanRow[]): number[] {
  const offsets = [0];
  for (const r of rows) offsets.push(offsets.at(-1)! + (r.logits === 'all' ? r.tokenIds.length : 1));
  return offsets;
}

/** Whether a pass's rows are consecutive in the plan, so its logits can be written in place. */
export function isContiguous(group: readonly number[]): boolean {
  return group.every((r, i) => r === group[0]! + i);
}

/**
 * Copies a pass's logits ([positions of its rows, vocabSize], in the pass's row order) into the
 * step's buffer at each row's offset.
 */
export function scatterLogits(group: readonly number[], passLogits: Float32Array, offsets: readonly number[], vocabSize: number, into: Float32Array): void {
  let at = 0;
  for (const r of group) {
    const n = offsets[r + 1]! - offsets[r]!;
    into.set(passLogits.subarray(at * vocabSize, (at + n) * vocabSize), offsets[r]! * vocabSize);
    at += n;
  }
}

/** The step's hidden-state buffer (StepOutput.hidden), or undefined when no row asks for hidden states. */
export function newHiddenRows(rows: readonly PlanRow[], size: number): HiddenRows | undefined {
  const offsets = hiddenOffsets(rows);
  return offsets.at(-1)! > 0 ? { data: new Float32Array(offsets.at(-1)! * size), offsets, size } : undefined;
}

/**
 * Copies the hidden states plan row `i` (`r`) asked for out of a pass's `hidden` output
 * ([positions, size], the row's new tokens at `passRow`..) into the step's buffer. Right after
 * the pass: a runner may reuse the output's memory on the next one.
 */
export function copyHidden(r: PlanRow, i: number, passHidden: Float32Array, passRow: number, into: HiddenRows): void {
  if (r.hidden === undefined) return;
  const n = r.tokenIds.length;
  const first = r.hidden === 'all' ? 0 : n - 1;
  into.data.set(passHidden.subarray((passRow + first) * into.size, (passRow + n) * into.size), into.offsets[i]! * into.size);
}
