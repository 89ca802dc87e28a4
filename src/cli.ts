/**
 * The `gemma-serve` command line: `gemma-serve <command> [options]`. Each subcommand lives in
 * its own module under src/cli/ and is registered in `commands` below.
 *
 * Exit codes: 0 success; 1 a GemmaServeError (printed as `error: <message>`, no stack);
 * 2 a bad command line (unknown command or flag; usage is printed).
 */
import { GemmaServeError } from './errors.ts';
import { UsageError, USAGE, type Command } from './cli/usage.ts';

/** A command whose module is imported when it runs, so each command loads only what it uses. */
function lazy(load: () => Promise<Command>): Command {
  return async (argv) => (await load())(argv);
}

/**
 * Subcommands by name. REGISTRATION POINT: to add a command, create src/cli/<name>.ts
 * exporting an `async (argv: string[]) => number` (exit code), add it here, and add its line
 * to USAGE in src/cli/usage.ts. Dynamic imports: `serve` must not load the exporter, the
 * checkpoint writer or the load generator (build-time code), and `--help` loads nothing.
 */
export const commands: Readonly<Record<string, Command>> = {
  'make-random': lazy(async () => (await import('./cli/make-random.ts')).makeRandom),
  export: lazy(async () => (await import('./cli/export.ts')).exportCommand),
  score: lazy(async () => (await import('./cli/score.ts')).score),
  serve: lazy(async () => (await import('./cli/serve.ts')).serve),
  chat: lazy(async () => (await import('./cli/chat.ts')).chat),
  bench: lazy(async () => (await import('./cli/bench.ts')).bench),
};

/** Runs the CLI on argv (without node and script); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(USAGE);
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (command === undefined) {
    process.stderr.write(`error: unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    return await command(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof GemmaServeError) {
      process.stderr.write(`error: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

// Run when executed (bin/gemma-serve.js imports this module, or `node dist/cli.js`); importing
// it from a test does not run it.
if (isEntry()) {
  process.exitCode = await main(process.argv.slice(2));
}

function isEntry(): boolean {
  const script = process.argv[1] ?? '';
  return /(?:^|[\\/])gemma-serve(?:\.js)?$/.test(script) || /[\\/](?:src[\\/]cli\.ts|dist[\\/]cli\.js)$/.test(script);
}
