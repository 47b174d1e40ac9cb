#!/usr/bin/env bash
# Builds bench/load/conn_load (connection churn and TLS handshakes: nghttp2,
# OpenSSL, pthreads) and bench/load/copy_cost (what one payload copy costs)
# with the system compiler; bench/run.sh calls it. They are built here
# rather than by CMake because only the bench needs them.
#   bench/load/build.sh OUTDIR     writes OUTDIR/conn_load and OUTDIR/copy_cost
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
src=$(cd "$(dirname "$0")" && pwd)
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$out/conn_load" "$src/conn_load.c" \
    $(pkg-config --cflags --libs libnghttp2 openssl) -lpthread
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$out/copy_cost" "$src/copy_cost.c" -lpthread
