/**
 * A model directory as given by the user → an exported model directory the engine can load.
 * An export (manifest.json) is used as it is; a Hugging Face checkpoint is exported once into
 * `<cacheRoot>/exports/<sha1(abs path + fingerprint)>` (`-kv-fp16` appended for an fp16 KV
 * cache, so both exports of one checkpoint coexist) and reused while the checkpoint's files
 * are unchanged. The KV cache dtype is a property of an export: asking for another one than
 * an exported directory was made with is refused. For `--device cuda` a checkpoint is exported
 * in the 'gqa' layout with fp16 compute (`-gqa-fp16`): the graph whose KV cache stays on the GPU.
 *
 * The one serving-path module that reaches the exporter (build-time code, export/*): it loads
 * it with a dynamic import() only when a checkpoint has to be exported, so serving an export
 * (or a cached one) never loads the graph builders and the static import graph of the server
 * stays free of them (see manifest.ts).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isCheckpointDir } from '../checkpoint/checkpoint.ts';
import { CheckpointError, ConfigError } from '../errors.ts';
import { checkpointFingerprint, manifestKvDtype, MANIFEST_FILE, readManifest } from './manifest.ts';
import type { KvDtype } from './graph-io.ts';
import type { Device } from './session.ts';

/** `$GEMMA_SERVE_DATA_DIR`, else `./.data`. */
export function defaultDataDir(): string {
  return resolve(process.env['GEMMA_SERVE_DATA_DIR'] || '.data');
}

/** `kvDtype`: the KV cache dtype asked for (`--kv-dtype`); absent: an export's own, fp32 for a checkpoint. */
export async function resolveModel(dir: string, cacheRoot: string = defaultDataDir(), kvDtype?: KvDtype, device: Device = 'cpu'): Promise<string> {
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
  if (existsSync(join(out, MANIFEST_FILE))) return out;
  mkdirSync(join(cacheRoot, 'exports'), { recursive: true });
  const { exportCheckpoint } = await import('./export/export.ts');
  exportCheckpoint({ checkpointDir: abs, outDir: out, ...options });
  return out;
}
