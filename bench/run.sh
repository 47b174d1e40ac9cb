#!/usr/bin/env bash
# Builds grelay, the C echo backend and the grpc-go echo backend in Release
# mode, installs the peers, and runs bench/bench.py: every scenario against
# direct, grelay, nghttpx, HAProxy, nginx and Caddy. Writes
# bench/results/DATE[-TAG].{md,json,png}.
#   bench/run.sh                 everything, the C and the grpc-go backend side by side
#                                (3 rounds of 4 s per target and scenario, ~50 min)
#   bench/run.sh --rounds 2 --seconds 2   the same, shorter (~22 min)
#   bench/run.sh --backend c     the C backend only
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bench/install-peers.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DGRELAY_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" >/dev/null
bench/gobackend/build.sh build-bench
bench/load/build.sh build-bench
exec /usr/bin/python3 bench/bench.py --grelay build-bench/grelay --c-backend build-bench/echo_backend \
    --go-backend build-bench/gobackend --stream-load build-bench/stream_load --conn-load build-bench/conn_load "$@"
