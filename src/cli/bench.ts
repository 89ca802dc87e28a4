/**
 * `gemma-serve bench`: the load generator lives in src/cli/bench/ (it ships with the package;
 * bench/ holds the in-process benchmarks, which may import it, never the reverse); this
 * module only registers it as a subcommand.
 */
export { benchCommand as bench } from './bench/cli.ts';
