#!/usr/bin/env bash
# Prefill, llama.cpp against gemma-serve on the same host, alternated: each round runs
# `llama-bench -p LENS -n 0 -t 2 -r RUNS` on the Q4_0 GGUF and then `npm run bench:engine --
# EXPORT --prompt LENS --batches none --runs RUNS` on the int4 export, with the 1-minute load
# average before each. Quote the medians over rounds (the host is shared: a run's neighbour
# load moves it by tens of percent).
#
#   bench/llama-cpp/prefill.sh LLAMA_BENCH FILE.gguf EXPORT_DIR [LENS=64,128,512] [ROUNDS=3] [RUNS=3] [extra bench:engine flags]
#
# llama-bench's pp figure is the prompt's batch alone (no sampling); ours is request → first
# token (one step with the last position's logits, a sampled token and the worker round trip).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bin="$1"; gguf="$2"; model="$3"; lens="${4:-64,128,512}"; rounds="${5:-3}"; runs="${6:-3}"
shift $(( $# < 6 ? $# : 6 ))
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r: llama.cpp (load $(cut -d' ' -f1 /proc/loadavg))"
  "$bin" -m "$gguf" -p "$lens" -n 0 -t 2 -r "$runs" -o md 2>/dev/null | grep -E '^\| .*pp[0-9]+' | awk -F'|' '{ print $(NF-2), $(NF-1) }'
  echo "== round $r: gemma-serve (load $(cut -d' ' -f1 /proc/loadavg))"
  npx tsx bench/engine.ts "$model" --prompt "$lens" --batches none --runs "$runs" "$@" 2>/dev/null | grep -E '^ *prefill [0-9]+'
done
