#!/usr/bin/env bash
# benches/compare.sh: wharf side by side with the idiomatic tokio echo server
# (benches/tokio-echo) and a C edge-triggered epoll echo server (shared/anchors/epoll-echo.c,
# the "physical limit" anchor), measured by wharf-bench.
#
# For each scenario the servers run one at a time, interleaved (wharf tokio c, wharf tokio c,
# ...) over several rounds, each in a fresh process pinned to CPU 0 while the client is pinned
# to CPU 1 (when there are two CPUs). The table quotes the median of the rounds and the
# wharf/tokio ratio, with each server's user and system CPU time per operation read from
# /proc/PID/stat over the measured interval.
#
#   benches/compare.sh                       # full run (5 rounds of 3 s: about 7 minutes)
#   benches/compare.sh --rounds 2 --duration 2
#   benches/compare.sh --update-docs         # also rewrite the table in docs/BENCHMARKS.md
#   benches/compare.sh --before /tmp/old/wharf  # this build against an earlier one
#
# Options (or the environment variables in brackets):
#   --rounds N         rounds per scenario [ROUNDS, default 5]
#   --duration SECS    measured seconds per pingpong/connect run [DURATION, default 3]
#   --sweep-duration S seconds per point of the sweep plot [SWEEP_DURATION, default DURATION]
#   --out DIR          where runs.jsonl, table.md, the sweeps and sweep.svg go
#                      [OUT, default $CARGO_TARGET_DIR or target, then /compare]
#   --update-docs      copy the table, the machine and the plot into docs/BENCHMARKS.md and
#                      docs/benchmarks/sweep.svg
#   --before PATH      measure this wharf against the wharf binary at PATH (an earlier build,
#                      as server `before`), interleaved, instead of against its peers: the
#                      table's ratio is wharf/before, and there is no sweep [BEFORE]
# The C anchor is built from $EPOLL_ECHO_SRC (default ../shared/anchors/epoll-echo.c beside
# the repository); without it the comparison runs wharf and tokio only.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

rounds="${ROUNDS:-5}"
duration="${DURATION:-3}"
sweep_duration="${SWEEP_DURATION:-}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${OUT:-$target_dir/compare}"
update_docs=0
before="${BEFORE:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --sweep-duration) sweep_duration="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --update-docs) update_docs=1; shift ;;
    --before) before="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
sweep_duration="${sweep_duration:-$duration}"
anchor_src="${EPOLL_ECHO_SRC:-$root/../shared/anchors/epoll-echo.c}"

say() { printf 'compare.sh: %s\n' "$*" >&2; }

# ---- build ---------------------------------------------------------------------------------
say "building wharf and wharf-bench (release)"
cargo build --release --quiet --bin wharf --bin wharf-bench
say "building the tokio peer (release, its own crate)"
CARGO_TARGET_DIR="$target_dir/tokio-echo" \
  cargo build --release --quiet --manifest-path benches/tokio-echo/Cargo.toml
wharf="$target_dir/release/wharf"
bench="$target_dir/release/wharf-bench"
tokio_echo="$target_dir/tokio-echo/release/tokio-echo"
servers=(wharf tokio)
ratio=wharf/tokio
if [ -n "$before" ]; then
  [ -x "$before" ] || { say "--before $before: not an executable"; exit 2; }
  [ "$update_docs" -eq 0 ] || { say "--update-docs compares with the peers: drop --before"; exit 2; }
  servers=(wharf before)
  ratio=wharf/before
elif [ -f "$anchor_src" ]; then
  say "building the C anchor from $anchor_src"
  cc -O2 -o "$target_dir/epoll-echo" "$anchor_src"
  servers+=(c)
else
  say "no C anchor at $anchor_src (set EPOLL_ECHO_SRC): comparing wharf and tokio only"
fi

# ---- machine -------------------------------------------------------------------------------
# Server and client on different CPUs, so neither steals the other's time slices.
server_cpu=() client_cpu=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 0)
  client_cpu=(taskset -c 1)
else
  say "fewer than two CPUs (or no taskset): server and client are not pinned"
fi
# Every connection is a file on both sides; the soft limit can rise to the hard one unasked.
ulimit -n "$(ulimit -Hn)"
say "open files limit: $(ulimit -n)"
# wharf caps concurrent connections (--max-conns, 10000 by default) and answers the rest with
# `ERR server full`; the hold scenarios need the cap at the open-files limit instead.
wharf_flags=()
if "$wharf" echo --help | grep -q -- '--max-conns'; then
  wharf_flags+=(--max-conns "$(ulimit -n)")
fi

mkdir -p "$out"
runs="$out/runs.jsonl"
: >"$runs"

# ---- servers -------------------------------------------------------------------------------
# Ports below the ephemeral range, a new one per server start, so no run meets the previous
# run's TIME_WAIT connections.
next_port=21000
server_pid=""
server_addr=""

start_server() {
  local name="$1" port=$((next_port++)) log="$out/server.log"
  : >"$log"
  case "$name" in
    wharf) RUST_LOG=warn "${server_cpu[@]}" "$wharf" echo --listen "127.0.0.1:$port" \
             "${wharf_flags[@]}" 2>"$log" & ;;
    before) RUST_LOG=warn "${server_cpu[@]}" "$before" echo --listen "127.0.0.1:$port" \
             "${wharf_flags[@]}" 2>"$log" & ;;
    tokio) "${server_cpu[@]}" "$tokio_echo" --listen "127.0.0.1:$port" 2>"$log" & ;;
    c) "${server_cpu[@]}" "$target_dir/epoll-echo" "$port" 2>"$log" & ;;
  esac
  server_pid=$!
  server_addr="127.0.0.1:$port"
  # Wait for the `listening on` line (at most 10 s), not a fixed time.
  for _ in $(seq 200); do
    grep -q "listening on" "$log" && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  say "$name did not start:"; cat "$log" >&2
  return 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap 'stop_server' EXIT

