/**
 * `gemma-serve bench`: the load generator lives in bench/load/ (with the other benchmarks);
 * this module only registers it as a subcommand.
 */
export { benchCommand as bench } from '../../bench/load/cli.ts';
