/**
 * `gemma-serve serve`: start the OpenAI-compatible HTTP server, then load the model behind it
 * (exporting a checkpoint once if needed); until it is loaded the API answers 503 and /ready
 * says "loading". Flags override the environment (GEMMA_SERVE_<FLAG>); everything is validated
 * before anything loads. With no model configured, a random-weight tiny model is generated
 * once into the data dir.
 */
import { INT4_KERNELS } from '../engine/native/q4-graph.ts';
import { ATTENTION_KERNELS } from '../engine/native/attention-graph.ts';
import { SAMPLER_KINDS } from '../engine/device-sampler.ts';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { loadChatTemplate } from '../engine/chat-template.ts';
import { DEFAULT_MAX_NUM_SEQS, DEFAULT_MAX_WAITING, Engine } from '../engine/engine.ts';
import { defaultDataDir } from '../engine/resolve-model.ts';
import { KV_DTYPES, type KvDtype } from '../engine/graph-io.ts';
import { ConfigError, EngineError, GemmaServeError } from '../errors.ts';
import { buildApp } from '../server/app.ts';
import { DEFAULT_SHUTDOWN_TIMEOUT_SECONDS, drain } from '../server/drain.ts';
import { EngineState } from '../server/engine-state.ts';
import { createLogger } from '../server/logging.ts';
import { Metrics, METRICS_NAMES, type MetricsNames } from '../server/metrics.ts';
import { DEFAULT_STATS_INTERVAL_SECONDS, startStatsLog } from '../server/stats-log.ts';
import { parseFlags } from './usage.ts';

