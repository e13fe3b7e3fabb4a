#!/usr/bin/env bash
# benches/compare-tls.sh: wharf's TLS termination side by side with the idiomatic tokio +
# tokio-rustls echo server (benches/tokio-tls-echo), measured by wharf-bench --tls.
#
# Both servers get the same certificate (ECDSA P-256, made at run time with openssl under the
# output directory; no key is ever committed), both use rustls with the ring provider, and the
# client offers one TLS version (1.3 unless asked), so both negotiate the same. As in
# compare.sh, the servers run one at a time, interleaved (wharf tokio, wharf tokio, ...) over
# several rounds, each in a fresh process pinned to CPU 0 while the client is pinned to CPU 1;
# the table quotes the median of the rounds and the wharf/tokio ratio.
#
# Scenarios: pingpong 64 B at 100 and 1000 connections (handshakes done before the clock
# starts), connect with 1 and 16 in flight (each connection a full handshake: the client
# resumes no session, so connections/s are full handshakes/s), and hold (idle TLS sessions:
# the server's RSS per connection).
#
#   benches/compare-tls.sh                      # full run (5 rounds of 3 s: about 4 minutes)
#   benches/compare-tls.sh --rounds 2 --duration 2
#   benches/compare-tls.sh --servers tokio      # the tokio half only
#   benches/compare-tls.sh --update-docs        # also rewrite the TLS table in docs/BENCHMARKS.md
#
# Options (or the environment variables in brackets):
#   --rounds N         rounds per scenario [ROUNDS, default 5]
#   --duration SECS    measured seconds per pingpong/connect run [DURATION, default 3]
#   --hold-conns N     idle TLS connections of the hold scenario [HOLD_CONNS, default 10000]
#   --tls-version V    the version the client offers, 1.2 or 1.3 [TLS_VERSION, default 1.3]
#   --servers LIST     which servers, of "wharf tokio" [SERVERS, default both]
#   --out DIR          where runs.jsonl, table.md and the certificates go
#                      [OUT, default $CARGO_TARGET_DIR or target, then /compare-tls]
#   --update-docs      copy the table and the machine into docs/BENCHMARKS.md (both servers only)
# A wharf without --tls-listen (before issue 7) is left out, with a message.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

rounds="${ROUNDS:-5}"
duration="${DURATION:-3}"
hold_conns="${HOLD_CONNS:-10000}"
tls_version="${TLS_VERSION:-1.3}"
servers_asked="${SERVERS:-wharf tokio}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${OUT:-$target_dir/compare-tls}"
update_docs=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --hold-conns) hold_conns="$2"; shift 2 ;;
    --tls-version) tls_version="$2"; shift 2 ;;
    --servers) servers_asked="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --update-docs) update_docs=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-tls.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$tls_version" in
  1.2|1.3) ;;
  *) echo "compare-tls.sh: --tls-version must be 1.2 or 1.3" >&2; exit 2 ;;
esac

say() { printf 'compare-tls.sh: %s\n' "$*" >&2; }

# ---- build ---------------------------------------------------------------------------------
say "building wharf and wharf-bench (release)"
cargo build --release --quiet --bin wharf --bin wharf-bench
say "building the tokio TLS peer (release, its own crate)"
CARGO_TARGET_DIR="$target_dir/tokio-tls-echo" \
  cargo build --release --quiet --manifest-path benches/tokio-tls-echo/Cargo.toml
wharf="$target_dir/release/wharf"
bench="$target_dir/release/wharf-bench"
tokio_tls_echo="$target_dir/tokio-tls-echo/release/tokio-tls-echo"

# The help text is read whole before it is searched: `grep -q` quitting early would break the
# pipe under wharf and, with pipefail, fail the test.
wharf_help="$("$wharf" echo --help)"
servers=()
for name in $servers_asked; do
  case "$name" in
    wharf)
      if grep -q -- '--tls-listen' <<<"$wharf_help"; then
        servers+=(wharf)
      else
        say "this wharf has no --tls-listen yet (issue 7): leaving wharf out"
      fi ;;
    tokio) servers+=(tokio) ;;
    *) say "unknown server '$name' (wharf, tokio)"; exit 2 ;;
  esac
done
if [ "${#servers[@]}" -eq 0 ]; then
  say "no server to measure"; exit 1
fi
if [ "$update_docs" -eq 1 ] && [ "${servers[*]}" != "wharf tokio" ]; then
  say "--update-docs needs both servers (have: ${servers[*]})"; exit 1
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
ulimit -n "$(ulimit -Hn)"
say "open files limit: $(ulimit -n)"
wharf_flags=()
if grep -q -- '--max-conns' <<<"$wharf_help"; then
  wharf_flags+=(--max-conns "$(ulimit -n)")
fi

mkdir -p "$out"
runs="$out/runs.jsonl"
: >"$runs"

