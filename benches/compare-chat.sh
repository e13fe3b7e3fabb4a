#!/usr/bin/env bash
# benches/compare-chat.sh: push fan-out side by side: `wharf chat`, the idiomatic tokio chat
# room (benches/tokio-chat, on one thread) and `ncat --chat`, measured by `wharf-bench chat`.
#
# The client is open loop: its clients send timestamped lines at a total rate (lines/s over
# all of them, on a fixed schedule, whether or not anything comes back) and read everything,
# so a server that falls behind shows it as deliveries missing and latency growing, not as a
# slower client. As in compare.sh, the servers run one at a time, interleaved (wharf tokio
# ncat, wharf tokio ncat, ...) over several rounds, each in a fresh process on a fresh port,
# pinned to CPU 0 while the client is pinned to CPU 1; the table quotes the median of the
# rounds, with the server's CPU time per delivery read from /proc/PID/stat.
#
# Scenarios are clients x total lines/s, those of issue 13: 100x1000, 100x20000, 100x50000,
# 1000x5000 and 10000x500. ncat serves with select() and stalls joining many clients (it
# does not get 1,000 into the room), so it runs only with fewer than 1000 clients; the table
# shows "—" for the rest.
#
#   benches/compare-chat.sh                          # full run (3 rounds of 4 s: 39 runs, 5 minutes or more)
#   benches/compare-chat.sh --rounds 1 --duration 2 --scenarios "100x1000 1000x5000"
#   benches/compare-chat.sh --only tokio,ncat        # leave wharf out
#   benches/compare-chat.sh --update-docs            # also rewrite the chat table in docs/BENCHMARKS.md
#
# Options (or the environment variables in brackets):
#   --rounds N         rounds per scenario [ROUNDS, default 3]
#   --duration SECS    seconds each run sends, after every client has joined [DURATION, default 4]
#   --scenarios LIST   CONNSxLINES_PER_S, space- or comma-separated [SCENARIOS, default the five above]
#   --only LIST        which servers, of wharf,tokio,ncat,before [ONLY, default the first three]
#   --before PATH      the wharf binary served as `before` (an earlier build, to compare this
#                      one with: --only wharf,before) [BEFORE]
#   --out DIR          where runs.jsonl and table.md go
#                      [OUT, default $CARGO_TARGET_DIR or target, then /compare-chat]
#   --update-docs      copy the table and the machine into docs/BENCHMARKS.md, between the
#                      compare-chat markers (added before "## TLS" if missing; all servers only)
# ncat comes from the Debian package `ncat`, installed with apt-get when it is missing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# The exact command, for the docs: the arguments as given, shell-quoted.
command_line="benches/compare-chat.sh"
for arg in "$@"; do
  if [[ "$arg" =~ ^[A-Za-z0-9_.,:/=+-]+$ ]]; then command_line+=" $arg"; else command_line+=" '$arg'"; fi
done

rounds="${ROUNDS:-3}"
duration="${DURATION:-4}"
scenarios_asked="${SCENARIOS:-100x1000 100x20000 100x50000 1000x5000 10000x500}"
only="${ONLY:-wharf,tokio,ncat}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${OUT:-$target_dir/compare-chat}"
update_docs=0
before="${BEFORE:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --scenarios) scenarios_asked="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --update-docs) update_docs=1; shift ;;
    --before) before="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-chat.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'compare-chat.sh: %s\n' "$*" >&2; }

