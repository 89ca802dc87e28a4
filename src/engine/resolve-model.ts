/**
 * A model directory as given by the user → an exported model directory the engine can load.
 * An export (manifest.json) is used as it is; a Hugging Face checkpoint is exported once into
 * `<cacheRoot>/exports/<sha1(abs path + fingerprint)>` and reused while the checkpoint's files
 * are unchanged.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isCheckpointDir } from '../checkpoint/checkpoint.ts';
import { CheckpointError } from '../errors.ts';
import { checkpointFingerprint, exportCheckpoint, MANIFEST_FILE } from './export/export.ts';

/** `$GEMMA_SERVE_DATA_DIR`, else `./.data`. */
export function defaultDataDir(): string {
  return resolve(process.env['GEMMA_SERVE_DATA_DIR'] || '.data');
}

export function resolveModel(dir: string, cacheRoot: string = defaultDataDir()): string {
  if (!existsSync(dir)) throw new CheckpointError(`${dir}: no such directory`);
  if (existsSync(join(dir, MANIFEST_FILE))) return dir;
  if (!isCheckpointDir(dir)) {
    throw new CheckpointError(`${dir}: neither an exported model (manifest.json) nor a Hugging Face checkpoint (config.json + safetensors)`);
  }
  const abs = resolve(dir);
  const key = createHash('sha1').update(`${abs}\n${checkpointFingerprint(abs)}`).digest('hex');
  const out = join(cacheRoot, 'exports', key);
  if (existsSync(join(out, MANIFEST_FILE))) return out;
  mkdirSync(join(cacheRoot, 'exports'), { recursive: true });
  exportCheckpoint({ checkpointDir: abs, outDir: out });
  return out;
}
