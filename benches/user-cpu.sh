#!/usr/bin/env bash
# Server user-mode CPU per pingpong round trip, measured with perf's cpu-clock:u samples at
# 20 kHz. The /proc/PID/stat figures of compare.sh come from the 250 Hz tick accounting: a
# server that spends 4 % of its time in user space gets about 30 user ticks in a 3 s run, too
# few to tell 140 ns from 170 ns. Eighty times more samples can.
#
#   benches/user-cpu.sh                     # 1000 connections, 3 rounds, wharf tokio c
#   CONNS=10000 ROUNDS=5 benches/user-cpu.sh
#
# Needs perf, taskset, and the binaries compare.sh builds (run it once first).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-1000}; ROUNDS=${ROUNDS:-3}; SERVERS=${SERVERS:-"wharf tokio c"}
target=${CARGO_TARGET_DIR:-target}
port=7900
for round in $(seq 1 "$ROUNDS"); do
  for server in $SERVERS; do
    port=$((port + 1))
    case $server in
      wharf) taskset -c 0 "$target/release/wharf" echo --listen "127.0.0.1:$port" --max-conns 20000 2>/dev/null & ;;
      tokio) taskset -c 0 "$target/tokio-echo/release/tokio-echo" --listen "127.0.0.1:$port" 2>/dev/null & ;;
      c) taskset -c 0 "$target/epoll-echo" "$port" 2>/dev/null & ;;
    esac
    pid=$!
    for _ in $(seq 1 50); do ss -ltn "sport = :$port" | grep -q LISTEN && break; sleep 0.1; done
    taskset -c 1 "$target/release/wharf-bench" pingpong --addr "127.0.0.1:$port" -c "$CONNS" \
      -s 64 -d 7 --src 127.0.0.1-127.0.0.16 --json > "$target/user-cpu.json" 2>/dev/null &
    client=$!
    sleep 3 # connections up and running
    perf record -q -e cpu-clock:u -F 20000 -p "$pid" -o "$target/user-cpu.data" -- sleep 4 >/dev/null 2>&1
    wait "$client" || true
    samples=$(perf report -i "$target/user-cpu.data" --stdio 2>/dev/null \
      | sed -n 's/^# Samples: \([0-9.]*\)\(K\?\).*/\1 \2/p' | awk '{print ($2=="K") ? $1*1000 : $1}')
    rate=$(sed -n 's/.*"round_trips_per_s":\([0-9.]*\).*/\1/p' "$target/user-cpu.json")
    awk -v s="$server" -v r="$round" -v n="$samples" -v rate="$rate" \
      'BEGIN { printf "%s round %d: %.0f user ns per round trip (%.0f round trips/s)\n", s, r, n / 20000 / (rate * 4) * 1e9, rate }'
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  done
done
