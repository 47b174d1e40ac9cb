#!/usr/bin/env bash
# Builds grelay and the C echo backend in Release mode, installs the peers,
# and runs bench/bench.py: every scenario against direct, grelay, nghttpx,
# HAProxy, nginx and Caddy. Writes bench/results/DATE.{md,json,png}.
#   bench/run.sh                 full run (3 rounds of 4 s per target and scenario, ~10 min)
#   bench/run.sh --rounds 1 --seconds 2   a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bench/install-peers.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DGRELAY_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" >/dev/null
exec /usr/bin/python3 bench/bench.py --grelay build-bench/grelay --backend build-bench/echo_backend \
    --stream-load build-bench/stream_load "$@"
