#!/usr/bin/python3
"""How each proxy's reads and writes fall per call, client side and backend side.

syscalls.py counts syscalls and packets per call; this says what they carry.
`perf record` of the read and write syscalls' tracepoints (enter for the fd,
exit for the bytes; sampling is not used, so it works on these VMs) attached
to the proxy's PIDs around N unary calls of h2load after a warm-up, one worker
pinned to CPU 0, backend and h2load on CPU 1, as syscalls.py runs them. Each
fd is put on its side with `ss` (the proxy's port: a client; the backend's
port: the backend). A client-side write is a whole response when it carries
at least the message (`--size`) and no more than one response, a window
update when it is 13 or 26 bytes, else a piece of a response (so with more
than one stream a connection, a write of two responses counts as a piece:
the classes are made for one call a connection). The table says how many
syscalls were on an fd `ss` did not put on a side ("unmapped", a connection
opened after the snapshot), and the run fails if perf lost events.

Usage: writes.py --grelay BIN (--c-backend BIN | --go-backend BIN) [--backend c|go]
                 [--only grelay,nghttpx] [--calls N] [--size BYTES] [--scenario CxM]
Prints a Markdown table (per call).
"""
import collections
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import syscalls  # noqa: E402
from procs import stop, tree, wait_port  # noqa: E402

READS = ("read", "readv", "recvfrom", "recvmsg")
WRITES = ("write", "writev", "sendto", "sendmsg")
EVENTS = ["syscalls:sys_%s_%s" % (k, c) for c in READS + WRITES for k in ("enter", "exit")]


def sides(pids, port, bport):
    """{(pid, fd): "client" | "backend"} for the TCP sockets of pids."""
    out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 6:
            continue
        local, peer = int(f[3].rsplit(":", 1)[1]), int(f[4].rsplit(":", 1)[1])
        side = "client" if local == port else "backend" if peer == bport else None
        for pid, fd in re.findall(r"pid=(\d+),fd=(\d+)", f[5]):
            if side and int(pid) in pids:
                res[(int(pid), int(fd))] = side
    return res


def paired(script):
    """[(tid, call, fd, bytes)] from `perf script`: each exit paired with its enter."""
    open_ = {}
    out = []
    for line in script.splitlines():
        m = re.search(r"\s(\d+)\s+\[\d+\].*syscalls:sys_(enter|exit)_(\w+): (.*)", line)
        if not m:
            continue
        tid, kind, call, rest = m.groups()
        if kind == "enter":
            open_[tid] = (call, int(re.search(r"fd: (0x[0-9a-f]+)", rest).group(1), 16))
        elif tid in open_:
            call, fd = open_.pop(tid)
            ret = int(rest.strip(), 16)
            out.append((int(tid), call, fd, ret - (1 << 64) if ret >= 1 << 63 else ret))
    return out


def measure(args, name, start, bport, body, conns, streams):
    proc, port = start(args, bport)
    try:
        wait_port(port, proc)
        bench.h2load(port, body, conns, streams, 1)  # warm-up
        pids = tree(proc.pid)
        data = os.path.join(bench.TMP, "writes.data")
        perf = subprocess.Popen(["perf", "record", "-o", data, "-p", ",".join(map(str, pids))] +
                                sum([["-e", e] for e in EVENTS], []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # perf attaches
        h2l = subprocess.Popen(["taskset", "-c", "1", "h2load", "-c", str(conns), "-m", str(streams), "-n",
                                str(args.calls), "-d", body, "-H", "content-type: application/grpc", "-H",
                                "te: trailers", "http://127.0.0.1:%d/bench.Echo/Unary" % port],
                               stdout=subprocess.PIPE, text=True)
        # Once h2load's connections are up, put every fd on its side.
        deadline = time.monotonic() + 10
        while True:
            fds = sides(set(pids), port, bport)
            if list(fds.values()).count("client") >= conns or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        # A thread's fds are its process's: each tid to the pid whose fd table it uses.
        tgid = {int(t): p for p in pids for t in os.listdir("/proc/%d/task" % p)}
        out = h2l.communicate(timeout=300)[0]
        perf.send_signal(2)
        lost = [l for l in perf.communicate(timeout=60)[1].splitlines() if "lost" in l.lower()]
        if lost:
            sys.exit("%s: perf lost events, the counts would be low: %s" % (name, "; ".join(lost)))
        done = next(int(l.replace(",", "").split()[7]) for l in out.splitlines() if l.startswith("requests:"))
        script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
    finally:
        stop(proc)
    n = collections.Counter()
    whole_max = args.size + 200  # one response: the message, its frame headers, HEADERS and trailers
    for tid, call, fd, ret in paired(script):
        side = fds.get((tgid.get(tid, tid), fd))
        if side is None:
            n["unmapped"] += 1
            continue
        if ret < 0:
            n[side + " EAGAIN"] += 1
            continue
        if call in READS:
            n[side + " reads"] += 1
        elif side == "backend":
            n["backend writes"] += 1
        elif ret in (13, 26):
            n["client window updates"] += 1
        elif args.size <= ret <= whole_max:
            n["client whole responses"] += 1
        else:
            n["client pieces"] += 1
    return {k: v / done for k, v in n.items()}, done


def main():
    ap = syscalls.arguments("grelay,nghttpx", 16384, "64x1")
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    conns, streams, targets, backend, bport, body = syscalls.start_all(args)
    cols = ["client reads", "client whole responses", "client pieces", "client window updates", "backend reads",
            "backend writes", "client EAGAIN", "backend EAGAIN", "unmapped"]
    rows = []
    try:
        for name, start in targets:
            res, done = measure(args, name, start, bport, body, conns, streams)
            rows.append((name, res, done))
    finally:
        stop(backend)
    print("%s, %d B messages, %s backend; per call (whole response: one write of %d..%d bytes)" % (
        args.scenario, args.size, args.backend, args.size, args.size + 200))
    print("| target | calls | " + " | ".join(cols) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
    for name, res, done in rows:
        print("| %s | %d | %s |" % (name, done, " | ".join("%.3f" % res.get(c, 0) for c in cols)))


if __name__ == "__main__":
    main()
