// Test support: a real engine (worker thread) on a tiny random model, served by the real app
// on an ephemeral loopback port, and an official openai client pointed at it. Everything is
// torn down with the calling test file.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { buildApp } from '../../src/server/app.ts';

export interface TinyServer {
  readonly engine: Engine;
  readonly baseURL: string;
  readonly client: OpenAI;
  readonly model: string;
  /** The Hugging Face checkpoint the engine serves (for test/reference/gemma2-reference.ts). */
  readonly checkpointDir: string;
}

export interface TinyServerOptions {
  readonly maxPositions?: number;
  /** Further names the model answers to (EngineOptions.modelAliases). */
  readonly modelAliases?: readonly string[];
  /** API keys the app requires (none: open). */
  readonly apiKeys?: readonly string[];
  /** EngineOptions.minStepMs: each step lasts at least this long (a generation cut "mid-way" is still running on any machine). */
  readonly minStepMs?: number;
}

/** A tiny random model with a 256-token context (or `maxPositions`), served on 127.0.0.1. */
export async function startTinyServer(name: string, opts: TinyServerOptions = {}): Promise<TinyServer> {
  const dir = mkdtempSync(join(tmpdir(), `gs-${name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const checkpointDir = join(dir, 'ckpt');
  makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: checkpointDir, set: { max_position_embeddings: String(opts.maxPositions ?? 256) } });
  const engine = await Engine.start({ modelDir: checkpointDir, dataDir: join(dir, 'data'), kvCacheBytes: Math.max(8, (opts.maxPositions ?? 256) / 32) * 2 ** 20, modelAliases: opts.modelAliases, minStepMs: opts.minStepMs });
  const app = buildApp({ engine, apiKeys: opts.apiKeys });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => { await app.close(); await engine.close(); });
  const baseURL = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'none', maxRetries: 0 });
  return { engine, baseURL, client, model: engine.modelId, checkpointDir };
}
