/**
 * An embedding's pooling in the inference worker: the final hidden states of its prefill rows
 * come in chunk by chunk (StepOutput.hidden) and are summed in float64 ('mean') or the last one
 * kept ('last'); after the last chunk the pooled vector is L2-normalised. Only those H floats
 * cross to the main thread. A recomputation after a preemption starts again at position 0,
 * which starts the pool again.
 */
import type { Pooling } from './types.ts';

export class EmbeddingPool {
  private readonly sum: Float64Array;
  /** Positions pooled so far. */
  private count = 0;

  constructor(readonly pooling: Pooling, readonly size: number) {
    this.sum = new Float64Array(size);
  }

  /** Takes the `n` hidden states (rows of `size` floats at `data[at * size]`..) of a row starting at position `start`. */
  add(start: number, data: Float32Array, at: number, n: number): void {
    if (start === 0 || this.pooling === 'last') { this.sum.fill(0); this.count = 0; }
    const H = this.size;
    for (let r = this.pooling === 'last' ? n - 1 : 0; r < n; r++) {
      const row = (at + r) * H;
      for (let j = 0; j < H; j++) this.sum[j]! += data[row + j]!;
      this.count++;
    }
  }

  /** The pooled vector, L2-normalised (a zero vector stays zero). */
  result(): Float32Array {
    let norm = 0;
    for (let j = 0; j < this.size; j++) norm += this.sum[j]! * this.sum[j]!;
    // The mean's 1/count cancels in the normalisation; it is kept for a zero-norm result's scale.
    const scale = norm > 0 ? 1 / Math.sqrt(norm) : 1 / Math.max(this.count, 1);
    return Float32Array.from(this.sum, (v) => v * scale);
  }
}
