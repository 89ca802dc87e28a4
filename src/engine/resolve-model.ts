/**
 * A model directory as given by the user → an exported model directory the engine can load.
 * An export (manifest.json) is used as it is; a Hugging Face checkpoint is exported once into
 * `<cacheRoot>/exports/<sha1(abs path + fingerprint)>` (`-kv-fp16` appended for an fp16 KV
 * cache, so both exports of one checkpoint coexist) and reused while the checkpoint's files
 * are unchanged. The KV cache dtype is a property of an export: asking for another one than
 * an exported directory was made with is refused. For `--device cuda` a checkpoint is exported
 * in the 'gqa' layout with fp16 compute (`-gqa-fp16`): the graph whose KV cache stays on the GPU.
 *
 * The one serving-path module that reaches the exporter (build-time code, export/*): only
 * when a checkpoint has to be exported, and then in a worker thread (export-worker.ts), so the
 * server's import graph stays free of the graph builders (see manifest.ts), its event loop
 * keeps answering during the export, and a shutdown can stop it (its temporary folder removed;
 * ones left by a killed process are removed on the next export).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { join, resolve } from 'node:path';
import { isCheckpointDir } from '../checkpoint/checkpoint.ts';
import { CheckpointError, ConfigError, EngineError } from '../errors.ts';
import { checkpointFingerprint, manifestKvDtype, MANIFEST_FILE, readManifest } from './manifest.ts';
import { GRAPH_IO_VERSION, type KvDtype } from './graph-io.ts';
import type { Device } from './session.ts';

/** `$GEMMA_SERVE_DATA_DIR`, else `./.data`. */
export function defaultDataDir(): string {
  return resolve(process.env['GEMMA_SERVE_DATA_DIR'] || '.data');
}

/** `kvDtype`: the KV cache dtype asked for (`--kv-dtype`); absent: an export's own, fp32 for a checkpoint. */
export async function resolveModel(dir: string, cacheRoot: string = defaultDataDir(), kvDtype?: KvDtype, device: Device = 'cpu', signal?: AbortSignal): Promise<string> {
  if (!existsSync(dir)) throw new CheckpointError(`${dir}: no such directory`);
  if (existsSync(join(dir, MANIFEST_FILE))) {
    const has = manifestKvDtype(readManifest(dir).manifest);
    if (kvDtype !== undefined && has !== kvDtype) {
      throw new ConfigError(`${dir}: this export's KV cache is ${has}, but --kv-dtype ${kvDtype} was asked: serve it without --kv-dtype (or with --kv-dtype ${has}), or export the checkpoint again with 'gemma-serve export --kv-dtype ${kvDtype}'`, 'kv-dtype');
    }
    return dir;
  }
  if (!isCheckpointDir(dir)) {
    throw new CheckpointError(`${dir}: neither an exported model (manifest.json) nor a Hugging Face checkpoint (config.json + safetensors)`);
  }
  const abs = resolve(dir);
  const key = createHash('sha1').update(`${abs}\n${checkpointFingerprint(abs)}`).digest('hex');
  if (device === 'cuda' && kvDtype === 'fp32') {
    throw new ConfigError(`--device cuda keeps the KV cache in fp16 (CUDA's GroupQueryAttention has no fp32 kernel): drop --kv-dtype fp32`, 'kv-dtype');
  }
  const [suffix, options] = device === 'cuda'
    ? ['-gqa-fp16', { attention: 'gqa', dtype: 'fp16' } as const]
    : [kvDtype === 'fp16' ? '-kv-fp16' : '', { kvDtype: kvDtype ?? 'fp32' }];
  const out = join(cacheRoot, 'exports', key + suffix);
  if (existsSync(join(out, MANIFEST_FILE))) {
    // A cached export from before the graph's latest outputs (embeddings' `hidden`) is made again.
    if (readManifest(out).manifest.graphIoVersion >= GRAPH_IO_VERSION) return out;
    rmSync(out, { recursive: true, force: true });
  }
  mkdirSync(join(cacheRoot, 'exports'), { recursive: true });
  removeStaleExports(join(cacheRoot, 'exports'));
  await exportInWorker({ checkpointDir: abs, outDir: out, ...options }, signal);
  return out;
}

/**
 * Temporary export folders (`<key>.tmp-<pid>`) whose process is gone: an export killed part-way
 * (SIGKILL, a crash) leaves hundreds of MB behind; the next start removes them.
 */
export function removeStaleExports(exportsDir: string): void {
  for (const name of readdirSync(exportsDir)) {
    const m = /\.tmp-(\d+)$/.exec(name);
    if (m === null || Number(m[1]) === process.pid) continue;
    if (processAlive(Number(m[1]))) continue;
    rmSync(join(exportsDir, name), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The export in a worker thread, off the event loop. Aborting `signal` terminates it and removes
 * its temporary folder (the export writes `<out>.tmp-<pid>` and renames it when complete).
 */
async function exportInWorker(opts: { readonly checkpointDir: string; readonly outDir: string }, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted === true) throw new EngineError('loading was stopped', 'engine_closed', 503);
  const entry = import.meta.url.endsWith('.ts') ? new URL('./export-worker-boot.mjs', import.meta.url) : new URL('./export-worker.js', import.meta.url);
  const worker = new Worker(entry, { workerData: opts, execArgv: [] });
  const tmp = `${opts.outDir}.tmp-${process.pid}`;
  const onAbort = (): void => void worker.terminate();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await new Promise<void>((res, rej) => {
      worker.once('message', (m: { ok: boolean; message?: string; name?: string }) => {
        if (m.ok) res();
        else rej(m.name === 'CheckpointError' ? new CheckpointError(m.message ?? 'export failed') : new EngineError(`cannot export the checkpoint: ${m.message}`));
      });
      worker.once('error', (e) => rej(new EngineError(`cannot export the checkpoint: ${e.message}`)));
      worker.once('exit', (code) => rej(signal?.aborted === true ? new EngineError('loading was stopped', 'engine_closed', 503) : new EngineError(`the export worker exited (code ${code})`)));
    });
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    void worker.terminate();
  }
}
