#!/usr/bin/env bash
# The abuse bench: every attack class of issue 12 against grelay, nghttpx and
# HAProxy side by side (bench/abuse/README.md). Builds grelay in Release mode,
# installs the peers, runs bench/abuse/abuse.py; writes
# bench/results/abuse-DATE.{md,json}.
#   bench/abuse/run.sh                        all attacks, 5 s each per proxy (~7 min on 2 cores)
#   bench/abuse/run.sh --seconds 2            a quick look (~4 min)
#   bench/abuse/run.sh --attacks hpack_bomb,slow_read_noread --proxies grelay,nghttpx
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh
bench/install-peers.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DGRELAY_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target grelay >/dev/null
exec /usr/bin/python3 bench/abuse/abuse.py --grelay build-bench/grelay "$@"