# One wharf-bench run against a fresh server; its JSON line goes to runs.jsonl. Exit status 3
# (the run counted errors) still yields a report, and the table shows the errors.
measure() {
  local scenario="$1" name="$2"; shift 2
  start_server "$name"
  local status=0
  "${client_cpu[@]}" "$bench" "$@" --addr "$server_addr" --server-pid "$server_pid" \
    --label "$name" --scenario "$scenario" --json >>"$runs" || status=$?
  stop_server
  if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    say "run failed ($status): $scenario, $name"
  fi
}

src=(--src 127.0.0.1-127.0.0.16)
scenarios=(
  "pingpong 64 B x 1|pingpong -c 1 -s 64 -d $duration"
  "pingpong 64 B x 100|pingpong -c 100 -s 64 -d $duration"
  "pingpong 64 B x 1000|pingpong -c 1000 -s 64 -d $duration"
  "pingpong 64 B x 10000|pingpong -c 10000 -s 64 -d $duration ${src[*]}"
  "pingpong 4 KiB x 100|pingpong -c 100 -s 4096 -d $duration"
  "hold 10000 idle|hold -c 10000 -d 1 ${src[*]}"
  "hold 19000 idle|hold -c 19000 -d 1 ${src[*]}"
  "connect, 16 in flight|connect -c 16 -d $duration ${src[*]}"
)

started=$SECONDS
total=$(( ${#scenarios[@]} * rounds * ${#servers[@]} ))
done_runs=0
for entry in "${scenarios[@]}"; do
  scenario="${entry%%|*}"
  read -r -a args <<<"${entry#*|}"
  for round in $(seq "$rounds"); do
    for name in "${servers[@]}"; do
      done_runs=$((done_runs + 1))
      say "[$done_runs/$total] $scenario, round $round, $name"
      measure "$scenario" "$name" "${args[@]}"
    done
  done
done

# ---- sweep plot ----------------------------------------------------------------------------
sweep_inputs=()
swept=("${servers[@]}")
[ -z "$before" ] || swept=()
for name in "${swept[@]}"; do
  say "sweep 1..10000 connections, $name"
  start_server "$name"
  "${client_cpu[@]}" "$bench" sweep --addr "$server_addr" --server-pid "$server_pid" \
    --conns 1,10,100,1000,10000 -d "$sweep_duration" "${src[@]}" --label "$name" \
    --out "$out/sweep-$name" >"$out/sweep-$name.txt" || say "sweep failed: $name"
  stop_server
  sweep_inputs+=("$out/sweep-$name/results.json")
done
if [ "${#sweep_inputs[@]}" -gt 0 ]; then
  "$bench" plot --out "$out/sweep.svg" --title "pingpong 64 B: round trips/s and p99 latency" \
    "${sweep_inputs[@]}"
fi

# ---- table ---------------------------------------------------------------------------------
"$bench" summary "$runs" --ratio "$ratio" >"$out/table.md"
{
  cpu_model="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  hypervisor="$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1)"
  memory_gib="$(free -g | awk '/^Mem:/ {print $2}')"
  ports="$(tr -s '\t ' '-' </proc/sys/net/ipv4/ip_local_port_range)"
  tokio_version="$(grep -A1 '^name = "tokio"$' benches/tokio-echo/Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
  echo "- machine: $cpu_model, $(nproc) CPUs${hypervisor:+ (virtual machine, $hypervisor)}, ${memory_gib} GiB memory"
  echo "- kernel: $(uname -sr); open files limit $(ulimit -n); ephemeral ports $ports"
  echo "- toolchain: $(rustc --version); tokio $tokio_version; C anchor built with $(cc --version | head -1)"
  echo "- method: $rounds rounds of each scenario, servers interleaved, ${duration} s per pingpong and connect run; medians; server pinned to CPU 0, client to CPU 1; measured $(date -u +%Y-%m-%d)"
} >"$out/machine.md"

echo
cat "$out/machine.md"
echo
cat "$out/table.md"
echo
say "done in $((SECONDS - started)) s: $out/table.md, $out/sweep.svg, $out/runs.jsonl"

# ---- docs ----------------------------------------------------------------------------------
if [ "$update_docs" -eq 1 ]; then
  mkdir -p docs/benchmarks
  cp "$out/sweep.svg" docs/benchmarks/sweep.svg
  {
    cat "$out/machine.md"
    echo
    cat "$out/table.md"
  } >"$out/section.md"
  awk -v section="$out/section.md" '
    /<!-- compare:begin -->/ { print; while ((getline line < section) > 0) print line; skip = 1; next }
    /<!-- compare:end -->/ { skip = 0 }
    !skip { print }
  ' docs/BENCHMARKS.md >"$out/BENCHMARKS.md"
  cp "$out/BENCHMARKS.md" docs/BENCHMARKS.md
  say "updated docs/BENCHMARKS.md and docs/benchmarks/sweep.svg"
fi
