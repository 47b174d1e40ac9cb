#!/usr/bin/python3
"""Syscalls and packets per call (or per bidi message) for each proxy, counted with perf's tracepoints.

The method of docs/performance.md ("Kernel work"): `perf stat` counting (not
sampling, which gets no samples on these virtual machines) attached to every
PID of the proxy's process tree, around a load after a warm-up, one worker
pinned to CPU 0, the backend and the load generator on CPU 1. Counts, and the
proxy tree's utime and stime read around the run, are divided by what the
load generator completed (CPU under tracing is somewhat inflated by it).

--kind unary (the default): N unary calls driven by h2load (--calls N),
counted per call; --scenario is h2load's connections x streams.
--kind bidi: bidi streaming driven by bench/load/stream_load exactly as
bench.py's bidi scenarios drive it (bench.stream_load()), for --seconds S a
run after a 1 s warm-up; --scenario is connections x streams, each stream
keeping --inflight messages in flight (1, ping-pong, by default: bidi16k_4x16
is --size 16384 --scenario 4x16), counted per echoed message stream_load
reports (each crosses the proxy both ways).

Usage: syscalls.py --grelay BIN (--c-backend BIN | --go-backend BIN) [--backend c|go]
                   [--only grelay,nghttpx,haproxy] [--runs R] [--size BYTES] [--scenario CxM]
                   [--kind unary] [--calls N]
                   --kind bidi [--seconds S] [--inflight N] [--stream-load BIN]
(--size: the message, 100 by default; --scenario: 4x16 by default; --calls:
200000 by default; --seconds: 10 by default; --stream-load: stream_load next
to --grelay by default, where CMake builds it and bench/run.sh finds it.)
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


def traced(args, start, bport, warm, run):
    """{event: count per unit, user_us, sys_us per unit} for the proxy
    start() starts: warm(port) warms it up, then run(port) is the load
    counted, returning how many units (calls, messages) it completed."""
    proc, port = start(args, bport)
    try:
        wait_port(port, proc)
        warm(port)  # connections, pools, caches
        time.sleep(0.2)
        pids = ",".join(str(p) for p in tree(proc.pid))  # nghttpx forks its worker
        out = os.path.join(bench.TMP, "perf.csv")
        perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", ",".join(EVENTS), "-p", pids],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf attaches
        try:
            t0 = [bench.proc_sum(proc.pid, lambda p, i=i: _times(p)[i]) for i in (0, 1)]
            done = run(port)
            t1 = [bench.proc_sum(proc.pid, lambda p, i=i: _times(p)[i]) for i in (0, 1)]
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(30)
        res = {"user_us": (t1[0] - t0[0]) / bench.CLK_TCK * 1e6 / done,
               "sys_us": (t1[1] - t0[1]) / bench.CLK_TCK * 1e6 / done, "done": done}
        for line in open(out):
            f = line.strip().split(",")
            if len(f) > 2 and f[2] in EVENTS and f[0].strip().isdigit():
                res[f[2]] = int(f[0]) / done
        return res
    finally:
        stop(proc)


def count(args, name, start, bport, body, conns=4, streams=16):
    """{event: count per call} for one run of args.calls unary calls through
    name (bench.py calls it too, for its main unary scenarios)."""
    def run(port):
        r = subprocess.run(["taskset", "-c", "1", "h2load", "-c", str(conns), "-m", str(streams), "-n", str(args.calls),
                            "-d", body,
                            "-H", "content-type: application/grpc", "-H", "te: trailers",
                            "http://127.0.0.1:%d/bench.Echo/Unary" % port], capture_output=True, text=True,
                           timeout=300)
        _, done, ok = bench.h2load_counts(r.stdout)
        if done == 0 or ok != done:
            raise RuntimeError("%s: %d of %d calls answered 2xx:\n%s" % (name, ok, done, r.stdout))
        return done
    return traced(args, start, bport, lambda port: bench.h2load(port, body, conns, streams, 1), run)


def bidi_runs(args, size, conns, streams, inflight=1):
    """(warm, run) for traced(): bidi echo messages through the proxy,
    bench.py's stream_load() with a bidi scenario of these figures, warm for
    1 s as bench.py's measure() warms one, run for args.seconds; run
    returns the messages echoed (and raises if stream_load failed)."""
    sc = {"kind": "bidi", "size": size, "conns": conns, "streams": streams, "inflight": inflight}

    def run(port):
        r = bench.stream_load(args, port, sc, args.seconds)
        if r["requests"] == 0:
            raise RuntimeError("stream_load failed: " + r["stdout"])
        return r["requests"]
    return (lambda port: bench.stream_load(args, port, sc, 1)), run


def count_bidi(args, name, start, bport, size, conns=4, streams=16, inflight=1):
    """{event: count per echoed message} for one run of args.seconds of bidi
    streaming through name."""
    warm, run = bidi_runs(args, size, conns, streams, inflight)
    return traced(args, start, bport, warm, run)


def arguments(only, size, scenario):
    """The options every per-call counter here takes (writes.py too)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--grelay", required=True)
    ap.add_argument("--backend", default="go", choices=["c", "go"])
    ap.add_argument("--c-backend")
    ap.add_argument("--go-backend")
    ap.add_argument("--only", default=only)
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--scenario", default=scenario)
    return ap


