#!/usr/bin/python3
"""User-space instructions per connection of each proxy, counted by callgrind,
for bench/load/conn_load's modes: h2c churn and TLS handshakes (full or
resumed), one unary call per connection.

Each proxy starts as bench.py starts it, under `valgrind --tool=callgrind
--trace-children=yes` (nghttpx forks its worker), in front of the C echo
backend. After a warm-up, the counters of every process of the proxy's tree
are zeroed (callgrind_control -z), conn_load runs for --seconds, the
counters are dumped (-d), and their totals are divided by the connections it
made. Instruction counts do not depend on machine load (wall time does), so
this separates a proxy's own work per handshake from the noise of timing.

Usage: callgrind_conns.py --grelay BIN --c-backend BIN --conn-load BIN
                          [--only grelay,nghttpx,haproxy] [--modes tls1.3-resume,tls1.3] [--seconds 8]
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from procs import stop, tree, wait_port  # noqa: E402


def count(args, name, start, bport, mode, out):
    """Instructions per connection of name's process tree in mode."""
    for f in glob.glob(os.path.join(out, "cg.*")):
        os.unlink(f)
    real = subprocess.Popen

    def under_callgrind(argv, *a, **kw):  # the proxies start as "taskset -c 0 BIN ..."
        if isinstance(argv, list) and argv[:3] == ["taskset", "-c", "0"]:
            argv = argv[:3] + ["valgrind", "--tool=callgrind", "--trace-children=yes",
                               "--callgrind-out-file=%s/cg.%%p" % out] + argv[3:]
        return real(argv, *a, **kw)

    bench.subprocess.Popen = under_callgrind
    try:
        proc, port = start(args, bport, mode != "h2c")
    finally:
        bench.subprocess.Popen = real
    try:
        wait_port(port, proc, 120)
        load = ["taskset", "-c", "1", args.conn_load, "127.0.0.1", str(port), "2"]
        subprocess.run(load + ["2", "100", mode], capture_output=True, timeout=120)  # warm-up
        pids = tree(proc.pid)
        for p in pids:
            subprocess.run(["callgrind_control", "-z", str(p)], capture_output=True)
        r = subprocess.run(load + [str(args.seconds), "100", mode], capture_output=True, text=True, timeout=300)
        for p in pids:
            subprocess.run(["callgrind_control", "-d", str(p)], capture_output=True)
        time.sleep(1)
        total = 0
        for f in glob.glob(os.path.join(out, "cg.*.*")):  # the dumps: cg.PID.N
            m = re.search(r"^(?:totals|summary): (\d+)", open(f).read(), re.M)
            total += int(m.group(1)) if m else 0
        conns = int(r.stdout.split()[1])
        return total / conns, r.stdout.strip()
    finally:
        stop(proc, 60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grelay", required=True)
    ap.add_argument("--c-backend", required=True)
    ap.add_argument("--conn-load", required=True)
    ap.add_argument("--only", default="grelay,nghttpx,haproxy")
    ap.add_argument("--modes", default="tls1.3-resume,tls1.3")
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    out = os.path.join(bench.TMP, "callgrind")
    os.makedirs(out)
    backend, bport = bench.start_backend(args, "c")
    try:
        print("| target | mode | user-space instructions per connection | conn_load |")
        print("| --- | --- | --- | --- |")
        for name, start in bench.TARGETS:
            if name in args.only.split(","):
                for mode in args.modes.split(","):
                    per, line = count(args, name, start, bport, mode, out)
                    print("| %s | %s | %.0f | %s |" % (name, mode, per, line), flush=True)
    finally:
        stop(backend)


if __name__ == "__main__":
    main()
