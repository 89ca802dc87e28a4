#!/usr/bin/env bash
# Prefix caching side by side (issue 19's measurement): gemma-serve with its prefix cache, llama-server
# with its default flags (its prompt cache on), and gemma-serve with --no-prefix-caching, one after
# the other on fresh ports, each under the same two `gemma-serve bench` workloads:
#   shared prefix: REQUESTS requests one at a time, a shared 2,000-token prefix + a distinct 50-token
#                  question, 4 tokens out (COLD requests for the cache-off server: each costs a whole prefill);
#   multi-turn:    one 10-turn chat, 50-token user turns, 32-token replies, each turn resending the history.
# Prints each bench table with the load average; writes the bench JSON and the server logs to OUT.
#
#   bench/llama-cpp/prefix-cache.sh LLAMA_SERVER FILE.gguf MODEL_DIR [OUT=$(mktemp -d)] [REQUESTS=32] [COLD=8]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
llama_server="$1"; gguf="$2"; model="$3"; out="${4:-$(mktemp -d)}"; requests="${5:-32}"; cold="${6:-8}"
mkdir -p "$out"
gs() { node bin/gemma-serve.js "$@"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
ready() { until curl -sf "$1" > /dev/null; do kill -0 "$server" 2> /dev/null || { echo "server exited: see $out"; exit 1; }; sleep 2; done; }
stop() { kill "$server"; wait "$server" 2> /dev/null; sleep 2; }
bench() { # NAME URL FLAGS...
  local name="$1" url="$2"; shift 2
  echo "== $name $(date +%T) load $(load)"
  gs bench --url "$url" "$@" --out "$out/$name.json" 2> "$out/$name.err"
}
SP=(--endpoint completions --workload shared-prefix --shared-prefix-tokens 2000 --prompt-tokens 50 --max-tokens 4 --ignore-eos --concurrency 1 --warmup 1)
MT=(--endpoint chat --workload multi-turn --turns 10 --prompt-tokens 50 --max-tokens 32 --ignore-eos --concurrency 1 --requests 10 --warmup 0)
port=8301
gs serve --model "$model" --port $port > "$out/gs-on.log" 2>&1 & server=$!
ready "http://127.0.0.1:$port/ready"
bench sp-gs-on "http://127.0.0.1:$port" "${SP[@]}" --requests "$requests"; bench mt-gs-on "http://127.0.0.1:$port" "${MT[@]}"; stop
port=8302
"$llama_server" -m "$gguf" -t 2 --port $port > "$out/llama.log" 2>&1 & server=$!
ready "http://127.0.0.1:$port/health"
bench sp-llama "http://127.0.0.1:$port" "${SP[@]}" --requests "$requests"; bench mt-llama "http://127.0.0.1:$port" "${MT[@]}"; stop
port=8303
gs serve --model "$model" --port $port --no-prefix-caching > "$out/gs-off.log" 2>&1 & server=$!
ready "http://127.0.0.1:$port/ready"
bench sp-gs-off "http://127.0.0.1:$port" "${SP[@]}" --requests "$cold"; bench mt-gs-off "http://127.0.0.1:$port" "${MT[@]}"; stop
echo "done $(date +%T) load $(load); files in $out"