if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]] || ! [[ "$duration" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  say "--rounds takes a whole number of at least 1, --duration a number of seconds"; exit 2
fi

scenarios=()
for entry in ${scenarios_asked//,/ }; do
  if ! [[ "$entry" =~ ^[0-9]+x[0-9]+$ ]] || [ "${entry%x*}" -lt 2 ]; then
    say "scenario '$entry' is not CONNSxLINES_PER_S with at least 2 clients (e.g. 100x20000)"; exit 2
  fi
  scenarios+=("$entry")
done
servers=()
for name in wharf before tokio ncat; do
  [[ ",${only// /,}," == *",$name,"* ]] && servers+=("$name")
done
for name in ${only//,/ }; do
  case "$name" in
    wharf|tokio|ncat) ;;
    before) [ -x "$before" ] || { say "server 'before' needs --before PATH (a wharf binary)"; exit 2; } ;;
    *) say "unknown server '$name' (wharf, tokio, ncat, before)"; exit 2 ;;
  esac
done
if [ "${#servers[@]}" -eq 0 ] || [ "${#scenarios[@]}" -eq 0 ]; then
  say "nothing to measure (--only '$only', --scenarios '$scenarios_asked')"; exit 2
fi
if [ "$update_docs" -eq 1 ] && [ "${servers[*]}" != "wharf tokio ncat" ]; then
  say "--update-docs needs all three servers (have: ${servers[*]})"; exit 1
fi
# ncat gets fewer clients than this only: in a trial of 1,000 it had let 588 in when its
# clients' connects began to time out, and then it quit.
ncat_max_conns=1000

# ---- build ---------------------------------------------------------------------------------
bins=(--bin wharf-bench)
[[ " ${servers[*]} " == *" wharf "* ]] && bins+=(--bin wharf)
say "building ${bins[*]//--bin /} (release)"
cargo build --release --quiet "${bins[@]}"
wharf="$target_dir/release/wharf"
bench="$target_dir/release/wharf-bench"
tokio_chat="$target_dir/tokio-chat/release/tokio-chat"
if [[ " ${servers[*]} " == *" tokio "* ]]; then
  say "building the tokio peer (release, its own crate)"
  CARGO_TARGET_DIR="$target_dir/tokio-chat" \
    cargo build --release --quiet --manifest-path benches/tokio-chat/Cargo.toml
fi
if [[ " ${servers[*]} " == *" ncat "* ]] && ! command -v ncat >/dev/null; then
  say "installing ncat (apt-get install ncat)"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ncat >/dev/null
fi
# The open-loop client (issue 13) takes --rate as lines/s over all clients; the one before took
# lines/s per client. The help text is read whole before it is searched: `grep -q` quitting
# early would break the pipe.
bench_help="$("$bench" chat --help)"
if ! grep -qiE 'over all clients|total' <<<"$bench_help"; then
  say "this wharf-bench chat takes --rate per client, not in total: it predates issue 13"; exit 1
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
# Every client is a file on both sides; the soft limit can rise to the hard one unasked.
ulimit -n "$(ulimit -Hn)"
say "open files limit: $(ulimit -n)"
for entry in "${scenarios[@]}"; do
  if [ "${entry%x*}" -gt "$(( $(ulimit -n) - 64 ))" ]; then
    say "$entry: more clients than open files allow ($(ulimit -n)); expect connect errors"
  fi
done
# wharf caps concurrent connections (--max-conns, 10000 by default): the cap goes to the
# open-files limit, so 10,000 clients all get in.
wharf_flags=()
if [[ " ${servers[*]} " == *" wharf "* ]]; then
  wharf_help="$("$wharf" chat --help)"
  if grep -q -- '--max-conns' <<<"$wharf_help"; then
    wharf_flags+=(--max-conns "$(ulimit -n)")
  fi
fi

mkdir -p "$out"
runs="$out/runs.jsonl"
: >"$runs"

# ---- servers -------------------------------------------------------------------------------
# Ports below the ephemeral range, a new one per server start, so no run meets the previous
# run's TIME_WAIT connections.
next_port=23000
server_pid=""
server_addr=""

start_server() {
  local name="$1" port=$((next_port++)) log="$out/server.log"
  : >"$log"
  case "$name" in
    wharf) RUST_LOG=warn "${server_cpu[@]}" "$wharf" chat --listen "127.0.0.1:$port" \
             "${wharf_flags[@]}" 2>"$log" & ;;
    before) RUST_LOG=warn "${server_cpu[@]}" "$before" chat --listen "127.0.0.1:$port" \
             "${wharf_flags[@]}" 2>"$log" & ;;
    tokio) "${server_cpu[@]}" "$tokio_chat" --listen "127.0.0.1:$port" --threads 1 2>"$log" & ;;
    # --max-conns: ncat refuses clients past 100 by default; any room it is given may fill.
    # -v prints `Ncat: Listening on` (and a line per client).
    ncat) "${server_cpu[@]}" ncat -v --chat --max-conns "$ncat_max_conns" \
             --listen 127.0.0.1 "$port" </dev/null >/dev/null 2>"$log" & ;;
  esac
  server_pid=$!
  server_addr="127.0.0.1:$port"
  # Wait for the `listening on` line (at most 10 s), not a fixed time.
  for _ in $(seq 200); do
    grep -qi "listening on" "$log" && return 0
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

