/**
 * Shared CLI plumbing: the usage text and the error a subcommand throws for a bad
 * command line (the dispatcher prints usage and exits 2 for it).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export const USAGE = `usage: gemma-serve <command> [options]

commands:
  serve        [--model DIR] [--host 127.0.0.1] [--port 8000] [--device cpu|cuda] [--kv-cache-memory BYTES] [--kv-dtype fp32|fp16]
               [--api-key KEY ...] [--api-key-file PATH] [--cors-origin ORIGIN ...] [--max-body-bytes N]
               [--max-num-seqs 64] [--max-waiting 256] [--max-num-batched-tokens 512] [--threads N]
               [--int4-kernel auto|ort|gemma-serve] [--attention-kernel auto|ort] [--sampler graph|js] [--served-model-name NAME] [--metrics-names gemma_serve|vllm] [--log-prompts] [--no-prefix-caching] [--stats-interval 10] [--shutdown-timeout 30]
               [--chat-template FILE]
               OpenAI-compatible HTTP server. DIR: a checkpoint (exported on first use and
               cached) or an export; none: a tiny random-weight model generated once.
               --kv-dtype: a checkpoint is exported with that KV cache dtype; an export must have it.
               --chat-template: a Jinja file or a tokenizer_config.json-like JSON replacing the checkpoint's template.
               No API key configured: open. No CORS origin: CORS off. Body limit: 4 MiB.
               Environment: GEMMA_SERVE_MODEL, _HOST, _PORT, _DEVICE, _KV_CACHE_MEMORY, _KV_DTYPE, _DATA_DIR,
               _API_KEY (comma-separated), _API_KEY_FILE, _CORS_ORIGIN (comma-separated), _MAX_BODY_BYTES,
               _MAX_NUM_SEQS, _MAX_WAITING, _MAX_NUM_BATCHED_TOKENS, _THREADS, _INT4_KERNEL, _SAMPLER, _SERVED_MODEL_NAME, _METRICS_NAMES, _LOG_PROMPTS,
               _NO_PREFIX_CACHING, _STATS_INTERVAL, _SHUTDOWN_TIMEOUT, _CHAT_TEMPLATE. Listens at once; 503 until the model is loaded.
               GET /metrics (Prometheus; vLLM's names with --metrics-names vllm). On SIGTERM:
               drains (ready 503), in-flight requests get up to --shutdown-timeout seconds.
  chat         [--url URL | --model-dir DIR [--device cpu|cuda]] [--model NAME] [--api-key KEY] [--system TEXT]
               [--temperature T] [--max-tokens N] [--seed N] [--top-p P]
               Interactive chat streaming each reply. URL: a running OpenAI-compatible server
               (model: --model, else its first); none: DIR (or GEMMA_SERVE_MODEL, or the tiny
               random model) served in-process on loopback. At the prompt: /reset, /help, /exit.
               Stdin not a terminal: each line is one turn; each reply is printed, then a newline.
               Environment: GEMMA_SERVE_API_KEY (the first of a comma-separated list).
  bench        [--url http://127.0.0.1:8000] [--model NAME] [--api-key KEY] [--endpoint chat|completions]
               [--prompt-tokens 128|A:B] [--max-tokens 128|A:B] [--ignore-eos] [--temperature T]
               [--concurrency 1,2,4,8 | --rate R[,R...] [--max-concurrency 64]]
               [--duration 30 | --requests N] [--warmup 2] [--seed 0] [--timeout 300]
               [--out report.json] [--chart chart.svg]
               [--workload random|shared-prefix|multi-turn] [--shared-prefix-tokens 2000] [--turns 10]
               Load-test any OpenAI-compatible server with streamed requests of random-word
               prompts; per level: requests/s, output tokens/s (aggregate, per stream), TTFT
               p50/p90/p99, inter-token latency p50/p99, errors. Exit 1 if any request failed.
               shared-prefix: one fixed prefix + distinct questions; multi-turn: chats resending
               their history (both measure a prefix cache).
  make-random  --shape tiny|2b|9b|27b --seed N --dtype f32|bf16 --out DIR [--set key=value ...]
               Write a random-weight Gemma 2 checkpoint (Hugging Face layout).
  export       --checkpoint DIR --out DIR [--dtype fp32|fp16] [--weights fp32|int8|int4] [--kv-dtype fp32|fp16]
               [--attention paged|gqa]
               Export a checkpoint to model.onnx + model.onnx.data + manifest.json.
               --weights int8|int4: blockwise (32) symmetric quantization of every matrix.
               --kv-dtype fp16: the graph takes an fp16 KV cache (half the bytes per token).
               --attention gqa: GroupQueryAttention over a per-sequence cache updated in place
               (for the native runner, GPUs); it computes in --dtype (fp16: matrices, attention
               and cache in fp16, norms and residuals fp32), which is also the cache's dtype;
               with --weights int8|int4 it computes in fp16 (fp16 block scales).
  export       --shape tiny|2b|9b|27b --no-weights --out DIR [--weights ...] [--dtype ...] [--kv-dtype ...] [--attention ...]
               Write model.onnx with shape-only initializers (no weight data); prints the
               bytes the weights would take (weightBytes).
  score        --model DIR --ids 2,651,1234 [--top K] [--device cpu|cuda]
               Print JSON log-probabilities of the next token at every position
               (top K, default 5; --top 0 = whole vocabulary). DIR: checkpoint or export.

options:
  -h, --help   Print this help.
`;

/** A command line that cannot be parsed: usage is printed and the exit code is 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A subcommand: gets the arguments after its name, resolves to the exit code. */
export type Command = (argv: string[]) => Promise<number>;

type FlagOptions = NonNullable<ParseArgsConfig['options']>;
type FlagValues<O extends FlagOptions> = ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: true }>>['values'];

/**
 * Parses a subcommand's flags strictly: an unknown flag, a missing value or a stray argument
 * is a UsageError naming the command. `--help` is handled by the dispatcher before this.
 */
export function parseFlags<O extends FlagOptions>(command: string, argv: string[], options: O): FlagValues<O> {
  const { values, positionals } = usageErrors(() => parseArgs({ args: argv, options, strict: true, allowPositionals: true }));
  if (positionals.length > 0) throw new UsageError(`${command}: unexpected argument ${JSON.stringify(positionals[0])}`);
  return values as FlagValues<O>;
}

/** Runs node:util parseArgs, turning its errors (unknown flag, missing value) into UsageErrors. */
export function usageErrors<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) throw new UsageError((e as Error).message);
    throw e;
  }
}
