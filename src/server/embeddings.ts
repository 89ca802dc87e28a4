/**
 * What the three embeddings routes share (docs/API.md "Embeddings"): inputs → token ids (texts
 * tokenized in a text worker with <bos> first; token ids as given; cut to a limit when asked),
 * the `dimensions` check, and the embeddings computed through the engine with a bounded number
 * in flight, so a batch of any size is batched by the scheduler without filling the queue.
 * A failed input, or the client gone, aborts the rest.
 */
import { setMaxListeners } from 'node:events';
import type { Embedding, Engine } from '../engine/engine.ts';
import type { Pooling } from '../engine/types.ts';
import { InvalidRequestError } from '../errors.ts';

/** One input: a text or token ids. */
export type EmbeddingInput = string | readonly number[];

/** The inputs of an `input` field: one text or token-id array, or a list of them. */
export function embeddingInputs(input: string | readonly string[] | readonly number[] | readonly (readonly number[])[], param = 'input'): EmbeddingInput[] {
  if (typeof input === 'string') return [input];
  if (input.length === 0) throw new InvalidRequestError(`${param}: no inputs`, param);
  const first = input[0]!;
  return typeof first === 'number' ? [input as readonly number[]] : [...input as readonly EmbeddingInput[]];
}

/** Refuses `dimensions` other than the model's (gemma-serve does not shorten embeddings). */
export function checkDimensions(engine: Engine, dimensions: number | null | undefined): void {
  if (dimensions == null || dimensions === engine.embeddingSize) return;
  throw new InvalidRequestError(`dimensions: this model's embeddings have ${engine.embeddingSize ?? 'no'} dimensions; only that value is accepted (${dimensions} was asked)`, 'dimensions');
}

/**
 * Token ids of each input. `truncateTo` set: an input longer is cut to its first that many
 * tokens (Ollama's truncate); else an over-long input is left for Engine.embed to refuse. A text
 * is cut to what can hold that many tokens before tokenizing, so tokenizing stays bounded.
 */
export async function tokenizeInputs(engine: Engine, inputs: readonly EmbeddingInput[], param: string, truncateTo?: number): Promise<number[][]> {
  return Promise.all(inputs.map(async (input, i) => {
    const where = inputs.length > 1 ? `${param}[${i}]` : param;
    if (typeof input !== 'string') return truncateTo !== undefined ? input.slice(0, truncateTo) : [...input];
    if (input === '') throw new InvalidRequestError(`${where}: the input is empty`, param);
    const text = truncateTo !== undefined ? input.slice(0, (truncateTo + 16) * engine.tokenizer.maxPieceChars) : input;
    const ids = [engine.tokenizer.bosId, ...await engine.encodeText(text, truncateTo !== undefined ? null : param)];
    return truncateTo !== undefined ? ids.slice(0, truncateTo) : ids;
  }));
}

/** The longest input the engine embeds: the context, or what the KV cache holds of it; `numCtx` (Ollama's num_ctx) lowers it. */
export function embeddingLimit(engine: Engine, numCtx?: unknown): number {
  const limit = Math.min(engine.contextLength, engine.maxSequenceTokens);
  return typeof numCtx === 'number' && Number.isInteger(numCtx) && numCtx > 0 ? Math.min(limit, numCtx) : limit;
}

/** The embeddings of `inputs` in order; at most the engine's running sequences in flight for this request. */
export async function embedAll(engine: Engine, inputs: readonly number[][], opts: { readonly pooling?: Pooling; readonly param: string; readonly signal: AbortSignal }): Promise<Embedding[]> {
  const controller = new AbortController();
  const lanes = Math.min(inputs.length, engine.maxRunning);
  // Each lane's embed listens on the signal while it runs: up to `lanes` listeners, by design.
  setMaxListeners(lanes + 1, controller.signal);
  const stop = (): void => controller.abort();
  opts.signal.addEventListener('abort', stop, { once: true });
  const out = new Array<Embedding>(inputs.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < inputs.length && !controller.signal.aborted) {
      const i = next++;
      out[i] = await engine.embed(inputs[i]!, { pooling: opts.pooling, param: opts.param, signal: controller.signal });
    }
  };
  try {
    await Promise.all(Array.from({ length: lanes }, () => lane().catch((e: unknown) => { stop(); throw e; })));
  } finally {
    opts.signal.removeEventListener('abort', stop);
  }
  return out;
}

/** An AbortSignal aborted when the client goes before the answer is written. */
export function clientGone(reply: { readonly raw: NodeJS.EventEmitter & { readonly writableFinished: boolean } }): AbortSignal {
  const controller = new AbortController();
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) controller.abort(); });
  return controller.signal;
}
