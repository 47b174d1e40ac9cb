#!/usr/bin/env bash
# Checks the tree's shape and style, builds grelay with AddressSanitizer +
# UndefinedBehaviorSanitizer and runs every test: unit tests (cmocka, via
# ctest), fuzz targets for a bounded time (libFuzzer) and the inputs they
# once crashed on, and integration tests against real gRPC peers and a real
# browser (pytest).
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/install-deps.sh --test
scripts/npm-install.sh tests/browser

echo "== structure and style"
/usr/bin/python3 scripts/check-structure.py
scripts/format.sh --check

echo "== build (ASan + UBSan)"
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DGRELAY_SANITIZE=ON -DGRELAY_WERROR=ON >/dev/null
cmake --build build-test -j"$(nproc)" >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

echo "== unit tests"
(cd build-test && ctest --output-on-failure)

echo "== fuzz targets (${FUZZ_SECONDS:=20}s each)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DGRELAY_FUZZ=ON -DGRELAY_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
for target in build-fuzz/tests/fuzz/fuzz_*; do
  name=$(basename "$target")
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/${name#fuzz_}/." "$work/" 2>/dev/null || true
  echo "-- $name"
  (cd "$work" && "$root/$target" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=0 . 2>&1 | tail -n 2)
  rm -rf "$work"
done
echo "-- inputs that once crashed a target (tests/fuzz/crashes-found/)"
for input in tests/fuzz/crashes-found/*-*; do
  name=${input##*/}
  "build-fuzz/tests/fuzz/fuzz_${name%%-*}" "$input" >/dev/null 2>&1 ||
    { echo "fuzz_${name%%-*} fails on $input again" >&2; exit 1; }
done

echo "== integration tests"
export GRELAY_BIN="$root/build-test/grelay"
/usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider "$@"
