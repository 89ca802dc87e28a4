/**
 * The `gemma-serve` command line: `gemma-serve <command> [options]`. Each subcommand lives in
 * its own module under src/cli/ and is registered in `commands` below.
 *
 * Exit codes: 0 success; 1 a GemmaServeError (printed as `error: <message>`, no stack);
 * 2 a bad command line (unknown command or flag; usage is printed).
 */
import { GemmaServeError } from './errors.ts';
import { bench } from './cli/bench.ts';
import { chat } from './cli/chat.ts';
import { exportCommand } from './cli/export.ts';
import { makeRandom } from './cli/make-random.ts';
import { serve } from './cli/serve.ts';
import { score } from './cli/score.ts';
import { UsageError, USAGE, type Command } from './cli/usage.ts';

/**
 * Subcommands by name. REGISTRATION POINT: to add `score`, `serve` or `chat`, create
 * src/cli/<name>.ts exporting an `async (argv: string[]) => number` (exit code), import it
 * above, add it here, and add its line to USAGE in src/cli/usage.ts.
 */
export const commands: Readonly<Record<string, Command>> = {
  'make-random': makeRandom,
  export: exportCommand,
  score,
  serve,
  chat,
  bench,
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

// Run when executed (bin/gemma-serve.js imports this module); importing it from a test does not run it.
if (isEntry()) {
  process.exitCode = await main(process.argv.slice(2));
}

function isEntry(): boolean {
  const script = process.argv[1] ?? '';
  return /(?:^|[\\/])gemma-serve(?:\.js)?$/.test(script) || /[\\/]src[\\/]cli\.ts$/.test(script);
}
