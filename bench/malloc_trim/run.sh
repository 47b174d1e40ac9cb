#!/bin/bash
# Does malloc_trim(0) on a quiet thread stall malloc/free on a busy one?
# (docs/design-notes.md, Memory trimming; table.md has the 2026-12-01 run.)
# Every variant 3 times, 10 s each, repetition outermost so background load
# is spread; separate arenas, then one shared arena. Results in out/.
set -euo pipefail
cd "$(dirname "$0")"
gcc -O2 -pthread -o trimstall trimstall.c -lm
mkdir -p out
for rep in 1 2 3; do
  echo "rep $rep start: $(cat /proc/loadavg)" >> out/load.txt
  for m in trim none pool poolfree mmapthr trimthr predv; do
    timeout 60 ./trimstall -m $m -d 10000 -t sep-$m-$rep -c out/sep-$m-$rep.csv > out/sep-$m-$rep.txt 2>&1
  done
  for m in trim none pool mmapthr predv; do
    GLIBC_TUNABLES=glibc.malloc.arena_max=1 timeout 60 ./trimstall -m $m -d 10000 -t shared-$m-$rep \
      -c out/shared-$m-$rep.csv > out/shared-$m-$rep.txt 2>&1
  done
done
echo "end: $(cat /proc/loadavg)" >> out/load.txt
