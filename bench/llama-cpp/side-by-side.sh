#!/usr/bin/env bash
# The 2B int4 export against llama.cpp (the same checkpoint as a pure Q4_0 GGUF), alternated on one
# host (issue 17's measurement). First the engines, ROUNDS times: `llama-bench -p 512 -n 64 -t 2 -r 3`,
# then `bench:engine --prompt 512 --batches 1,8 --steps 32 --runs 3`. Then the servers, SERVER_ROUNDS
# times: `llama-server -t 2 -np 8 -c 4096`, then `gemma-serve serve --max-num-seqs 8`, each fresh,
# under `gemma-serve bench --concurrency 1,8` (16-token prompts, 64 tokens out, greedy, ignore_eos,
# 60 s a level). Every part prints the load average before it; quote medians over rounds.
#
#   bench/llama-cpp/side-by-side.sh LLAMA_BIN_DIR FILE.gguf EXPORT_DIR [ROUNDS=3] [SERVER_ROUNDS=2] [OUT=$(mktemp -d)]
#
# LLAMA_BIN_DIR holds llama-bench and llama-server (bench/llama-cpp/ in docs/BENCHMARKS.md says how
# they were built).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bin="$1"; gguf="$2"; model="$3"; rounds="${4:-3}"; server_rounds="${5:-2}"; out="${6:-$(mktemp -d)}"
mkdir -p "$out"
load() { cut -d' ' -f1-3 /proc/loadavg; }
gs() { node bin/gemma-serve.js "$@"; }
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r llama-bench $(date +%T) load $(load)"
  "$bin/llama-bench" -m "$gguf" -t 2 -p 512 -n 64 -r 3 2> /dev/null | grep -E 'pp512|tg64'
  echo "== round $r bench:engine $(date +%T) load $(load)"
  npx tsx bench/engine.ts "$model" --prompt 512 --batches 1,8 --steps 32 --runs 3 2> /dev/null | grep -E '^ *(prefill|decode batch) '
done
ready() { until curl -sf "$1" > /dev/null; do kill -0 "$server" 2> /dev/null || { echo "server exited: see $out"; exit 1; }; sleep 2; done; }
SB=(--endpoint completions --concurrency 1,8 --prompt-tokens 16 --max-tokens 64 --ignore-eos --temperature 0 --duration 60 --warmup 1)
for ((r = 1; r <= server_rounds; r++)); do
  echo "== round $r llama-server $(date +%T) load $(load)"
  "$bin/llama-server" -m "$gguf" -t 2 -np 8 -c 4096 --port 8202 > "$out/llama-$r.log" 2>&1 & server=$!
  ready http://127.0.0.1:8202/health
  gs bench --url http://127.0.0.1:8202 "${SB[@]}" --out "$out/llama-$r.json" 2> "$out/llama-$r.err"
  kill "$server"; wait "$server" 2> /dev/null; sleep 2
  echo "== round $r gemma-serve $(date +%T) load $(load)"
  # node itself in the background (not the gs function: $! would be a subshell, and killing it
  # would leave the server running into the next round)
  node bin/gemma-serve.js serve --model "$model" --port 8203 --max-num-seqs 8 > "$out/gs-$r.log" 2>&1 & server=$!
  ready http://127.0.0.1:8203/ready
  gs bench --url http://127.0.0.1:8203 "${SB[@]}" --out "$out/gs-$r.json" 2> "$out/gs-$r.err"
  kill "$server"; wait "$server" 2> /dev/null; sleep 2
done
echo "done $(date +%T) load $(load); files in $out"