# One wharf-bench chat run against a fresh server; its JSON line, tagged with the server and
# the scenario, goes to runs.jsonl. Exit status 3 (the run counted errors: lines undelivered)
# still yields a report. A run that hangs is stopped after the longest a join may take.
measure() {
  local scenario="$1" name="$2" conns="${1%x*}" rate="${1#*x}"
  local client=() report="" status=0
  # Many clients from one source address would spend its ephemeral ports; spread them.
  [ "$conns" -ge 1000 ] && client+=(--src 127.0.0.1-127.0.0.16)
  # ncat listens with a backlog of 10, and a burst of connects overflows it into resets; it
  # then quits on the first accepted connection already reset (`getpeername ... failed`).
  # Joining is not measured, so its clients connect a few at a time.
  [ "$name" = ncat ] && client+=(--join-concurrency 8)
  start_server "$name"
  report="$("${client_cpu[@]}" timeout -k 5 $((${duration%.*} + 120)) "$bench" chat \
    --addr "$server_addr" -c "$conns" --rate "$rate" -d "$duration" "${client[@]}" \
    --server-pid "$server_pid" --json)" || status=$?
  stop_server
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    say "run timed out: $scenario, $name"
  elif [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    say "run failed ($status): $scenario, $name"
  fi
  grep '^{' <<<"$report" | tail -1 | python3 -c '
import json, sys
for line in sys.stdin:
    run = json.loads(line)
    run.update(label=sys.argv[1], scenario=sys.argv[2])
    print(json.dumps(run))
' "$name" "$scenario" >>"$runs" || true
}

runs_of() { # how many runs scenario $1 makes per round
  local n=0 name
  for name in "${servers[@]}"; do
    [ "$name" = ncat ] && [ "${1%x*}" -ge "$ncat_max_conns" ] && continue
    n=$((n + 1))
  done
  echo "$n"
}

started=$SECONDS
total=0
for entry in "${scenarios[@]}"; do total=$((total + rounds * $(runs_of "$entry"))); done
done_runs=0
for entry in "${scenarios[@]}"; do
  for round in $(seq "$rounds"); do
    for name in "${servers[@]}"; do
      if [ "$name" = ncat ] && [ "${entry%x*}" -ge "$ncat_max_conns" ]; then
        [ "$round" -eq 1 ] && say "$entry: ncat left out (it cannot take ${entry%x*} clients)"
        continue
      fi
      done_runs=$((done_runs + 1))
      say "[$done_runs/$total] $entry (clients x lines/s), round $round, $name"
      measure "$entry" "$name"
    done
  done
done

# ---- table ---------------------------------------------------------------------------------
# Medians of the rounds, by python3: one block of rows per scenario, a column per server, and
# what issue 13 asks of wharf beside them, with whether this run met it.
python3 - "$runs" "${servers[*]}" "${scenarios[*]}" "$rounds" >"$out/table.md" <<'PYTHON'
import json, statistics, sys

runs_path, servers, scenarios, rounds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])
runs = [json.loads(line) for line in open(runs_path) if line.strip()]

