/**
 * A Hugging Face Gemma 2 checkpoint directory, opened and validated: config.json, one or
 * sharded safetensors, and the optional tokenizer / generation files. Opening checks every
 * expected tensor's presence and shape, so a bad checkpoint fails at once with one message
 * naming the file and the tensor.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError } from '../errors.ts';
import { expectedTensors, parseGemma2Config, type Gemma2Config } from './config.ts';
import { readSafetensorsHeader, type TensorEntry } from './safetensors.ts';

export interface Checkpoint {
  readonly dir: string;
  readonly config: Gemma2Config;
  /** Every expected tensor by HF name. */
  readonly tensors: ReadonlyMap<string, TensorEntry>;
  /** Paths of the optional files, null when absent. */
  readonly tokenizerJson: string | null;
  readonly tokenizerConfigJson: string | null;
  readonly generationConfigJson: string | null;
}

export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new CheckpointError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/** True when `dir` looks like an HF checkpoint (has config.json and safetensors). */
export function isCheckpointDir(dir: string): boolean {
  return existsSync(join(dir, 'config.json')) &&
    (existsSync(join(dir, 'model.safetensors')) || existsSync(join(dir, 'model.safetensors.index.json')));
}

export function openCheckpoint(dir: string): Checkpoint {
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw new CheckpointError(`${dir}: no config.json (not a Hugging Face checkpoint directory)`);
  const config = parseGemma2Config(readJsonFile(configPath), configPath);

  const found = new Map<string, TensorEntry>();
  for (const file of safetensorsFiles(dir)) {
    for (const e of readSafetensorsHeader(file)) found.set(e.name, e);
  }
  const tensors = new Map<string, TensorEntry>();
  const expected = expectedTensors(config);
  for (const [name, shape] of expected) {
    const e = found.get(name);
    if (!e) throw new CheckpointError(`${dir}: tensor ${name} is missing (expected shape [${shape.join(', ')}])`);
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(`${e.file}: tensor ${name} has shape [${e.shape.join(', ')}], expected [${shape.join(', ')}] from config.json`);
    }
    tensors.set(name, e);
  }
  // An untied head shipped next to tie_word_embeddings=true is accepted and used.
  const head = found.get('lm_head.weight');
  if (head && !tensors.has('lm_head.weight')) {
    const want = [config.vocabSize, config.hiddenSize];
    if (head.shape.length === 2 && head.shape[0] === want[0] && head.shape[1] === want[1]) tensors.set('lm_head.weight', head);
  }
  const optional = (name: string): string | null => (existsSync(join(dir, name)) ? join(dir, name) : null);
  return {
    dir, config, tensors,
    tokenizerJson: optional('tokenizer.json'),
    tokenizerConfigJson: optional('tokenizer_config.json'),
    generationConfigJson: optional('generation_config.json'),
  };
}

function safetensorsFiles(dir: string): string[] {
  const single = join(dir, 'model.safetensors');
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (existsSync(indexPath)) {
    const index = readJsonFile(indexPath) as { weight_map?: unknown };
    if (typeof index.weight_map !== 'object' || index.weight_map === null) {
      throw new CheckpointError(`${indexPath}: no weight_map`);
    }
    const files = [...new Set(Object.values(index.weight_map as Record<string, unknown>))];
    return files.map((f) => {
      if (typeof f !== 'string' || f.includes('/') || f.includes('\\')) throw new CheckpointError(`${indexPath}: invalid shard name ${JSON.stringify(f)}`);
      const p = join(dir, f);
      if (!existsSync(p)) throw new CheckpointError(`${indexPath}: shard ${f} is missing`);
      return p;
    });
  }
  if (existsSync(single)) return [single];
  throw new CheckpointError(`${dir}: no model.safetensors or model.safetensors.index.json`);
}
