/**
 * The inference thread. Owns the ModelRunner and runs one step loop: each iteration prefills
 * the newly submitted sequences (one run each, last logits only), then decodes every running
 * sequence together in one batched step of one token per row. Sampling (sampling.ts) is greedy
 * at temperature 0, else seeded (mulberry32), so a seed fixes the output.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { logSoftmax, topLogprobs } from './logprobs.ts';
import { processLogits, sampleProcessed, TokenHistory, type SamplingParams } from './sampling.ts';
import { ModelRunner } from './model-runner.ts';
import { ScriptedRunner } from './scripted-runner.ts';
import type { SequenceCache } from './kv-cache.ts';
import type { Device } from './session.ts';

export interface WorkerInit {
  readonly exportDir: string;
  readonly device: Device;
  readonly kvCacheBytes?: number;
  /** At most this many sequences decode together; later ones wait in submission order. */
  readonly maxNumSeqs: number;
  /** Run a ScriptedRunner emitting these tokens instead of the ONNX model (tests, benchmarks). */
  readonly script?: readonly number[];
}

export interface SubmitMessage {
  readonly type: 'submit';
  readonly id: number;
  readonly promptIds: number[];
  readonly maxTokens: number;
  readonly sampling: SamplingParams;
  readonly seed: number;
  /** Token ids that end the sequence (empty with ignore_eos). */
  readonly stopIds: number[];
  /** Stop ids cannot be sampled before this many tokens are generated. */
  readonly minTokens: number;
  /** null: no logprobs; else how many top alternatives to send with each token. */
  readonly logprobs: number | null;
  /** null: none; else the logprob of every prompt token after the first, with this many alternatives. */
  readonly promptLogprobs: number | null;
}
export interface TokenLogprobs {
  readonly logprob: number;
  readonly top: { id: number; logprob: number }[];
}
export type ToWorker = SubmitMessage | { readonly type: 'abort'; readonly id: number } | { readonly type: 'close' };
export type FinishReason = 'stop' | 'length' | 'abort';
export type FromWorker =
  | { type: 'ready' }
  | { type: 'token'; id: number; tokenId: number; logprobs?: TokenLogprobs }
  /** Sent once before the first token when promptLogprobs was asked: entries for prompt tokens 1..n-1. */
  | { type: 'prompt_logprobs'; id: number; logprobs: TokenLogprobs[] }
  | { type: 'finish'; id: number; reason: FinishReason; promptTokens: number; completionTokens: number }
  | { type: 'error'; id: number | null; message: string };

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

/** Prompt tokens per forward pass when every position's logits are wanted. */
const SCORING_CHUNK = 64;