export async function serve(argv: string[]): Promise<number> {
  const values = parseFlags('serve', argv, {
    model: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    device: { type: 'string' },
    'kv-cache-memory': { type: 'string' },
    'kv-dtype': { type: 'string' },
    'api-key': { type: 'string', multiple: true },
    'api-key-file': { type: 'string' },
    'cors-origin': { type: 'string', multiple: true },
    'max-body-bytes': { type: 'string' },
    'max-num-seqs': { type: 'string' },
    'max-waiting': { type: 'string' },
    'max-num-batched-tokens': { type: 'string' },
    threads: { type: 'string' },
    'int4-kernel': { type: 'string' },
    'attention-kernel': { type: 'string' },
    sampler: { type: 'string' },
    'served-model-name': { type: 'string', multiple: true },
    'metrics-names': { type: 'string' },
    'log-prompts': { type: 'boolean' },
    'special-tokens-in-content': { type: 'boolean' },
    'chat-template': { type: 'string' },
    'no-prefix-caching': { type: 'boolean' },
    'stats-interval': { type: 'string' },
    'shutdown-timeout': { type: 'string' },
  });
  const env = process.env;
  const host = values.host ?? env['GEMMA_SERVE_HOST'] ?? '127.0.0.1';
  const portText = values.port ?? env['GEMMA_SERVE_PORT'] ?? '8000';
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) throw new ConfigError(`serve: port must be an integer from 0 to 65535, got ${JSON.stringify(portText)}`, 'port');
  const port = Number(portText);
  const device = resolveDevice('serve', values.device);
  const kvCacheBytes = positiveBytes('kv-cache-memory', values['kv-cache-memory'] ?? env['GEMMA_SERVE_KV_CACHE_MEMORY']);
  const kvDtype = resolveKvDtype(values['kv-dtype'] ?? env['GEMMA_SERVE_KV_DTYPE']);
  const apiKeys = resolveApiKeys(values['api-key'], values['api-key-file'], env);
  const corsOrigins = values['cors-origin'] ?? splitList(env['GEMMA_SERVE_CORS_ORIGIN']);
  const bodyLimitBytes = positiveBytes('max-body-bytes', values['max-body-bytes'] ?? env['GEMMA_SERVE_MAX_BODY_BYTES']);
  const maxNumSeqs = integerFlag('max-num-seqs', values['max-num-seqs'] ?? env['GEMMA_SERVE_MAX_NUM_SEQS'], 1);
  const maxWaiting = integerFlag('max-waiting', values['max-waiting'] ?? env['GEMMA_SERVE_MAX_WAITING'], 0);
  const maxNumBatchedTokens = integerFlag('max-num-batched-tokens', values['max-num-batched-tokens'] ?? env['GEMMA_SERVE_MAX_NUM_BATCHED_TOKENS'], 1);
  if (maxNumBatchedTokens !== undefined && maxNumBatchedTokens < (maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS)) {
    throw new ConfigError(`serve: --max-num-batched-tokens (${maxNumBatchedTokens}) must be >= --max-num-seqs (${maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS}): every running sequence decodes each step`, 'max-num-batched-tokens');
  }
  const metricsNames = resolveMetricsNames(values['metrics-names'] ?? env['GEMMA_SERVE_METRICS_NAMES']);
  const logPrompts = values['log-prompts'] ?? booleanEnv('log-prompts', env['GEMMA_SERVE_LOG_PROMPTS']);
  const specialTokensInContent = values['special-tokens-in-content'] ?? booleanEnv('special-tokens-in-content', env['GEMMA_SERVE_SPECIAL_TOKENS_IN_CONTENT']);
  const chatTemplate = resolveChatTemplate(values['chat-template'] ?? env['GEMMA_SERVE_CHAT_TEMPLATE']);
  const prefixCaching = !(values['no-prefix-caching'] ?? booleanEnv('no-prefix-caching', env['GEMMA_SERVE_NO_PREFIX_CACHING']));
  const statsInterval = secondsFlag('stats-interval', values['stats-interval'] ?? env['GEMMA_SERVE_STATS_INTERVAL']) ?? DEFAULT_STATS_INTERVAL_SECONDS;
  const shutdownTimeout = secondsFlag('shutdown-timeout', values['shutdown-timeout'] ?? env['GEMMA_SERVE_SHUTDOWN_TIMEOUT']) ?? DEFAULT_SHUTDOWN_TIMEOUT_SECONDS;
  // Tests only (EngineOptions.minStepMs): no flag, and a note in the log when set.
  const minStepMs = testMinStepMs(env['GEMMA_SERVE_TEST_MIN_STEP_MS']);
  const threads = integerFlag('threads', values.threads ?? env['GEMMA_SERVE_THREADS'], 0);
  if (threads !== undefined && threads > availableParallelism()) {
    throw new ConfigError(`serve: --threads ${threads} exceeds this machine's ${availableParallelism()} cores (oversubscribing slows every step)`, 'threads');
  }
  const int4Kernel = choiceFlag('int4-kernel', values['int4-kernel'] ?? env['GEMMA_SERVE_INT4_KERNEL'], INT4_KERNELS) ?? 'auto';
  const attentionKernel = choiceFlag('attention-kernel', values['attention-kernel'] ?? env['GEMMA_SERVE_ATTENTION_KERNEL'], ATTENTION_KERNELS) ?? 'auto';
  const sampler = choiceFlag('sampler', values.sampler ?? env['GEMMA_SERVE_SAMPLER'], SAMPLER_KINDS);
  // Repeatable: the first is the model's name, the rest aliases it also answers to.
  const servedModelNames = values['served-model-name'] ?? splitList(env['GEMMA_SERVE_SERVED_MODEL_NAME']);
  for (const name of servedModelNames) {
    if (!/^[\w.:/@+-]{1,128}$/.test(name)) {
      throw new ConfigError(`serve: --served-model-name must be 1-128 characters of letters, digits and . _ : / @ + -, got ${JSON.stringify(name)}`, 'served-model-name');
    }
  }
  const [servedModelName, ...modelAliases] = servedModelNames;
  const logger = createLogger();
  const dataDir = defaultDataDir();
  const modelDir = await resolveModelDir('serve', 'model', values.model, dataDir, logger);
  // Listen first, load behind it: /health answers at once, /ready and the API say 503
  // (with Retry-After) until the model is in, so probes and clients see the truth.
  const t0 = performance.now();
  // Signals are heard from here on: one during loading stops the export and the model load.
  const stopLoading = new AbortController();
  let stopSignal: ((signal: string) => void) | null = null;
  const stopped = new Promise<string>((res) => { stopSignal = res; });
  const onSignal = (signal: string): void => { stopLoading.abort(); stopSignal?.(signal); };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const loading = Engine.start({ signal: stopLoading.signal, modelDir, device, kvCacheBytes, kvDtype, dataDir, maxNumSeqs, maxWaiting, maxNumBatchedTokens, threads, int4Kernel, attentionKernel, sampler, modelId: servedModelName, modelAliases, specialTokensInContent, chatTemplate, prefixCaching, minStepMs });
  loading.catch(() => undefined); // handled below; the state also records the failure
  const state = new EngineState(loading);
  const metrics = new Metrics({ state, names: metricsNames });
  const app = buildApp({ engine: state, logger, apiKeys, corsOrigins, bodyLimitBytes, metrics, logPrompts });
  if (logPrompts) logger.warn('--log-prompts: request log lines carry prompt and completion text');
  if (minStepMs !== undefined) logger.warn({ minStepMs }, 'GEMMA_SERVE_TEST_MIN_STEP_MS: every step is padded to this many milliseconds (a testing aid: it slows the server)');
  if (apiKeys.length > 0) logger.info({ keys: apiKeys.length }, 'API key authentication is on');
  else if (host === '127.0.0.1' || host === 'localhost' || host === '::1') logger.info('API key authentication is off (no keys configured)');
  else logger.warn({ host }, 'API key authentication is off (no keys configured) and the server listens beyond localhost');
  if (corsOrigins.length > 0) logger.info({ origins: corsOrigins }, 'CORS is on');
  try {
    await app.listen({ host, port });
  } catch (e) {
    await loading.then((engine) => engine.close(), () => undefined);
    throw new ConfigError(`serve: cannot listen on ${host}:${port} (${(e as Error).message})`, 'port');
  }
  let engine: Engine;
  try {
    const first = await Promise.race([loading, stopped]);
    if (typeof first === 'string') {
      logger.info({ signal: first }, 'shutting down before the model finished loading');
      await app.close();
      await loading.then((e) => e.close(), () => undefined);
      return 0;
    }
    engine = first;
  } catch (e) {
    await app.close();
    throw e instanceof GemmaServeError ? e : new EngineError(`cannot load the model: ${(e as Error).message}`);
  } finally {
    if (state.phase !== 'ready') { process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); }
  }
  logger.info({ model: engine.modelId, exportDir: engine.exportDir, device, contextLength: engine.contextLength, maxNumSeqs: maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS, maxRunning: engine.maxRunning, int4Kernel: engine.int4Swapped > 0 ? `gemma-serve (${engine.int4Swapped} matmuls)` : 'onnxruntime', attentionKernel: engine.attentionFused > 0 ? `gemma-serve (${engine.attentionFused} layers)` : 'onnxruntime', maxWaiting: maxWaiting ?? DEFAULT_MAX_WAITING, prefixCaching: engine.prefixCaching, seconds: Math.round(performance.now() - t0) / 1000 }, 'model loaded: ready');
  if (prefixCaching && !engine.prefixCaching) logger.warn('prefix caching is off: the device-resident slot runner (a gqa export) keeps one cache slot per sequence and cannot share blocks; serve a paged export to reuse prompt prefixes');
  const stopStats = statsInterval > 0 ? startStatsLog(logger, state, metrics.totals, { intervalMs: statsInterval * 1000 }) : () => undefined;
  const signal = await stopped;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  // A second signal ends the grace period at once.
  const cutNow = (): void => state.cutOff();
  process.on('SIGINT', cutNow);
  process.on('SIGTERM', cutNow);
  logger.info({ signal, inFlight: engine.inFlight, shutdownTimeoutSeconds: shutdownTimeout }, 'draining: new requests get 503; waiting for those in flight');
  const { cut } = await drain(app, state, shutdownTimeout * 1000);
  stopStats();
  logger.info({ cut }, cut > 0 ? 'drained: requests still running were ended with server_shutdown' : 'drained: every request finished');
  await engine.close();
  process.off('SIGINT', cutNow);
  process.off('SIGTERM', cutNow);
  return 0;
}