# ---- certificates --------------------------------------------------------------------------
# A CA and a server certificate it signed, for 127.0.0.1 and localhost: ECDSA P-256, the kind
# a TLS server is given today (an RSA-2048 signature would cost each handshake ~1 ms more).
pki="$out/pki"
rm -rf "$pki"
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=compare-tls CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=localhost" -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=CA:FALSE' \
  'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >"$pki/server.ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 2 -extfile "$pki/server.ext" -out "$pki/server.pem" 2>/dev/null
cert="$pki/server.pem" key="$pki/server.key" ca="$pki/ca.pem"
say "certificates in $pki (ECDSA P-256, signed by a CA made for this run)"

# ---- servers -------------------------------------------------------------------------------
# Ports below the ephemeral range, a new one per server start, so no run meets the previous
# run's TIME_WAIT connections.
next_port=22000
server_pid=""
server_addr=""

start_server() {
  local name="$1" port=$((next_port++)) log="$out/server.log"
  : >"$log"
  case "$name" in
    wharf) RUST_LOG=warn "${server_cpu[@]}" "$wharf" echo --tls-listen "127.0.0.1:$port" \
             --tls-cert "$cert" --tls-key "$key" "${wharf_flags[@]}" 2>"$log" & ;;
    tokio) "${server_cpu[@]}" "$tokio_tls_echo" --listen "127.0.0.1:$port" \
             --cert "$cert" --key "$key" 2>"$log" & ;;
  esac
  server_pid=$!
  server_addr="127.0.0.1:$port"
  # Wait for the TLS listener's `listening on ... tls)` line (at most 10 s), not a fixed time.
  for _ in $(seq 200); do
    grep -q "listening on 127.0.0.1:$port .*tls" "$log" && return 0
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

tls=(--tls --tls-ca "$ca" --tls-version "$tls_version")

# One wharf-bench run against a fresh server; its JSON line goes to runs.jsonl. Exit status 3
# (the run counted errors) still yields a report, and the table shows the errors.
measure() {
  local scenario="$1" name="$2"; shift 2
  start_server "$name"
  local status=0
  "${client_cpu[@]}" "$bench" "$@" "${tls[@]}" --addr "$server_addr" \
    --server-pid "$server_pid" --label "$name" --scenario "$scenario" --json >>"$runs" \
    || status=$?
  stop_server
  if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    say "run failed ($status): $scenario, $name"
  fi
}

src=(--src 127.0.0.1-127.0.0.16)
scenarios=(
  "TLS $tls_version pingpong 64 B x 100|pingpong -c 100 -s 64 -d $duration"
  "TLS $tls_version pingpong 64 B x 1000|pingpong -c 1000 -s 64 -d $duration"
  "TLS $tls_version connect (full handshakes), 1 client|connect -c 1 -d $duration ${src[*]}"
  "TLS $tls_version connect (full handshakes), 16 in flight|connect -c 16 -d $duration ${src[*]}"
  "TLS $tls_version hold $hold_conns idle|hold -c $hold_conns -d 1 ${src[*]}"
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

# ---- table ---------------------------------------------------------------------------------
ratio=()
[ "${#servers[@]}" -eq 2 ] && ratio=(--ratio wharf/tokio)
"$bench" summary "$runs" "${ratio[@]}" >"$out/table.md"
{
  lock=benches/tokio-tls-echo/Cargo.lock
  version_of() { grep -A1 "^name = \"$1\"\$" "$lock" | sed -n 's/^version = "\(.*\)"/\1/p'; }
  cpu_model="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  hypervisor="$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1)"
  memory_gib="$(free -g | awk '/^Mem:/ {print $2}')"
  echo "- machine: $cpu_model, $(nproc) CPUs${hypervisor:+ (virtual machine, $hypervisor)}, ${memory_gib} GiB memory"
  echo "- kernel: $(uname -sr); open files limit $(ulimit -n)"
  echo "- toolchain: $(rustc --version); tokio $(version_of tokio), tokio-rustls $(version_of tokio-rustls), rustls $(version_of rustls) (ring) in the peer"
  echo "- TLS: $tls_version offered by the client; ECDSA P-256 server certificate made by openssl for the run; no session resumption"
  echo "- method: $rounds rounds of each scenario, servers interleaved, ${duration} s per pingpong and connect run; medians; server pinned to CPU 0, client to CPU 1; measured $(date -u +%Y-%m-%d)"
} >"$out/machine.md"

echo
cat "$out/machine.md"
echo
cat "$out/table.md"
echo
say "done in $((SECONDS - started)) s: $out/table.md, $out/runs.jsonl"

# ---- docs ----------------------------------------------------------------------------------
if [ "$update_docs" -eq 1 ]; then
  {
    cat "$out/machine.md"
    echo
    cat "$out/table.md"
  } >"$out/section.md"
  awk -v section="$out/section.md" '
    /<!-- compare-tls:begin -->/ { print; while ((getline line < section) > 0) print line; skip = 1; next }
    /<!-- compare-tls:end -->/ { skip = 0 }
    !skip { print }
  ' docs/BENCHMARKS.md >"$out/BENCHMARKS.md"
  cp "$out/BENCHMARKS.md" docs/BENCHMARKS.md
  say "updated the TLS table in docs/BENCHMARKS.md"
fi
