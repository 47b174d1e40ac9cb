#!/usr/bin/env bash
# User-space instructions per call through grelay, counted by callgrind
# (the method of docs/performance.md, top section).
#
# For each scenario CxM (h2load connections x streams per connection): the C
# echo backend on a free loopback port, and grelay with one worker under
# `valgrind --tool=callgrind` in front of it, once for N=20000 and once for
# N=40000 unary calls of 100 B (gRPC-framed, the same headers and body as
# bench/bench.py). Per call = (Ir(40000) - Ir(20000)) / 20000, so start-up,
# shutdown and the first connections cancel out.
#
#   bench/callgrind.sh [--build DIR] [--scenarios 4x16,16x64] [--access-log] [--go-backend BIN] [--proxy nghttpx]
#                      [--size BYTES] [--calls N1,N2] [--keep]
#
#   --build DIR       Release build with grelay and echo_backend (default build-rel):
#                       cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DGRELAY_TESTS=OFF
#                       cmake --build build-rel --target grelay echo_backend
#   --scenarios LIST  comma-separated CxM (default 4x16,16x64)
#   --access-log      grelay writes the JSON access log to a file in the temporary
#                     directory (its writer thread's instructions count too)
#   --go-backend BIN  the grpc-go echo backend (bench/gobackend/build.sh) instead of
#                     echo_backend, with GOMAXPROCS=1 as bench.py starts it
#   --proxy nghttpx   count nghttpx instead of grelay, started as bench.py starts it
#                     (one worker, the fair windows, no access log); its worker
#                     process is traced too and the counts of both are added
#   --size BYTES      the message (default 100; 16384 for the 16 KiB scenarios)
#   --calls N1,N2     the two runs' calls (default 20000,40000)
#   --keep            keep the temporary directory (callgrind.out.* files for
#                     callgrind_annotate or bench/callgrind_split.py, configs, logs)
#                     and print its path
#
# Prints one line per scenario on stdout, e.g. "4x16: 28312 instructions per call";
# the raw totals go to stderr. Needs valgrind, h2load (nghttp2-client), python3.
# Instruction counts do not depend on machine load; wall time does (a few
# minutes per scenario).
set -euo pipefail
cd "$(dirname "$0")/.."

build="build-rel"
scenarios=4x16,16x64
keep=0
alog=""
gobackend=""
proxy=grelay
size=100
N1=20000
N2=40000
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    --scenarios) scenarios=${2:?--scenarios needs a list}; shift 2 ;;
    --keep) keep=1; shift ;;
    --access-log) alog=1; shift ;;
    --go-backend) gobackend=${2:?--go-backend needs a binary}; shift 2 ;;
    --proxy) proxy=${2:?--proxy needs grelay or nghttpx}; shift 2 ;;
    --size) size=${2:?--size needs a number of bytes}; shift 2 ;;
    --calls) IFS=, read -r N1 N2 <<<"${2:?--calls needs N1,N2}"; shift 2 ;;
    -h|--help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--build DIR] [--scenarios 4x16,16x64] [--access-log] [--go-backend BIN] [--proxy nghttpx] [--size BYTES] [--calls N1,N2] [--keep]" >&2; exit 2 ;;
  esac
done

grelay=$build/grelay
backend=${gobackend:-$build/echo_backend}
[ -z "$gobackend" ] || export GOMAXPROCS=1  # only the backend is a Go program
for f in "$grelay" "$backend"; do
  [ -x "$f" ] || { echo "$f not found: build it first (see $0 --help)" >&2; exit 1; }
done
for t in valgrind h2load; do
  command -v "$t" >/dev/null || bash bench/install-peers.sh # Debian's valgrind and nghttp2-client, once
done
for t in valgrind h2load python3 timeout; do
  command -v "$t" >/dev/null || { echo "$t not found" >&2; exit 1; }