/** Where resolveModelDir reports what it does (a pino logger fits). */
export interface ModelDirLog {
  info(obj: { dir: string }, msg: string): void;
  warn(obj: { dir: string }, msg: string): void;
}

/**
 * The model directory to load: the flag's value, else GEMMA_SERVE_MODEL, else the default
 * random-weight tiny model (generated once into `<dataDir>/default-model`, with a warning).
 * A given directory that does not exist is a ConfigError naming `command` and `--flag`.
 * The checkpoint writer is build-time code: it is loaded (dynamic import) only to generate.
 */
export async function resolveModelDir(command: string, flag: string, value: string | undefined, dataDir: string, log: ModelDirLog): Promise<string> {
  const modelDir = value ?? process.env['GEMMA_SERVE_MODEL'];
  if (modelDir !== undefined && modelDir !== '') {
    if (!existsSync(modelDir)) throw new ConfigError(`${command}: model directory ${modelDir} does not exist`, flag);
    return modelDir;
  }
  const dir = join(dataDir, 'default-model');
  if (!existsSync(join(dir, 'config.json'))) {
    log.info({ dir }, 'no model configured: generating a random-weight tiny model');
    const { makeRandomCheckpoint } = await import('../checkpoint/make-random.ts');
    makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: dir, set: {} });
  }
  log.warn({ dir },
    `serving a model with RANDOM weights (its output is gibberish): point at a real Gemma 2 checkpoint or export with --${flag} DIR or GEMMA_SERVE_MODEL=DIR`);
  return dir;
}

