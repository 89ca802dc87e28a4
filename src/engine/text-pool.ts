/**
 * Templating and tokenizing in worker threads, so a long prompt never blocks the HTTP event
 * loop (a 1 MiB prompt takes seconds in the JS tokenizer; /health must answer meanwhile).
 * Jobs go to the worker with the fewest outstanding; each answers in order.
 */
import { Worker } from 'node:worker_threads';
import type { RenderOptions, ToolTemplateMessage } from './chat-template.ts';
import { EngineError, InvalidRequestError } from '../errors.ts';
import type { TokenTableData } from './token-table.ts';

export interface TextPoolInit {
  readonly tokenizerJson: string;
  readonly tokenizerConfig: string | null;
  /** `--chat-template`: a file replacing the checkpoint's template (chat-template.ts loadChatTemplate). */
  readonly chatTemplate?: string | null;
  /** The old behaviour: special-token strings in message content are control tokens. */
  readonly specialTokensInContent: boolean;
}

/** What a worker is started with: the pool's init, and whether it describes the tokens for the main thread. */
export interface TextWorkerData extends TextPoolInit {
  readonly buildTable: boolean;
}

/** A job for a text worker. */
export type TextJob =
  | { readonly type: 'encode'; readonly id: number; readonly text: string }
  | { readonly type: 'chat'; readonly id: number; readonly messages: readonly ToolTemplateMessage[]; readonly options: RenderOptions };

/**
 * A worker's answer (id -1: loaded, with the token table when asked for one and whether the chat
 * template renders tools itself; or failed to load).
 */
export type TextReply =
  | { readonly id: number; readonly ids: Int32Array }
  | { readonly id: -1; readonly table: TokenTableData | null; readonly handlesTools: boolean }
  | { readonly id: number; readonly error: { readonly message: string; readonly param: string | null; readonly status: number } };

type Job = { readonly resolve: (ids: Int32Array) => void; readonly reject: (e: Error) => void };
interface Slot { readonly worker: Worker; readonly jobs: Map<number, Job> }

export class TextPool {
  private nextId = 0;
  private closed = false;

  private constructor(
    private readonly slots: readonly Slot[],
    /** Every token's text, for decoding on the main thread (null: the tokenizer's decoder needs the tokenizer). */
    readonly table: TokenTableData | null,
    /** The chat template takes a `tools` variable (ChatTemplate.handlesTools), as the workers loaded it. */
    readonly handlesTools: boolean,
  ) {
    for (const slot of slots) {
      slot.worker.on('message', (r: TextReply) => {
        const job = slot.jobs.get(r.id);
        if (job === undefined || 'table' in r) return;
        slot.jobs.delete(r.id);
        if ('ids' in r) job.resolve(r.ids);
        else job.reject(r.error.status === 400 ? new InvalidRequestError(r.error.message, r.error.param) : new EngineError(`text worker: ${r.error.message}`));
      });
      const failAll = (e: Error): void => {
        for (const job of slot.jobs.values()) job.reject(e);
        slot.jobs.clear();
      };
      slot.worker.on('error', (e) => failAll(new EngineError(`text worker failed: ${e.message}`)));
      slot.worker.on('exit', () => { if (!this.closed) failAll(new EngineError('text worker exited')); });
    }
  }

  /** Starts `size` workers and waits until each has loaded the tokenizer and template (the first also builds the token table). */
  static async start(init: TextPoolInit, size: number): Promise<TextPool> {
    const workers = Array.from({ length: Math.max(1, size) }, (_, i) => new Worker(workerEntry(), { workerData: { ...init, buildTable: i === 0 } satisfies TextWorkerData, execArgv: [] }));
    type Loaded = Extract<TextReply, { table: unknown }>;
    let loaded: Loaded[];
    try {
      loaded = await Promise.all(workers.map((w) => new Promise<Loaded>((res, rej) => {
        const onMessage = (r: TextReply): void => {
          if (r.id !== -1) return;
          cleanup();
          if ('table' in r) res(r); else rej(new EngineError(`text worker: ${'error' in r ? r.error.message : 'no table'}`));
        };
        const onError = (e: Error): void => { cleanup(); rej(e); };
        const onExit = (code: number): void => { cleanup(); rej(new EngineError(`text worker exited (code ${code}) while loading`)); };
        // Only our own listeners come off: removeAllListeners would take the Worker's internal
        // ones too, and its port would no longer deliver messages.
        const cleanup = (): void => { w.off('message', onMessage); w.off('error', onError); w.off('exit', onExit); };
        w.on('message', onMessage);
        w.on('error', onError);
        w.on('exit', onExit);
      })));
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    return new TextPool(workers.map((worker) => ({ worker, jobs: new Map() })), loaded[0]?.table ?? null, loaded[0]?.handlesTools ?? false);
  }

  /** Token ids of plain text (no BOS added). */
  encode(text: string): Promise<Int32Array> {
    return this.run((id) => ({ type: 'encode', id, text }));
  }

  /** The chat template rendered and tokenized; a template rejection is a 400 on `messages`. */
  encodeChat(messages: readonly ToolTemplateMessage[], options: RenderOptions): Promise<Int32Array> {
    return this.run((id) => ({ type: 'chat', id, messages, options }));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private run(job: (id: number) => TextJob): Promise<Int32Array> {
    if (this.closed) return Promise.reject(new EngineError('the engine is closed', 'engine_closed', 503));
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.jobs.size < slot.jobs.size) slot = s;
    const id = this.nextId++;
    return new Promise<Int32Array>((resolve, reject) => {
      slot.jobs.set(id, { resolve, reject });
      slot.worker.postMessage(job(id));
    });
  }
}

/** The worker's entry: the compiled module beside this one, or the tsx boot file from source. */
function workerEntry(): URL {
  return import.meta.url.endsWith('.ts') ? new URL('./text-worker-boot.mjs', import.meta.url) : new URL('./text-worker.js', import.meta.url);
}
