#!/usr/bin/env bash
# The server with the sampler graph against the JS sampler (`--sampler graph|js`), alternated in
# one run: for each round and sampler, start `gemma-serve serve` on MODEL (any model; the issue-17
# measurement uses a tiny random checkpoint with Gemma's 256,000-token vocabulary, made by
# `gemma-serve make-random --shape tiny --set vocab_size=256000 --set max_position_embeddings=2048`),
# run `gemma-serve bench --concurrency C --temperature T` (16-token prompts, $MAX_TOKENS new tokens, default 32:96,
# ignore_eos) for DURATION seconds, and print its summary line with the forward passes' share
# of the wall time (gemma_serve:model_forward_seconds_total over the run).
#
#   bench/sampler-server.sh MODEL [C=64] [T=1] [DURATION=40] [ROUNDS=2]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model="$1"; conc="${2:-64}"; temp="${3:-1}"; duration="${4:-40}"; rounds="${5:-2}"
run=0
out="$(mktemp -d)"
forward() { curl -s "$url/metrics" | awk '/^gemma_serve:model_forward_seconds_total/ { print $2 }'; }
for round in $(seq 1 "$rounds"); do
  for sampler in js graph; do
    # A port per server: one still draining never answers for the next.
    port=$((8765 + run)); url="http://127.0.0.1:$port"; run=$((run + 1))
    node --import tsx src/cli.ts serve --model "$model" --port "$port" --max-num-seqs "$conc" --sampler "$sampler" > "$out/serve-$sampler-$round.log" 2>&1 &
    server=$!
    until curl -sf "$url/ready" > /dev/null; do kill -0 "$server" || { tail -3 "$out/serve-$sampler-$round.log"; exit 1; }; sleep 1; done
    t0=$(date +%s.%N); f0=$(forward)
    node --import tsx src/cli.ts bench --url "$url" --concurrency "$conc" --temperature "$temp" --prompt-tokens 16 --max-tokens "${MAX_TOKENS:-32:96}" \
      --ignore-eos --duration "$duration" --warmup 0 > "$out/bench-$sampler-$round.log" 2>&1 || true
    t1=$(date +%s.%N); f1=$(forward)
    kill "$server" && wait "$server" || true
    line="$(grep -E "^ +$conc " "$out/bench-$sampler-$round.log" || tail -1 "$out/bench-$sampler-$round.log")"
    share="$(echo "$t0 $t1 $f0 $f1" | awk '{ printf "%.0f%%", 100 * ($4 - $3) / ($2 - $1) }')"
    echo "round $round sampler $sampler: forward share $share | $line"
  done
done
head -3 "$out/bench-graph-1.log" | grep -v '^$' || true
echo "logs: $out"