/** The device flag's value, else GEMMA_SERVE_DEVICE, else cpu; anything but cpu or cuda is a ConfigError. */
export function resolveDevice(command: string, value: string | undefined): 'cpu' | 'cuda' {
  const device = value ?? process.env['GEMMA_SERVE_DEVICE'] ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new ConfigError(`${command}: device must be cpu or cuda, got ${JSON.stringify(device)}`, 'device');
  return device;
}

function splitList(text: string | undefined): string[] {
  return (text ?? '').split(',').map((x) => x.trim()).filter((x) => x !== '');
}

/** Keys from --api-key (repeatable) and --api-key-file, else GEMMA_SERVE_API_KEY(_FILE). */
/** `--chat-template FILE`: read and compiled now, so a bad file exits before anything loads. */
function resolveChatTemplate(file: string | undefined): string | undefined {
  if (file === undefined || file === '') return undefined;
  try {
    loadChatTemplate(null, file);
  } catch (e) {
    throw new ConfigError(`serve: --chat-template: ${(e as Error).message}`, 'chat-template');
  }
  return file;
}

function resolveApiKeys(flagKeys: string[] | undefined, flagFile: string | undefined, env: NodeJS.ProcessEnv): string[] {
  const fromFlags = flagKeys !== undefined || flagFile !== undefined;
  const keys = fromFlags ? [...(flagKeys ?? [])] : splitList(env['GEMMA_SERVE_API_KEY']);
  const file = fromFlags ? flagFile : env['GEMMA_SERVE_API_KEY_FILE'] || undefined;
  for (const k of keys) {
    if (k.trim() === '') throw new ConfigError('serve: --api-key must not be empty', 'api-key');
  }
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new ConfigError(`serve: cannot read API key file ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'api-key-file');
    }
    const fromFile = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '');
    if (fromFile.length === 0) throw new ConfigError(`serve: API key file ${file} holds no keys`, 'api-key-file');
    keys.push(...fromFile);
  }
  return keys.map((k) => k.trim());
}

/** --metrics-names / GEMMA_SERVE_METRICS_NAMES: gemma_serve (default) or vllm. */
function resolveMetricsNames(text: string | undefined): MetricsNames {
  return choiceFlag('metrics-names', text, METRICS_NAMES) ?? 'gemma_serve';
}

/** A flag (or its environment variable) that takes one of `allowed`; undefined when not given. */
function choiceFlag<T extends string>(flag: string, text: string | undefined, allowed: readonly T[]): T | undefined {
  if (text === undefined || text === '') return undefined;
  if (!(allowed as readonly string[]).includes(text)) throw new ConfigError(`serve: --${flag} must be one of ${allowed.join(', ')}, got ${JSON.stringify(text)}`, flag);
  return text as T;
}

/** A boolean environment variable: 1/true/yes/on or 0/false/no/off (or empty). */
function booleanEnv(flag: string, text: string | undefined): boolean {
  const v = (text ?? '').trim().toLowerCase();
  if (['', '0', 'false', 'no', 'off'].includes(v)) return false;
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  throw new ConfigError(`serve: GEMMA_SERVE_${flag.toUpperCase().replace(/-/g, '_')} must be true or false, got ${JSON.stringify(text)}`, flag);
}

/** A duration in seconds (>= 0, fractions allowed) given as a flag or environment variable; undefined when not given. */
function testMinStepMs(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^\d+(\.\d+)?$/.test(text.trim())) throw new ConfigError(`serve: GEMMA_SERVE_TEST_MIN_STEP_MS must be a number of milliseconds >= 0, got ${JSON.stringify(text)}`);
  return Number(text);
}

function secondsFlag(flag: string, text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !Number.isFinite(n)) {
    throw new ConfigError(`serve: --${flag} must be a number of seconds >= 0, got ${JSON.stringify(text)}`, flag);
  }
  return n;
}

/** A byte count given as a flag or environment variable: a positive integer, or absent. */
function positiveBytes(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text)) || Number(text) <= 0) {
    throw new ConfigError(`serve: --${flag} must be a positive number of bytes, got ${JSON.stringify(text)}`, flag);
  }
  return Number(text);
}

/** `--kv-dtype` / GEMMA_SERVE_KV_DTYPE: fp16 or fp32; undefined when not given (the export's own, fp32 for a checkpoint). */
export function resolveKvDtype(text: string | undefined): KvDtype | undefined {
  return choiceFlag('kv-dtype', text, KV_DTYPES);
}

/** An integer flag (or its environment variable) of at least `min`; undefined when not given. */
function integerFlag(flag: string, text: string | undefined, min: number): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^\d+$/.test(text.trim()) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
    throw new ConfigError(`serve: --${flag} must be an integer >= ${min}, got ${JSON.stringify(text)}`, flag);
  }
  return Number(text);
}
