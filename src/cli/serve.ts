/**
 * `gemma-serve serve`: load the model (exporting a checkpoint once if needed), start the
 * OpenAI-compatible HTTP server. Flags override the environment (GEMMA_SERVE_MODEL, _HOST,
 * _PORT, _DEVICE, _KV_CACHE_MEMORY); everything is validated before anything loads. With no
 * model configured, a random-weight tiny model is generated once into the data dir.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { makeRandomCheckpoint } from '../checkpoint/make-random.ts';
import { Engine } from '../engine/engine.ts';
import { defaultDataDir } from '../engine/resolve-model.ts';
import { ConfigError } from '../errors.ts';
import { buildApp } from '../server/app.ts';
import { UsageError, usageErrors, USAGE, wantsHelp } from './usage.ts';

export async function serve(argv: string[]): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(USAGE);
    return 0;
  }
  const { values, positionals } = usageErrors(() => parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      model: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      device: { type: 'string' },
      'kv-cache-memory': { type: 'string' },
    },
  }));
  if (positionals.length > 0) throw new UsageError(`serve: unexpected argument ${JSON.stringify(positionals[0])}`);
  const env = process.env;
  const host = values.host ?? env['GEMMA_SERVE_HOST'] ?? '127.0.0.1';
  const portText = values.port ?? env['GEMMA_SERVE_PORT'] ?? '8000';
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) throw new ConfigError(`serve: port must be an integer from 0 to 65535, got ${JSON.stringify(portText)}`, 'port');
  const port = Number(portText);
  const device = values.device ?? env['GEMMA_SERVE_DEVICE'] ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new ConfigError(`serve: device must be cpu or cuda, got ${JSON.stringify(device)}`, 'device');
  const kvText = values['kv-cache-memory'] ?? env['GEMMA_SERVE_KV_CACHE_MEMORY'];
  let kvCacheBytes: number | undefined;
  if (kvText !== undefined) {
    if (!/^\d+$/.test(kvText) || !Number.isSafeInteger(Number(kvText)) || Number(kvText) <= 0) {
      throw new ConfigError(`serve: --kv-cache-memory must be a positive number of bytes, got ${JSON.stringify(kvText)}`, 'kv-cache-memory');
    }
    kvCacheBytes = Number(kvText);
  }
  const logger = pino({ name: 'gemma-serve' });
  const dataDir = defaultDataDir();
  let modelDir = values.model ?? env['GEMMA_SERVE_MODEL'];
  if (modelDir === undefined || modelDir === '') {
    modelDir = join(dataDir, 'default-model');
    if (!existsSync(join(modelDir, 'config.json'))) {
      logger.info({ dir: modelDir }, 'no model configured: generating a random-weight tiny model');
      makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: modelDir, set: {} });
    }
    logger.warn({ dir: modelDir },
      'serving a model with RANDOM weights (its output is gibberish): point at a real Gemma 2 checkpoint or export with --model DIR or GEMMA_SERVE_MODEL=DIR');
  } else if (!existsSync(modelDir)) {
    throw new ConfigError(`serve: model directory ${modelDir} does not exist`, 'model');
  }
  const t0 = performance.now();
  const engine = await Engine.start({ modelDir, device, kvCacheBytes, dataDir });
  logger.info({ model: engine.modelId, exportDir: engine.exportDir, device, contextLength: engine.contextLength, seconds: Math.round(performance.now() - t0) / 1000 }, 'model loaded');
  const app = buildApp({ engine, logger });
  try {
    await app.listen({ host, port });
  } catch (e) {
    await engine.close();
    throw new ConfigError(`serve: cannot listen on ${host}:${port} (${(e as Error).message})`, 'port');
  }
  await new Promise<void>((res) => {
    const stop = (signal: string): void => {
      logger.info({ signal }, 'shutting down');
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      res();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await app.close();
  await engine.close();
  return 0;
}
