/**
 * Stop strings matched on streamed text across token boundaries: text that could still be the
 * start of a stop string is held back; on a match, only the text before it is released.
 */
export class StopMatcher {
  private held = '';
  private done = false;
  /** The stop string that matched (the earliest in the text), once one has. */
  matchedStop: string | null = null;

  constructor(private readonly stops: readonly string[]) {}

  /** Adds a text delta; returns the text safe to emit and whether a stop string matched. */
  push(delta: string): { text: string; matched: boolean } {
    if (this.done) return { text: '', matched: true };
    if (this.stops.length === 0) return { text: delta, matched: false };
    const buf = this.held + delta;
    let at = -1;
    for (const s of this.stops) {
      if (s === '') continue;
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) { at = i; this.matchedStop = s; }
    }
    if (at >= 0) {
      this.done = true;
      this.held = '';
      return { text: buf.slice(0, at), matched: true };
    }
    const keep = this.partialSuffix(buf);
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), matched: false };
  }

  /** Whether `extra`, pushed now, would complete a stop string (nothing changes). */
  wouldMatch(extra: string): boolean {
    if (this.done || extra === '') return false;
    const buf = this.held + extra;
    return this.stops.some((s) => s !== '' && buf.includes(s));
  }

  /** The final delta: everything still held is released unless it completes a stop string. */
  finish(delta: string): { text: string; matched: boolean } {
    const r = this.push(delta);
    if (r.matched) return r;
    const rest = this.held;
    this.held = '';
    return { text: r.text + rest, matched: false };
  }

  /** Length of the longest suffix of `buf` that is a proper prefix of some stop string. */
  private partialSuffix(buf: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > best; n--) {
        if (buf.endsWith(s.slice(0, n))) { best = n; break; }
      }
    }
    return best;
  }
}
