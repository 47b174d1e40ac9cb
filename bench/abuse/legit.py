#!/usr/bin/python3
"""The legitimate client of the abuse bench: a real gRPC client (grpcio) on
its own connection, making unary calls at a steady rate, open loop (a call
is started on time whether or not the previous ones have finished, so a stall
shows as failures and latency, not as fewer calls).

Usage: legit.py PORT SECONDS RATE TIMEOUT_S
Makes one warm-up call, prints "ready", waits for a line on stdin, runs, then
prints one JSON line: calls, ok, failures by status, latency percentiles of the
calls that succeeded (ms) and the longest time, within the run, in which no
call succeeded (ms).
"""
import json
import sys
import threading
import time

import grpc


def main():
    port, seconds, rate, timeout = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    unary = ch.unary_unary("/bench.Echo/Unary")
    body = b"x" * 100
    for _ in range(50):  # the proxy may need a moment for its upstream connection
        try:
            unary(body, timeout=2)
            break
        except grpc.RpcError:
            time.sleep(0.1)
    print("ready", flush=True)
    sys.stdin.readline()
    lock = threading.Lock()
    done = []  # (start, end, code)

    def finish(fut, start):
        end = time.monotonic()
        try:
            ok = fut.result() == body
            code = "OK" if ok else "WRONG_BODY"
        except grpc.RpcError as e:
            code = e.code().name
        with lock:
            done.append((start, end, code))

    t0 = time.monotonic()
    n = int(seconds * rate)
    futs = []
    for i in range(n):
        at = t0 + i / rate
        pause = at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        start = time.monotonic()
        f = unary.future(body, timeout=timeout)
        f.add_done_callback(lambda fut, start=start: finish(fut, start))
        futs.append(f)
    limit = time.monotonic() + timeout + 5
    while time.monotonic() < limit:
        with lock:
            if len(done) >= n:
                break
        time.sleep(0.02)
    with lock:
        rows = list(done)
    lat = sorted((e - s) * 1000 for s, e, c in rows if c == "OK")
    codes = {}
    for _, _, c in rows:
        if c != "OK":
            codes[c] = codes.get(c, 0) + 1
    if len(rows) < n:
        codes["NO_ANSWER"] = n - len(rows)
    # the longest stretch of the run's window in which no call succeeded
    stop = t0 + seconds
    marks = [t0] + sorted(min(e, stop) for s, e, c in rows if c == "OK") + [stop]
    gap = max(b - a for a, b in zip(marks, marks[1:])) * 1000
    pct = lambda p: round(lat[min(len(lat) - 1, int(len(lat) * p))], 2) if lat else None
    print(json.dumps({"calls": n, "ok": len(lat), "failures": codes, "p50_ms": pct(0.5), "p90_ms": pct(0.9),
                      "p99_ms": pct(0.99), "max_ms": round(lat[-1], 2) if lat else None,
                      "longest_gap_ms": round(gap, 1)}), flush=True)
    ch.close()


if __name__ == "__main__":
    main()