# Issue 13's targets for wharf: least fraction delivered and at least the fractions of these
# servers; p99 at most this many ms and at most these servers' (ncat's over 10); CPU per
# delivery at most this share of tokio's.
TARGETS = {
    "100x1000": dict(p99_ms=0.5),
    "100x20000": dict(p99_ms=1, p99_le=["tokio"]),
    "100x50000": dict(frac_ge=["ncat", "tokio"], p99_ms=2, p99_tenth_of="ncat"),
    "1000x5000": dict(p99_ms=10, p99_le=["tokio"], cpu_share_of_tokio=0.5),
    "10000x500": dict(p99_ms=250, p99_le=["tokio"]),
}
MIN_FRACTION = 0.98

def median(runs, key):
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None

def rate(v):
    return "—" if v is None else f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} k/s"

def percent(v):
    return "—" if v is None else f"{v * 100:.2f}%"

def latency(us):
    if us is None:
        return "—"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1e3:.2f} ms" if us < 1e6 else f"{us / 1e6:.2f} s"

def ns(v):
    return "—" if v is None else f"{v:.0f}"

def met(checks):
    if not checks:
        return ""
    if any(ok is False for ok in checks):
        return "**no**"
    return "yes" if all(ok is True for ok in checks) else "untested (a peer did not run)"

print("| scenario | metric | " + " | ".join(servers) + " | target for wharf | met |")
print("|---|---|" + "---:|" * len(servers) + "---|---|")
for scenario in scenarios:
    conns, lines = (int(x) for x in scenario.split("x"))
    fig = {}
    for server in servers:
        mine = [r for r in runs if r.get("scenario") == scenario and r.get("label") == server]
        if mine:
            fig[server] = dict(n=len(mine), delivered=median(mine, "delivered_deliveries_per_s"),
                               frac=median(mine, "delivered_fraction"), p99=median(mine, "p99_us"),
                               cpu=median(mine, "server_cpu_ns_per_delivery"))
    get = lambda server, key: fig.get(server, {}).get(key)
    t = TARGETS.get(scenario)
    wharf = fig.get("wharf")

    def check(ok, *needed):  # None when a figure it needs is missing
        return None if any(v is None for v in needed) else ok()

    frac_checks, p99_checks, cpu_checks = [], [], []
    frac_target = p99_target = cpu_target = "—"
    if t is not None and "wharf" in servers:
        w_frac, w_p99, w_cpu = get("wharf", "frac"), get("wharf", "p99"), get("wharf", "cpu")
        frac_target = f"≥ {MIN_FRACTION:.0%}"
        frac_checks.append(check(lambda: w_frac >= MIN_FRACTION, w_frac))
        for peer in t.get("frac_ge", []):
            frac_target += f", ≥ {peer}"
            frac_checks.append(check(lambda: w_frac >= get(peer, "frac"), w_frac, get(peer, "frac")))
        p99_target = f"≤ {t['p99_ms']:g} ms"
        p99_checks.append(check(lambda: w_p99 <= t["p99_ms"] * 1000, w_p99))
        for peer in t.get("p99_le", []):
            p99_target += f", ≤ {peer}"
            p99_checks.append(check(lambda: w_p99 <= get(peer, "p99"), w_p99, get(peer, "p99")))
        if "p99_tenth_of" in t:
            peer = t["p99_tenth_of"]
            p99_target += f", ≤ {peer} / 10"
            p99_checks.append(check(lambda: w_p99 <= get(peer, "p99") / 10, w_p99, get(peer, "p99")))
        if "cpu_share_of_tokio" in t:
            cpu_target = f"≤ {t['cpu_share_of_tokio']:g} × tokio"
            cpu_checks.append(check(lambda: w_cpu <= t["cpu_share_of_tokio"] * get("tokio", "cpu"),
                                    w_cpu, get("tokio", "cpu")))

    counts = {fig[s]["n"] for s in fig}
    n = f"{min(counts)}–{max(counts)}" if len(counts) > 1 else str(counts.pop()) if counts else "0"
    title = f"{conns:,} clients × {lines:,} lines/s ({rate((conns - 1) * lines)} offered, {n} of {rounds} rounds)"
    cells = lambda key, fmt: " | ".join(fmt(get(s, key)) for s in servers)
    print(f"| {title} | deliveries/s | {cells('delivered', rate)} | | |")
    print(f"|  | delivered | {cells('frac', percent)} | {frac_target} | {met(frac_checks)} |")
    print(f"|  | p99 fan-out latency | {cells('p99', latency)} | {p99_target} | {met(p99_checks)} |")
    print(f"|  | server CPU ns / delivery | {cells('cpu', ns)} | {cpu_target} | {met(cpu_checks)} |")