def start_all(args):
    """(conns, streams, [(name, start)], backend process, its port, body file) for parsed arguments()."""
    conns, streams = (int(x) for x in args.scenario.split("x"))
    targets = [(n, f) for n, f in bench.TARGETS if n in args.only.split(",")]
    backend, bport = bench.start_backend(args, args.backend)
    body = bench._write_bytes("body-%d" % args.size, b"\x00" + args.size.to_bytes(4, "big") + b"x" * args.size)
    return conns, streams, targets, backend, bport, body


def main():
    ap = arguments("grelay,nghttpx,haproxy", 100, "4x16")
    ap.add_argument("--kind", default="unary", choices=["unary", "bidi"])
    ap.add_argument("--calls", type=int, default=200000, help="unary: calls a run")
    ap.add_argument("--seconds", type=float, default=10, help="bidi: seconds a run")
    ap.add_argument("--inflight", type=int, default=1, help="bidi: messages in flight per stream")
    ap.add_argument("--stream-load", help="bidi: bench/load/stream_load (default: next to --grelay)")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    bidi = args.kind == "bidi"
    if bidi and not args.stream_load:
        args.stream_load = os.path.join(os.path.dirname(args.grelay), "stream_load")
    if bidi and args.inflight < 1:
        sys.exit("--inflight: at least 1 (stream_load's 0 holds calls instead, conns.py's held10k)")
    unit = "message" if bidi else "call"
    conns, streams, targets, backend, bport, body = start_all(args)
    rows = {}
    try:
        for _ in range(args.runs):
            for name, start in targets:  # alternating, as bench.py does
                if bidi:
                    r = count_bidi(args, name, start, bport, args.size, conns, streams, args.inflight)
                else:
                    r = count(args, name, start, bport, body, conns, streams)
                rows.setdefault(name, []).append(r)
                print(name, " ".join("%s=%.3f" % (e.split(":")[-1].replace("sys_enter_", ""), v)
                                     for e, v in sorted(r.items())), file=sys.stderr, flush=True)
    finally:
        stop(backend)
    if bidi:
        print("%s bidi, %d message%s in flight per stream, %d B messages, %g s a run (messages echoed: %s)" % (
            args.scenario, args.inflight, "" if args.inflight == 1 else "s", args.size, args.seconds,
            "; ".join("%s %s" % (n, ", ".join("%d" % r["done"] for r in runs)) for n, runs in rows.items())))
    else:
        print("%s, %d B messages, %d calls a run" % (args.scenario, args.size, args.calls))
    print("| target (%s backend) | syscalls per %s | packets sent per %s | CPU-us per %s, user + system | "
          "of which (syscalls per %s, mean of %d runs) |" % (args.backend, unit, unit, unit, unit, args.runs))
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
