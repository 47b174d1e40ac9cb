#!/usr/bin/env python3
"""Failmalloc sweep, as in nghttp2's failmalloc test. For every seed of a
whole-proxy target (fuzz_h1, fuzz_h2_session), make the Nth allocation fail
for N = 1..MAX, once and from then on (the input's first two bytes, see
tests/fuzz/driver.h). Run each variant once, then print each distinct failure
with the variants that show it.

Usage: tests/fuzz/failmalloc_sweep.py build-fuzz/tests/fuzz/fuzz_h1 tests/fuzz/corpus/h1 [MAX=200]
A failing variant reruns alone: build-fuzz/tests/fuzz/fuzz_h1 <file it names>
"""
import os
import struct
import subprocess
import sys
import tempfile

BATCH = 500


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, corpus = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    work = tempfile.mkdtemp(prefix="failmalloc-")
    files = []
    for name in sorted(os.listdir(corpus)):
        data = open(os.path.join(corpus, name), "rb").read()
        for sticky in (0, 0x8000):
            for n in range(1, top + 1):
                path = os.path.join(work, f"{name}.{'sticky' if sticky else 'once'}{n}")
                with open(path, "wb") as f:
                    f.write(struct.pack("<H", n | sticky) + data[2:])
                files.append(path)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=66",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    failures = {}
    i = 0
    while i < len(files):
        batch = files[i:i + BATCH]
        r = subprocess.run([binary, "-runs=1", "-timeout=10"] + batch, capture_output=True, text=True, env=env)
        if r.returncode == 0:
            i += len(batch)
            continue
        lines = r.stderr.splitlines()
        ran = [l[len("Running: "):] for l in lines if l.startswith("Running: ")]
        last = ran[-1] if ran else batch[0]
        why = [l for l in lines if "SUMMARY" in l or "fuzz driver:" in l or "ERROR:" in l]
        failures.setdefault(why[0] if why else lines[-1] if lines else "?", []).append(last)
        i = files.index(last) + 1
    print(f"{len(files)} inputs from {corpus}, {sum(map(len, failures.values()))} failed (variants in {work})")
    for why, paths in failures.items():
        print(f"{len(paths)} x {why}\n    e.g. {', '.join(paths[:4])}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