interface Running {
  readonly req: SubmitMessage;
  readonly seq: SequenceCache;
  readonly rand: () => number;
  readonly stop: ReadonlySet<number>;
  readonly history: TokenHistory;
  last: number;
  generated: number;
}

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('worker.ts must run in a worker thread');
  const init = workerData as WorkerInit;
  const send = (m: FromWorker): void => port.postMessage(m);
  let runner: Pick<ModelRunner, 'cache' | 'step' | 'release'>;
  try {
    runner = init.script !== undefined
      ? ScriptedRunner.load(init.exportDir, init.script, init.kvCacheBytes)
      : await ModelRunner.load(init.exportDir, { device: init.device, kvCacheBytes: init.kvCacheBytes });
  } catch (e) {
    send({ type: 'error', id: null, message: (e as Error).message });
    return;
  }
  const cache = runner.cache;
  const pending: SubmitMessage[] = [];
  const running = new Map<number, Running>();
  const aborted = new Set<number>();
  let closing = false;
  let wake: (() => void) | null = null;

  port.on('message', (m: ToWorker) => {
    if (m.type === 'submit') pending.push(m);
    else if (m.type === 'abort') aborted.add(m.id);
    else closing = true;
    wake?.();
  });

  const finish = (r: Running, reason: FinishReason): void => {
    cache.release(r.seq);
    running.delete(r.req.id);
    aborted.delete(r.req.id);
    send({ type: 'finish', id: r.req.id, reason, promptTokens: r.req.promptIds.length, completionTokens: r.generated });
  };
  const fail = (r: Running, message: string): void => {
    cache.release(r.seq);
    running.delete(r.req.id);
    aborted.delete(r.req.id);
    send({ type: 'error', id: r.req.id, message });
  };
  /** Records a sampled token; true when the sequence goes on. */
  const accept = (r: Running, row: Float32Array): boolean => {
    if (r.generated < r.req.minTokens) for (const id of r.req.stopIds) if (id >= 0 && id < row.length) row[id] = -Infinity;
    const logits = processLogits(row, r.req.sampling, r.history);
    const tokenId = sampleProcessed(logits, r.req.sampling, r.rand);
    r.generated++;
    r.last = tokenId;
    r.history.add(tokenId);
    if (r.stop.has(tokenId)) { finish(r, 'stop'); return false; }
    let logprobs: TokenLogprobs | undefined;
    if (r.req.logprobs !== null) {
      const lp = logSoftmax(logits);
      logprobs = { logprob: lp[tokenId]!, top: r.req.logprobs > 0 ? topLogprobs(lp, r.req.logprobs) : [] };
    }
    send({ type: 'token', id: r.req.id, tokenId, ...(logprobs ? { logprobs } : {}) });
    if (r.generated >= r.req.maxTokens) { finish(r, 'length'); return false; }
    return true;
  };
  /**
   * Prefills in chunks with every position's logits, sends the prompt tokens' logprobs, and
   * returns the last position's logits. Chunks bound the logits held at once (chunk x vocab).
   */
  const prefillScoring = async (r: Running): Promise<Float32Array> => {
    const ids = r.req.promptIds;
    const k = r.req.promptLogprobs ?? 0;
    const entries: TokenLogprobs[] = [];
    let last = new Float32Array(0);
    for (let start = 0; start < ids.length; start += SCORING_CHUNK) {
      const chunk = ids.slice(start, start + SCORING_CHUNK);
      const out = await runner.step([{ seq: r.seq, tokenIds: chunk, logits: 'all' }]);
      for (let s = 0; s < chunk.length; s++) {
        const row = out.logits.subarray(s * out.vocabSize, (s + 1) * out.vocabSize);
        const next = start + s + 1;
        if (next < ids.length) {
          const lp = logSoftmax(row);
          entries.push({ logprob: lp[ids[next]!]!, top: k > 0 ? topLogprobs(lp, k) : [] });
        } else {
          last = new Float32Array(row);
        }
      }
    }
    send({ type: 'prompt_logprobs', id: r.req.id, logprobs: entries });
    return last;
  };
  const dropAborted = (): void => {
    for (let i = pending.length - 1; i >= 0; i--) {
      const p = pending[i]!;
      if (aborted.has(p.id)) {
        pending.splice(i, 1);
        aborted.delete(p.id);
        send({ type: 'finish', id: p.id, reason: 'abort', promptTokens: p.promptIds.length, completionTokens: 0 });
      }
    }
    for (const r of [...running.values()]) if (aborted.has(r.req.id)) finish(r, 'abort');
    // Aborts of ids that already finished are stale.
    for (const id of aborted) if (!running.has(id) && !pending.some((p) => p.id === id)) aborted.delete(id);
  };

  send({ type: 'ready' });
  while (!closing) {
    dropAborted();
    if (pending.length === 0 && running.size === 0) {
      await new Promise<void>((res) => { wake = res; });
      wake = null;
      continue;
    }
    // Prefill new prompts (those that fit the cache now; the rest wait for room).
    const waiting: SubmitMessage[] = [];
    for (const req of pending.splice(0)) {
      if (running.size >= init.maxNumSeqs) { waiting.push(req); continue; }
      const seq = cache.newSequence();
      if (!cache.reserve(seq, req.promptIds.length)) {
        cache.release(seq);
        if (running.size === 0) send({ type: 'error', id: req.id, message: `the prompt (${req.promptIds.length} tokens) does not fit the KV cache` });
        else waiting.push(req);
        continue;
      }
      const r: Running = { req, seq, rand: mulberry32(req.seed), stop: new Set(req.stopIds), history: new TokenHistory(req.promptIds), last: -1, generated: 0 };
      running.set(req.id, r);
      try {
        let last: Float32Array;
        if (req.promptLogprobs === null) {
          const out = await runner.step([{ seq, tokenIds: req.promptIds, logits: 'last' }]);
          last = out.logits.subarray(0, out.vocabSize);
        } else {
          last = await prefillScoring(r);
        }
        if (aborted.has(req.id)) { finish(r, 'abort'); continue; }
        accept(r, last);
      } catch (e) {
        fail(r, (e as Error).message);
      }
    }
    pending.unshift(...waiting);
    dropAborted();
    // One batched decode step over every running sequence.
    const rows: Running[] = [];
    for (const r of running.values()) {
      if (cache.reserve(r.seq, r.seq.numCached + 1)) rows.push(r);
      else if (rows.length === 0 && running.size === 1) fail(r, 'the KV cache is full');
    }
    if (rows.length === 0) {
      if (waiting.length > 0 && running.size === 0) continue;
      if (running.size > 0 && rows.length === 0) {
        // Nothing could grow: fail the longest to free room.
        const victim = [...running.values()].sort((a, b) => b.seq.numCached - a.seq.numCached)[0]!;
        fail(victim, 'the KV cache is full');
      }
      continue;
    }
    try {
      const out = await runner.step(rows.map((r) => ({ seq: r.seq, tokenIds: [r.last], logits: 'last' as const })));
      rows.forEach((r, i) => {
        if (!running.has(r.req.id)) return;
        if (aborted.has(r.req.id)) { finish(r, 'abort'); return; }
        const row = out.logits.subarray(out.offsets[i]! * out.vocabSize, (out.offsets[i]! + 1) * out.vocabSize);
        accept(r, row);
      });
    } catch (e) {
      for (const r of rows) if (running.has(r.req.id)) fail(r, (e as Error).message);
    }
  }
  await runner.release();
  port.close();
}

await main();
