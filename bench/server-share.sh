#!/usr/bin/env bash
# The share of wall time a running gemma-serve spends in model forward passes under load, read
# from its gemma_serve:model_forward_seconds_total counter; 1 - share is the server's own work
# (HTTP, scheduling, sampling, detokenizing, messages) and idling.
#
#   bench/server-share.sh [URL=http://127.0.0.1:8000] [extra `gemma-serve bench` flags, e.g. --temperature 0]
#
# Runs `gemma-serve bench` at concurrency 8 for 80 s (16-token prompts, 32-96 new tokens, ignore_eos,
# so requests do not move in lockstep) and reads the counters at 20 s and 70 s, in steady state.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
url="${1:-http://127.0.0.1:8000}"; shift || true
out="$(mktemp -d)"
node bin/gemma-serve.js bench --url "$url" --concurrency 8 --prompt-tokens 16 --max-tokens 32:96 --ignore-eos \
  --duration 80 --warmup 0 --out "$out/report.json" --chart "$out/chart.svg" "$@" > "$out/bench.log" 2>&1 &
bench=$!
read_counters() {
  curl -s "$url/metrics" | awk -v t="$(date +%s.%N)" '
    /^gemma_serve:model_forward_seconds_total/ { f = $2 }
    /^gemma_serve:iteration_tokens_total_count/ { n = $2 }
    END { print t, f, n }'
}
sleep 20; a="$(read_counters)"; sleep 50; b="$(read_counters)"
wait "$bench"
echo "$a $b" | awk '{ dw = $4 - $1; df = $5 - $2; ds = $6 - $3;
  printf "wall %.2f s, forward %.2f s (%.1f%%), steps %d: %.1f ms a step, %.1f ms of it outside the model\n", dw, df, 100 * df / dw, ds, 1000 * dw / ds, 1000 * (dw - df) / ds }'
grep -E '^ +8 ' "$out/bench.log" || tail -3 "$out/bench.log"
echo "report: $out/report.json"
