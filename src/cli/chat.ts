/**
 * `gemma-serve chat`: an interactive terminal chat that streams each reply as it is generated.
 * It talks to a running OpenAI-compatible server (`--url`), or starts the engine and the app
 * in-process on a loopback port and talks to that, so both go through the same HTTP path.
 *
 * On a terminal it prompts (`>>> `) and keeps the conversation; Ctrl-C stops a reply, Ctrl-C at
 * an empty prompt or Ctrl-D leaves. With stdin not a terminal, every input line is one user
 * turn and each reply is printed followed by a newline. Per-turn server errors are printed as
 * `error: <message>` on stderr and the turn is left out of the history.
 */
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { Engine } from '../engine/engine.ts';
import { defaultDataDir } from '../engine/resolve-model.ts';
import { ConfigError, GemmaServeError } from '../errors.ts';
import { buildApp } from '../server/app.ts';
import { resolveDevice, resolveModelDir } from './serve.ts';
import { ChatClient, type ChatMessage, type ChatParams, type Fetch, type Sampling } from './sse-client.ts';
import { UsageError, parseFlags } from './usage.ts';

export interface ChatOptions {
  /** The server's root URL (`http://host:port`; a trailing `/v1` is accepted). */
  readonly url: string;
  /** Sent as `Authorization: Bearer KEY`. */
  readonly apiKey?: string | undefined;
  /** The model name to request; default: the first id listed by GET /v1/models. */
  readonly model?: string | undefined;
  /** A system prompt sent first in every request (kept by /reset). */
  readonly system?: string | undefined;
  /** temperature, max_tokens, seed, top_p: sent with every request when given. */
  readonly sampling?: Sampling;
}

/** Where the chat reads and writes; `chat` uses the process's stdio. */
export interface ChatIo {
  readonly input: Readable;
  /** Replies (and, interactively, the prompt). */
  readonly output: Writable;
  /** Errors and notices. */
  readonly errors: Writable;
  /** Prompt, line editing and Ctrl-C handling; default: whether `input` is a TTY. */
  readonly interactive?: boolean;
  readonly fetch?: Fetch;
}

const HELP = `commands:
  /help           this list
  /reset          forget the conversation (the system prompt stays)
  /exit, /quit    leave (also Ctrl-D, or Ctrl-C at an empty prompt)
Ctrl-C during a reply stops it; the stopped turn is not kept.
`;

/** The `chat` subcommand: parses flags, starts a local server when no --url is given, chats on stdio. */
export async function chat(argv: string[]): Promise<number> {
  const values = parseFlags('chat', argv, {
    url: { type: 'string' },
    'model-dir': { type: 'string' },
    device: { type: 'string' },
    model: { type: 'string' },
    'api-key': { type: 'string' },
    system: { type: 'string' },
    temperature: { type: 'string' },
    'max-tokens': { type: 'string' },
    seed: { type: 'string' },
    'top-p': { type: 'string' },
  });
  if (values.url !== undefined && (values['model-dir'] !== undefined || values.device !== undefined)) {
    throw new UsageError('chat: give --url (a running server) or --model-dir/--device (a local one), not both');
  }
  const envKey = (process.env['GEMMA_SERVE_API_KEY'] ?? '').split(',').map((k) => k.trim()).find((k) => k !== '');
  const opts = {
    apiKey: values['api-key'] ?? envKey,
    model: values.model,
    system: values.system,
    sampling: {
      temperature: numberFlag('temperature', values.temperature, 0, 2, false),
      max_tokens: numberFlag('max-tokens', values['max-tokens'], 1, Number.MAX_SAFE_INTEGER, true),
      seed: numberFlag('seed', values.seed, 0, Number.MAX_SAFE_INTEGER, true),
      top_p: numberFlag('top-p', values['top-p'], 0, 1, false),
    },
  };
  const io: ChatIo = { input: process.stdin, output: process.stdout, errors: process.stderr };
  if (values.url !== undefined) return runChat({ ...opts, url: values.url }, io);
  const local = await startLocalServer(values['model-dir'], values.device, io.errors);
  try {
    return await runChat({ ...opts, url: local.url }, io);
  } finally {
    await local.close();
  }
}

/**
 * Chats until the input ends or the user leaves. Resolves to the exit code: 0, or 1 (after
 * printing `error: ...`) when chatting cannot start (server unreachable, no model to name).
 */
