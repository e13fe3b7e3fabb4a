#!/usr/bin/env bash
# Pingpong (64 B) against `wharf echo --workers N` for each N given, interleaved round by
# round (N1 N2 ... N1 N2 ...), then the medians: round trips/s and server CPU per round trip.
#
#   benches/workers-pingpong.sh [CONNS] [ROUNDS] [CLIENT_PROCS] [WORKERS...]
#   benches/workers-pingpong.sh 1000 5 1 1 2        # the 2-core comparison
#   benches/workers-pingpong.sh 1000 5 4 1 2 4 8    # on a bigger host
#
# BIN=dir picks the binaries (default target/release).
set -euo pipefail
conns=${1:-1000}
rounds=${2:-5}
procs=${3:-1}
shift 3 2>/dev/null || shift $#
workers=("${@:-1 2}")
[ $# -eq 0 ] && workers=(1 2)
bin=${BIN:-target/release}
out=$(mktemp)
port=${PORT:-7400}
trap 'rm -f "$out"' EXIT

for round in $(seq "$rounds"); do
  for n in "${workers[@]}"; do
    port=$((port + 1))
    log=$(mktemp)
    "$bin/wharf" echo --workers "$n" --listen "127.0.0.1:$port" --max-conns 19990 2>"$log" &
    server=$!
    for _ in $(seq 300); do grep -q "listening on" "$log" && break; sleep 0.05; done
    "$bin/wharf-bench" pingpong --addr "127.0.0.1:$port" -c "$conns" --size 64 -d 5 \
      --procs "$procs" --src 127.0.0.1-127.0.0.8 --server-pid "$server" --json \
      --label "workers=$n" --scenario "pingpong c=$conns" >> "$out" || true
    kill -TERM "$server"; wait "$server" || true
    rm -f "$log"
    echo "round $round workers=$n done" >&2
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {}
for r in runs:
    by.setdefault(r["label"], []).append(r)
base = None
for label, rs in by.items():
    rate = statistics.median(r["round_trips_per_s"] for r in rs)
    cpu = statistics.median(r["server_cpu_ns_per_op"] or 0 for r in rs)
    errors = sum(r["errors"] for r in rs)
    base = base or rate
    rates = ", ".join(f"{r['round_trips_per_s']:.0f}" for r in rs)
    print(f"{label:12} median {rate:9.0f} rt/s ({rate / base:.2f}x)  server CPU {cpu:6.0f} ns/rt  errors {errors}  runs: {rates}")
PY