PYTHON
{
  version_of() { grep -A1 "^name = \"$1\"\$" benches/tokio-chat/Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p'; }
  cpu_model="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  hypervisor="$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1)"
  memory_gib="$(free -g | awk '/^Mem:/ {print $2}')"
  ncat_version="$(ncat --version 2>&1 | sed -n 's/^Ncat: Version \([^ ]*\).*/\1/p' || true)"
  echo "- machine: $cpu_model, $(nproc) CPUs${hypervisor:+ (virtual machine, $hypervisor)}, ${memory_gib} GiB memory"
  echo "- kernel: $(uname -sr); open files limit $(ulimit -n)"
  described=()
  for name in "${servers[@]}"; do
    case "$name" in
      wharf) described+=("wharf: \`wharf chat${wharf_flags[*]:+ ${wharf_flags[*]}}\`, defaults otherwise") ;;
      tokio) described+=("tokio: \`tokio-chat --threads 1\` (tokio $(version_of tokio), $(rustc --version | cut -d' ' -f1-2))") ;;
      ncat) described+=("ncat: \`ncat --chat --max-conns $ncat_max_conns\`${ncat_version:+ (Ncat $ncat_version)}, clients joining 8 at a time, below $ncat_max_conns clients only (— above)") ;;
    esac
  done
  echo "- servers: $(printf '%s; ' "${described[@]}" | sed 's/; $//')"
  echo "- method: \`wharf-bench chat\`, open loop: the lines/s are over all clients together, each line goes to the other clients - 1, so offered deliveries/s = lines/s × (clients - 1); ${duration} s of sending, then lines not delivered by the end of the client's drain count as undelivered; $rounds rounds, servers interleaved, each in a fresh process; medians; server pinned to CPU 0, client to CPU 1; measured $(date -u +%Y-%m-%d)"
  echo "- command: \`$command_line\`"
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
  docs=docs/BENCHMARKS.md
  # First run: give the table a section of its own, before the TLS one (else at the end).
  if ! grep -q '<!-- compare-chat:begin -->' "$docs"; then
    printf '%s\n' "## Chat fan-out: wharf, tokio and ncat" "" \
      "\`benches/compare-chat.sh --update-docs\` rewrites what is between the markers." "" \
      "<!-- compare-chat:begin -->" "<!-- compare-chat:end -->" "" >"$out/new-section.md"
    awk -v section="$out/new-section.md" '
      /^## TLS$/ && !done { while ((getline line < section) > 0) print line; done = 1 }
      { print }
      END { if (!done) { print ""; while ((getline line < section) > 0) print line } }
    ' "$docs" >"$out/BENCHMARKS.md"
    cp "$out/BENCHMARKS.md" "$docs"
  fi
  awk -v section="$out/section.md" '
    /<!-- compare-chat:begin -->/ { print; while ((getline line < section) > 0) print line; skip = 1; next }
    /<!-- compare-chat:end -->/ { skip = 0 }
    !skip { print }
  ' "$docs" >"$out/BENCHMARKS.md"
  cp "$out/BENCHMARKS.md" "$docs"
  say "updated the chat table in $docs"
fi