export async function runChat(opts: ChatOptions, io: ChatIo): Promise<number> {
  const interactive = io.interactive ?? (io.input as { isTTY?: boolean }).isTTY === true;
  const client = new ChatClient(opts.url, opts.apiKey, io.fetch);
  let model: string;
  try {
    model = await pickModel(client, opts.model);
  } catch (e) {
    if (!(e instanceof GemmaServeError)) throw e;
    io.errors.write(`error: chat: ${e.message}\n`);
    return 1;
  }
  const params: ChatParams = { ...opts.sampling, model };
  const system: ChatMessage[] = opts.system === undefined ? [] : [{ role: 'system', content: opts.system }];
  let history: ChatMessage[] = [];
  if (interactive) io.errors.write(`chatting with ${model} at ${client.baseUrl}; /help lists the commands\n`);

  const rl = createInterface({ input: io.input, output: interactive ? io.output : undefined, terminal: interactive, prompt: '>>> ' });
  let reply: AbortController | null = null;
  const onInterrupt = (): void => {
    if (reply !== null) reply.abort();
    else if (rl.line === '') rl.close();
    else {
      rl.write(null, { ctrl: true, name: 'e' });
      rl.write(null, { ctrl: true, name: 'u' });
    }
  };
  rl.on('SIGINT', onInterrupt);
  // Without raw mode (a terminal on stdin, stdout redirected) Ctrl-C is a signal.
  if (interactive) process.on('SIGINT', onInterrupt);
  let closed = false;
  rl.on('close', () => { closed = true; });
  const prompt = (): void => { if (interactive && !closed) rl.prompt(); };
  try {
    prompt();
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '/exit' || line === '/quit') break;
      if (line === '/reset') {
        history = [];
        if (interactive) io.errors.write('(conversation cleared)\n');
      } else if (line === '/help') {
        io.output.write(HELP);
      } else if (/^\/\S+$/.test(line)) {
        io.errors.write(`error: unknown command ${line} (/help lists them)\n`);
      } else if (line !== '') {
        const user: ChatMessage = { role: 'user', content: line };
        reply = new AbortController();
        const content = await streamTurn(client, params, [...system, ...history, user], reply.signal, io, interactive);
        reply = null;
        if (content !== null) history = [...history, user, { role: 'assistant', content }];
      }
      prompt();
    }
    if (interactive && closed) io.output.write('\n'); // left by Ctrl-C or Ctrl-D: end the prompt's line
  } finally {
    process.off('SIGINT', onInterrupt);
    rl.close();
  }
  return 0;
}

/** One turn: streams the reply to the output; resolves to its text, or null when it failed or was stopped. */
async function streamTurn(client: ChatClient, params: ChatParams, messages: ChatMessage[], signal: AbortSignal, io: ChatIo, interactive: boolean): Promise<string | null> {
  let printed = false;
  try {
    const { content } = await client.streamChat(params, messages, (text) => { printed = true; io.output.write(text); }, signal);
    io.output.write(interactive ? '\n\n' : '\n');
    return content;
  } catch (e) {
    if (printed || signal.aborted) io.output.write('\n');
    if (signal.aborted) io.errors.write('(reply stopped)\n');
    else io.errors.write(`error: ${(e as Error).message}\n`);
    return null;
  }
}

/** The model to request: the one given, else the server's first. Only an unreachable server fails when one is given. */
async function pickModel(client: ChatClient, given: string | undefined): Promise<string> {
  let models: string[];
  try {
    models = await client.listModels();
  } catch (e) {
    if (given !== undefined && !(e instanceof ConfigError)) return given; // a server without GET /v1/models
    throw e;
  }
  const model = given ?? models[0];
  if (model === undefined) throw new ConfigError(`${client.baseUrl}/v1/models lists no model; name one with --model`, 'model');
  return model;
}

/** Loads the model and serves it on 127.0.0.1 (ephemeral port), logging progress to `log`. */
async function startLocalServer(modelDirFlag: string | undefined, deviceFlag: string | undefined, log: Writable): Promise<{ url: string; close(): Promise<void> }> {
  const device = resolveDevice('chat', deviceFlag);
  const dataDir = defaultDataDir();
  const note = (level: string) => (obj: { dir: string }, msg: string): void => { log.write(`${level}${msg} (${obj.dir})\n`); };
  const modelDir = await resolveModelDir('chat', 'model-dir', modelDirFlag, dataDir, { info: note(''), warn: note('warning: ') });
  log.write(`loading ${modelDir} on ${device}...\n`);
  const t0 = performance.now();
  const engine = await Engine.start({ modelDir, device, dataDir });
  log.write(`loaded ${engine.modelId} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  const app = buildApp({ engine });
  try {
    await app.listen({ host: '127.0.0.1', port: 0 });
  } catch (e) {
    await engine.close();
    throw e;
  }
  return {
    url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
    async close() {
      await app.close();
      await engine.close();
    },
  };
}

/** A numeric flag within [min, max] (an integer when `integer`), or undefined when absent. */
function numberFlag(flag: string, text: string | undefined, min: number, max: number, integer: boolean): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    const what = integer ? `an integer from ${min}` : `a number from ${min} to ${max}`;
    throw new ConfigError(`chat: --${flag} must be ${what}, got ${JSON.stringify(text)}`, flag);
  }
  return n;
}