done
IFS=, read -r -a scens <<<"$scenarios"
for sc in "${scens[@]}"; do
  [[ $sc =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad scenario '$sc' (want CxM, e.g. 4x16)" >&2; exit 2; }
done

# Like bench.py: grelay on CPU 0, the backend and h2load on CPU 1 (when there are two).
pin_proxy=() pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_proxy=(taskset -c 0) pin_load=(taskset -c 1)
fi

tmp=$(mktemp -d /tmp/grelay-callgrind.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do  # up to 5 s for them to go, then SIGKILL
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ "$keep" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget() {  # drop a PID that has been reaped from the cleanup list
  local p keep_pids=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep_pids+=("$p"); done
  pids=("${keep_pids[@]}")
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The gRPC-framed 100-byte body of bench.py: flag 0, length 100, 100 x 'x'.
body=$tmp/body-$size
python3 -c 'import sys; n = int(sys.argv[1]); sys.stdout.buffer.write(b"\x00" + n.to_bytes(4, "big") + b"x" * n)' "$size" >"$body"

# wait_port PORT PID SECONDS: until a connection to 127.0.0.1:PORT succeeds,
# like bench.py's wait_port. Refused attempts cost the proxy nothing, so every
# run gets exactly one accepted (and at once closed) probe connection.
wait_port() {
  local port=$1 pid=$2 deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}

# stop PID SECONDS: SIGTERM, wait up to SECONDS for it to exit (callgrind
# writes its file on the way out), SIGKILL after that. Returns its status.
stop() {
  local pid=$1 deadline=$((SECONDS + $2)) rc=0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "PID $pid did not exit within $2 s of SIGTERM; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" || rc=$?
  forget "$pid"
  return $rc
}

# start_backend: echo_backend on a free loopback port (sets bport, bpid).
start_backend() {
  for _ in 1 2 3; do  # a port can be taken between free_port and bind
    bport=$(free_port)
    : >"$tmp/backend.out"
    "${pin_load[@]}" "$backend" 127.0.0.1 "$bport" >"$tmp/backend.out" 2>"$tmp/backend.err" &
    bpid=$!
    pids+=("$bpid")
    for _ in $(seq 100); do  # up to 10 s for "ready"
      grep -q '^ready$' "$tmp/backend.out" && return 0
      kill -0 "$bpid" 2>/dev/null || break
      sleep 0.1
    done
    stop "$bpid" 5 || true
  done
  echo "echo_backend did not start: $(cat "$tmp/backend.err")" >&2
  return 1
}

# run_grelay C M N: one grelay run under callgrind, N calls; sets ir to its total Ir.
# (Not called in $(...): the traps and the PID list must stay in this shell.)
run_grelay() {
  local c=$1 m=$2 n=$3 tag="$1x$2-$3" port cfg out gpid hpid rc=0 ok t0
  port=$(free_port)
  cfg=$tmp/grelay-$tag.yaml
  out=$tmp/callgrind.out.$tag
  # The config bench.py writes for one worker (JSON is YAML).
  local access=""
  [ -n "$alog" ] && access="\"access_log\": {\"path\": \"$tmp/access-$tag.log\"},"
  cat >"$cfg" <<EOF
{"workers": 1, "log_level": "warn", $access
 "listeners": [{"name": "l", "address": "127.0.0.1:$port", "virtual_hosts": [
   {"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "cluster": "c"}]}]}],
 "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:$bport"}]}]}
EOF
  t0=$SECONDS
  local cmd=("$grelay" --config "$cfg") trace=()
  if [ "$proxy" = nghttpx ]; then  # bench.py's t_nghttpx, fair settings
    cmd=(nghttpx --conf=/dev/null --workers=1 --single-thread "--frontend=127.0.0.1,$port;no-tls"
      "--backend=127.0.0.1,$bport;;proto=h2" --no-ocsp --errorlog-file=/dev/null
      --frontend-http2-window-size=65536 --frontend-http2-connection-window-size=1048576
      --backend-http2-window-size=65536)
    trace=(--trace-children=yes)
    out=$out.%p
  fi
  "${pin_proxy[@]}" valgrind --tool=callgrind "${trace[@]}" --callgrind-out-file="$out" \
    --log-file="$tmp/valgrind-$tag.log" "${cmd[@]}" 2>"$tmp/grelay-$tag.err" &
  gpid=$!
  pids+=("$gpid")
  if ! wait_port "$port" "$gpid" 120; then
    echo "grelay ($tag) never accepted on 127.0.0.1:$port:" >&2
    cat "$tmp/grelay-$tag.err" "$tmp/valgrind-$tag.log" >&2
    return 1
  fi
  # h2load's own command line as in bench.py, with -n instead of -D.
  timeout 900 "${pin_load[@]}" h2load -n "$n" -c "$c" -m "$m" -d "$body" \
    -H "content-type: application/grpc" -H "te: trailers" \
    "http://127.0.0.1:$port/bench.Echo/Unary" >"$tmp/h2load-$tag.out" 2>&1 &
  hpid=$!
  pids+=("$hpid")
  wait "$hpid" || rc=$?
  forget "$hpid"
  ok=$(awk '/^status codes:/ {print $3}' "$tmp/h2load-$tag.out")
  if [ "$rc" != 0 ] || [ "${ok:-0}" != "$n" ]; then
    echo "h2load ($tag) exit $rc, ${ok:-0} of $n calls answered 2xx:" >&2
    cat "$tmp/h2load-$tag.out" >&2
    return 1
  fi
  rc=0
  stop "$gpid" 300 || rc=$?
  [ "$proxy" = nghttpx ] && [ "$rc" = 143 ] && rc=0 # nghttpx ends on SIGTERM by the signal (SIGQUIT is its drain)
  if [ "$rc" != 0 ]; then
    echo "grelay ($tag) exited with $rc:" >&2
    cat "$tmp/grelay-$tag.err" >&2
    return 1
  fi
  # "summary:" is what callgrind_annotate prints as PROGRAM TOTALS; "totals:"
  # (the fallback) is the same plus the few instructions of the final dump.
  # Per file (nghttpx: one per process), summed.
  ir=$(for f in ${out%.%p}*; do
    awk '/^summary:/ {s = $2} /^totals:/ {t = $2} END {print (s != "" ? s : t)}' "$f"
  done 2>/dev/null | awk '{t += $1} END {if (NR) print t}' || true)
  if ! [[ $ir =~ ^[0-9]+$ ]]; then
    echo "no total in $out" >&2
    return 1
  fi
  echo "  $tag: Ir $ir ($((SECONDS - t0)) s)" >&2
}

for sc in "${scens[@]}"; do
  c=${sc%x*} m=${sc#*x}
  start_backend
  run_grelay "$c" "$m" "$N1"
  ir1=$ir
  run_grelay "$c" "$m" "$N2"
  ir2=$ir
  stop "$bpid" 10 || true
  awk -v sc="$sc" -v a="$ir1" -v b="$ir2" -v n="$((N2 - N1))" \
    'BEGIN { printf "%s: %.0f instructions per call\n", sc, (b - a) / n }'
done
