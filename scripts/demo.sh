#!/usr/bin/env bash
# Builds grelay, starts three demo backends and grelay on conf/grelay.yaml,
# serves a web page that calls them through grelay with gRPC-Web, sends real
# gRPC and gRPC-Web calls through it, then keeps running until Ctrl-C.
#   scripts/demo.sh          run, and leave it up for your own calls
#   scripts/demo.sh --once   run the demo calls and stop (used by the tests)
# It refuses to start while something else listens on its ports (another
# demo, say): its calls would reach that one, and share its round robin.
# DEMO_LOGS=dir keeps the logs there (backends, grelay; with --once, grelay's
# /metrics at the end), not in a new temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
once=false
[ "${1:-}" = "--once" ] && once=true

pids=()
cleanup() {
  # grelay (started last) first, so it does not see its backends vanish
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ready() { # pid file: wait until the backend printed the line "ready" (70 s: it may wait out a TIME_WAIT)
  local told=false
  for _ in $(seq 1 700); do
    grep -qx ready "$2" 2>/dev/null && return 0
    if ! $told && grep -q TIME_WAIT "$2" 2>/dev/null; then
      echo "demo: $(grep TIME_WAIT "$2")" >&2
      told=true
    fi
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo: a backend did not start: $(cat "$2")" >&2; return 1
}

admin_address() { # the admin: block's address in the config $1 (flow or block style), or nothing
  awk '/^admin:/ { inb = 1
                   if (match($0, /address: *[^ ,}#]+/)) { s = substr($0, RSTART, RLENGTH); sub(/address: */, "", s); print s; exit }
                   next }
       inb && /^[^ #]/ { exit }
       inb && /^ +address:/ { sub(/^ +address: */, ""); sub(/[ ,}#].*/, ""); print; exit }' "$1"
}
admin=$(admin_address conf/grelay.yaml)

listening() { # host:port: something accepts connections there
  (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}
for addr in 127.0.0.1:8080 127.0.0.1:3000 127.0.0.1:50051 127.0.0.1:50052 127.0.0.1:50053 $admin; do
  if listening "$addr"; then
    echo "demo: $addr is taken (another demo or grelay still running?); stop it first" >&2
    exit 1
  fi
done

scripts/install-deps.sh --demo
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRELAY_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
scripts/npm-install.sh demo/web
demo/web/node_modules/.bin/esbuild demo/web/app.js --bundle --format=iife --log-level=warning \
  --outfile=demo/web/bundle.js

http_get() { # url: the body of a 200 answer, or fail
  /usr/bin/python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$1" 2>/dev/null
}

logs=${DEMO_LOGS:-$(mktemp -d)}
mkdir -p "$logs"
backends=()
for i in 1 2 3; do
  /usr/bin/python3 demo/greeter_server.py "backend-$i" "127.0.0.1:5005$i" >"$logs/backend-$i.log" 2>&1 &
  pids+=($!)
  backends+=($!)
done
for i in 1 2 3; do wait_ready "${backends[$((i - 1))]}" "$logs/backend-$i.log"; done

/usr/bin/python3 -m http.server --bind 127.0.0.1 3000 --directory demo/web >"$logs/web.log" 2>&1 &
pids+=($!)
build/grelay --config conf/grelay.yaml 2> >(tee "$logs/grelay.log" >&2) &
grelay=$!
pids+=($grelay)
# Ready means this grelay: it is alive, and it says so (/ready), or it accepts.
ready=false
for _ in $(seq 1 100); do
  if ! kill -0 "$grelay" 2>/dev/null; then
    wait "$grelay" && rc=0 || rc=$?
    echo "demo: grelay exited with status $rc before it was ready (log: $logs/grelay.log)" >&2
    exit 1
  fi
  if [ -n "$admin" ]; then http_get "http://$admin/ready" >/dev/null && ready=true; else listening 127.0.0.1:8080 && ready=true; fi
  $ready && break
  sleep 0.1
done
$ready || { echo "demo: grelay was not ready within 10 s (log: $logs/grelay.log)" >&2; exit 1; }

echo
echo "== grelay listens on 127.0.0.1:8080 (native gRPC and gRPC-Web), backends on 127.0.0.1:50051-50053"
echo "== a gRPC client calling /demo.Greeter through grelay:"
/usr/bin/python3 demo/client.py 127.0.0.1:8080
echo "== the gRPC-Web call the browser page makes (HTTP/1.1, base64 text mode):"
/usr/bin/python3 demo/web_client.py 127.0.0.1:8080
echo
echo "== open http://localhost:3000 in a browser: the page calls the backends through grelay with gRPC-Web"
if [ -n "$admin" ]; then
  echo "== the live view: open http://$admin/ (calls/s, status mix, latency, endpoints; refreshes every second)"
  echo "   metrics for Prometheus: http://$admin/metrics"
fi
echo
if $once; then
  [ -n "$admin" ] && { http_get "http://$admin/metrics" >"$logs/metrics.txt" || true; }
  exit 0
fi
echo "Try it yourself:  /usr/bin/python3 demo/client.py 127.0.0.1:8080 YourName"
echo "             or:  printf '\\0\\0\\0\\0\\3Ada' > /tmp/hello.bin"
echo "                  h2load -n 1000 -c 4 -m 16 -H 'content-type: application/grpc' -H 'te: trailers' \\"
echo "                    -d /tmp/hello.bin http://127.0.0.1:8080/demo.Greeter/SayHello"
echo "Ctrl-C stops grelay, the backends and the page server."
wait "${pids[-1]}"
