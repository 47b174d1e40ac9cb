#!/usr/bin/python3
"""Syscalls and packets per call for each proxy, counted with perf's tracepoints.

The method of docs/performance.md ("Kernel work"): `perf stat` counting (not
sampling, which gets no samples on these virtual machines) attached to every
PID of the proxy's process tree, around N unary 100 B calls at 4x16 after a
warm-up, one worker pinned to CPU 0, the backend and h2load on CPU 1.
Counts, and the proxy tree's utime and stime read around the run, are divided
by the calls h2load completed (CPU under tracing is somewhat inflated by it).

Usage: syscalls.py --grelay BIN (--c-backend BIN | --go-backend BIN) [--backend c|go]
                   [--only grelay,nghttpx,haproxy] [--calls N] [--runs R]
                   [--size BYTES] [--scenario CxM]
(--size: the message, 100 by default; --scenario: h2load's connections x
streams, 4x16 by default.)
Prints a Markdown table.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from procs import stop, tree, wait_port  # noqa: E402

# Name each tracepoint: counting every syscalls:sys_enter_* at once counted
# nothing here (docs/performance.md, Fair peers).
CALLS = ["read", "write", "writev", "readv", "recvfrom", "sendto", "sendmsg", "recvmsg", "epoll_wait",
         "epoll_ctl", "epoll_pwait", "futex"]
EVENTS = ["raw_syscalls:sys_enter", "net:net_dev_xmit"] + ["syscalls:sys_enter_" + c for c in CALLS]


def _times(p):
    """(utime, stime) of one process, in ticks."""
    with open("/proc/%d/stat" % p) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def count(args, name, start, bport, body, conns=4, streams=16):
    """{event: count per call} for one run of args.calls calls through name
    (bench.py calls it too, for its main unary scenarios)."""
    proc, port = start(args, bport)
    try:
        wait_port(port, proc)
        bench.h2load(port, body, conns, streams, 1)  # warm-up: connections, pools, caches
        time.sleep(0.2)
        pids = ",".join(str(p) for p in tree(proc.pid))  # nghttpx forks its worker
        out = os.path.join(bench.TMP, "perf.csv")
        perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", ",".join(EVENTS), "-p", pids],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf attaches
        t0 = [bench.proc_sum(proc.pid, lambda p, i=i: _times(p)[i]) for i in (0, 1)]
        r = subprocess.run(["taskset", "-c", "1", "h2load", "-c", str(conns), "-m", str(streams), "-n", str(args.calls),
                            "-d", body,
                            "-H", "content-type: application/grpc", "-H", "te: trailers",
                            "http://127.0.0.1:%d/bench.Echo/Unary" % port], capture_output=True, text=True,
                           timeout=300)
        t1 = [bench.proc_sum(proc.pid, lambda p, i=i: _times(p)[i]) for i in (0, 1)]
        perf.send_signal(signal.SIGINT)
        perf.wait(30)
        done = next(int(l.replace(",", "").split()[7]) for l in r.stdout.splitlines() if l.startswith("requests:"))
        res = {"user_us": (t1[0] - t0[0]) / bench.CLK_TCK * 1e6 / done, "sys_us": (t1[1] - t0[1]) / bench.CLK_TCK * 1e6 / done}
        for line in open(out):
            f = line.strip().split(",")
            if len(f) > 2 and f[2] in EVENTS and f[0].strip().isdigit():
                res[f[2]] = int(f[0]) / done
        return res
    finally:
        stop(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grelay", required=True)
    ap.add_argument("--backend", default="go", choices=["c", "go"])
    ap.add_argument("--c-backend")
    ap.add_argument("--go-backend")
    ap.add_argument("--only", default="grelay,nghttpx,haproxy")
    ap.add_argument("--calls", type=int, default=200000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--scenario", default="4x16")
    args = ap.parse_args()
    conns, streams = (int(x) for x in args.scenario.split("x"))
    targets = [(n, f) for n, f in bench.TARGETS if n in args.only.split(",")]
    backend, bport = bench.start_backend(args, args.backend)
    body = bench._write_bytes("body-%d" % args.size, b"\x00" + args.size.to_bytes(4, "big") + b"x" * args.size)
    rows = {}
    try:
        for _ in range(args.runs):
            for name, start in targets:  # alternating, as bench.py does
                rows.setdefault(name, []).append(count(args, name, start, bport, body, conns, streams))
                print(name, " ".join("%s=%.3f" % (e.split(":")[-1].replace("sys_enter_", ""), v)
                                     for e, v in sorted(rows[name][-1].items())), file=sys.stderr, flush=True)
    finally:
        stop(backend)
    print("%s, %d B messages, %d calls a run" % (args.scenario, args.size, args.calls))
    print("| target (%s backend) | syscalls per call | packets sent per call | CPU-us per call, user + system | "
          "of which (syscalls per call, mean of %d runs) |" % (args.backend, args.runs))
    print("| --- | --- | --- | --- | --- |")
    for name, runs in rows.items():
        mean = {e: sum(r.get(e, 0) for r in runs) / len(runs) for e in EVENTS}
        parts = sorted(((mean["syscalls:sys_enter_" + c], c) for c in CALLS), reverse=True)
        print("| %s | %s | %s | %s | %s |" % (
            name, ", ".join("%.2f" % r.get("raw_syscalls:sys_enter", 0) for r in runs),
            ", ".join("%.2f" % r.get("net:net_dev_xmit", 0) for r in runs),
            ", ".join("%.1f + %.1f" % (r["user_us"], r["sys_us"]) for r in runs),
            ", ".join("%s %.3f" % (c, v) for v, c in parts if v >= 0.005)))


if __name__ == "__main__":
    main()
