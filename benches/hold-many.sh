#!/usr/bin/env bash
# Holds many idle connections on one host: `wharf echo --workers W` against
# `wharf-bench hold --procs P`, all on loopback, spread over 64 source addresses
# (127.0.0.1-127.0.0.64: each brings its own ~28k ephemeral ports).
#
#   benches/hold-many.sh CONNS WORKERS PROCS [HOLD_SECS]
#   benches/hold-many.sh 50000 3 3            # the 2-core target: 50k over 3 workers
#   benches/hold-many.sh 1000000 60 60        # a million, on a 16-core host
#
# Under an open-files cap of 20000 per process, each worker and each client process must
# stay below ~19990 connections: pick WORKERS and PROCS >= CONNS / 19000. Prints wharf-bench's
# report (server user memory per connection summed over the workers, kernel slab growth per
# connection). BIN=dir picks the binaries (default target/release).
set -euo pipefail
conns=${1:?CONNS}
workers=${2:?WORKERS}
procs=${3:?PROCS}
secs=${4:-10}
bin=${BIN:-target/release}
port=${PORT:-7300}
log=$(mktemp)

"$bin/wharf" echo --workers "$workers" --listen "127.0.0.1:$port" --max-conns 19990 \
  --idle-timeout 0 --backlog 65535 2>"$log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 600); do
  grep -q "listening on" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
grep "listening on" "$log"

"$bin/wharf-bench" hold --addr "127.0.0.1:$port" -c "$conns" --procs "$procs" \
  --src 127.0.0.1-127.0.0.64 --connect-pace 2048 --timeout 60 -d "$secs" \
  --server-pid "$server" --label "wharf --workers $workers"
