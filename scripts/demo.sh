#!/usr/bin/env bash
# Builds grelay, starts three demo backends and grelay on conf/grelay.yaml,
# serves a web page that calls them through grelay with gRPC-Web, sends real
# gRPC and gRPC-Web calls through it, then keeps running until Ctrl-C.
#   scripts/demo.sh          run, and leave it up for your own calls
#   scripts/demo.sh --once   run the demo calls and stop (used by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
once=false
[ "${1:-}" = "--once" ] && once=true

scripts/install-deps.sh --demo
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRELAY_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
scripts/npm-install.sh demo/web
demo/web/node_modules/.bin/esbuild demo/web/app.js --bundle --format=iife --log-level=warning \
  --outfile=demo/web/bundle.js

pids=()
cleanup() {
  # grelay (started last) first, so it does not see its backends vanish
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ready() { # file: wait until the process printed "ready"
  for _ in $(seq 1 100); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "backend did not start: $(cat "$1")" >&2; return 1
}

admin_address() { # the admin: block's address in the config $1 (flow or block style), or nothing
  awk '/^admin:/ { inb = 1
                   if (match($0, /address: *[^ ,}#]+/)) { s = substr($0, RSTART, RLENGTH); sub(/address: */, "", s); print s; exit }
                   next }
       inb && /^[^ #]/ { exit }
       inb && /^ +address:/ { sub(/^ +address: */, ""); sub(/[ ,}#].*/, ""); print; exit }' "$1"
}
admin=$(admin_address conf/grelay.yaml)

logs=$(mktemp -d)
for i in 1 2 3; do
  /usr/bin/python3 demo/greeter_server.py "backend-$i" "127.0.0.1:5005$i" >"$logs/backend-$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do wait_ready "$logs/backend-$i.log"; done

/usr/bin/python3 -m http.server --bind 127.0.0.1 3000 --directory demo/web >"$logs/web.log" 2>&1 &
pids+=($!)
build/grelay --config conf/grelay.yaml &
pids+=($!)
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  sleep 0.1
done

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
  exit 0
fi
echo "Try it yourself:  /usr/bin/python3 demo/client.py 127.0.0.1:8080 YourName"
echo "             or:  printf '\\0\\0\\0\\0\\3Ada' > /tmp/hello.bin"
echo "                  h2load -n 1000 -c 4 -m 16 -H 'content-type: application/grpc' -H 'te: trailers' \\"
echo "                    -d /tmp/hello.bin http://127.0.0.1:8080/demo.Greeter/SayHello"
echo "Ctrl-C stops grelay, the backends and the page server."
wait "${pids[-1]}"
