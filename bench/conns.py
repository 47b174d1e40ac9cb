"""bench.py's scenarios about connections and calls held (issue 16).

- held: 10,000 calls in flight at once (bench/load/stream_load with INFLIGHT
  0: bidi calls that each echo one message, then stay open and quiet). The
  proxy's RSS per call held, read once all are held, after 1 s and at the
  end of the hold (when nothing is buffered: every message was echoed and
  taken), the CPU to open them and the CPU to hold them.
- conn: connection churn and TLS handshakes (bench/load/conn_load): every
  connection makes one unary call and closes; h2c, or TLS 1.2 / 1.3 with a
  full handshake or resuming the last session the proxy gave.

Each function returns a result dict in bench.py's shape: "requests" (calls
or connections), "ok", "req_per_cpu_s", "rps", and its own figures.
"""
import os
import subprocess
import time

import bench
from procs import stop, wait_port


def _cpu(pid):
    return bench.cpu_ticks(pid) / bench.CLK_TCK


def _warm(args, port, sc):
    """One call (one connection in the conn scenarios) through the proxy: its
    backend connection is up before anything is counted."""
    if sc["kind"] == "conn":
        subprocess.run(["taskset", "-c", "1", args.conn_load, "127.0.0.1", str(port), "1", "0.3", "100", sc["mode"]],
                       capture_output=True, timeout=60)
    else:
        bench.h2load(port, sc["warm_body"], 1, 1, 1)


def held(args, name, start, bport, sc):
    """RSS and CPU of sc["conns"] x sc["streams"] calls held open."""
    proc, port = start(args, bport)
    n = sc["conns"] * sc["streams"]
    err = open(os.path.join(bench.TMP, "stream_load.err"), "w+")
    load = None
    try:
        wait_port(port, proc)
        _warm(args, port, sc)
        time.sleep(0.5)
        pid = proc.pid
        r0, c0, t0 = bench.rss_kib(pid), _cpu(pid), time.monotonic()
        load = subprocess.Popen(["taskset", "-c", "1", args.stream_load, "127.0.0.1", str(port), str(sc["conns"]),
                                 str(sc["streams"]), str(sc["size"]), str(sc["hold_s"]), "0"],
                                stdout=subprocess.PIPE, stderr=err, text=True)
        line = load.stdout.readline().split()
        if line[:1] != ["held"]:
            load.wait(70)
            err.seek(0)
            return {"requests": 0, "ok": 0, "rps": 0, "req_per_cpu_s": 0, "p50_us": 0, "p99_us": 0,
                    "error": "calls not all held: %s" % (err.read().strip().splitlines() or ["?"])[-1]}
        t1, c1, r1 = time.monotonic(), _cpu(pid), bench.rss_kib(pid)
        time.sleep(1.0)
        r2, c1b, t1b = bench.rss_kib(pid), _cpu(pid), time.monotonic()  # the hold's CPU counts from here
        time.sleep(max(0.1, sc["hold_s"] - 1.5))
        t2, c2, r3 = time.monotonic(), _cpu(pid), bench.rss_kib(pid)
        out = load.communicate(timeout=60)[0].split()
        errors = int(out[7]) if len(out) >= 8 else -1
        res = {"requests": n, "ok": n if errors == 0 else 0, "rps": n / (t1 - t0), "req_per_cpu_s": 0,
               "p50_us": 0, "p99_us": 0, "setup_s": t1 - t0, "rss_base_kib": r0,
               "rss_per_call_kib": (r3 - r0) / n, "rss_per_call_held_kib": (r1 - r0) / n,
               "rss_per_call_1s_kib": (r2 - r0) / n, "rss_kib": r3,
               "open_cpu_us_per_call": (c1 - c0) * 1e6 / n, "hold_cpu_ms_per_s": (c2 - c1b) * 1e3 / (t2 - t1b)}
        if errors != 0:
            res["error"] = "stream_load: %d errors" % errors
        return res
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        err.close()
        stop(proc)


def conn(args, name, start, bport, sc):
    """Connections (one call each) per proxy CPU-second, h2c or TLS."""
    tls = sc["mode"] != "h2c"
    proc, port = start(args, bport, tls)
    try:
        wait_port(port, proc)
        _warm(args, port, sc)
        pid = proc.pid
        c0 = _cpu(pid)
        r = subprocess.run(["taskset", "-c", "1", args.conn_load, "127.0.0.1", str(port), str(sc["threads"]),
                            str(args.seconds), str(sc["size"]), sc["mode"]],
                           capture_output=True, text=True, timeout=args.seconds + 60)
        c1 = _cpu(pid)
        f = r.stdout.split()
        if len(f) < 8:
            return {"requests": 0, "ok": 0, "rps": 0, "req_per_cpu_s": 0, "p50_us": 0, "p99_us": 0,
                    "error": "conn_load: " + (r.stdout + r.stderr).strip()[-200:]}
        conns, resumed, errors, secs = int(f[1]), int(f[3]), int(f[5]), float(f[7])
        cpu = c1 - c0
        res = {"requests": conns, "ok": conns, "rps": conns / secs, "cpu_s": cpu,
               "req_per_cpu_s": conns / cpu if cpu > 0 else 0, "p50_us": 0, "p99_us": 0,
               "resumed": resumed, "conn_errors": errors, "rss_kib": bench.rss_kib(pid)}
        if errors > conns // 100:
            res["error"] = "%d connections failed" % errors
        if sc["mode"].endswith("-resume") and resumed < conns * 0.95:
            res["error"] = "resumed only %d of %d handshakes" % (resumed, conns)
        return res
    finally:
        stop(proc)


def med(rs, key):
    return bench.med(rs, key)


def held_table(sc, names, backends, results):
    lines = ["## " + sc["title"], "",
             "RSS per call held: (proxy RSS - its RSS before the calls) / calls, read at the end of the hold; no "
             "message is buffered then (each was echoed and taken). In brackets: read once all were held, and 1 s "
             "later. CPU to open: the proxy's CPU from the first connection until every call was held, per call; "
             "to hold: its CPU per second from 1 s after that to the end (10 ms ticks: 0 means under one tick).", "",
             "| backend | target | s to open all | RSS per call held, KiB (at once, 1 s) | proxy CPU-us per call to "
             "open | proxy CPU-ms per s to hold | RSS per call vs grelay |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for be in backends:
        rs = results[be].get(sc["id"], {})
        ok = {n: [r for r in v if "rss_per_call_kib" in r] for n, v in rs.items()}
        g = med(ok["grelay"], "rss_per_call_kib") if ok.get("grelay") else 0
        for n in names:
            if n not in rs:
                continue
            if not ok[n]:
                lines.append("| %s | %s | %s | - | - | - | - |" % (be, n, rs[n][0].get("error", "failed")))
                continue
            v = med(ok[n], "rss_per_call_kib")
            lines.append("| %s | %s | %.2f | %.2f (%.2f, %.2f) | %.1f | %.1f | %s |" % (
                be, n, med(ok[n], "setup_s"), v, med(ok[n], "rss_per_call_held_kib"), med(ok[n], "rss_per_call_1s_kib"),
                med(ok[n], "open_cpu_us_per_call"), med(ok[n], "hold_cpu_ms_per_s"),
                "%.2fx" % (v / g) if g else "-"))
    return lines + [""]


def conn_table(sc, names, backends, results):
    lines = ["## " + sc["title"], "",
             "| backend | target | connections/s | connections per proxy CPU-s | proxy CPU-us per connection | "
             "resumed | conn/CPU-s vs grelay |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for be in backends:
        rs = results[be].get(sc["id"], {})
        g = med(rs["grelay"], "req_per_cpu_s") if "grelay" in rs else 0
        for n in names:
            if n not in rs:
                continue
            v = med(rs[n], "req_per_cpu_s")
            err = "; ".join(sorted({r["error"] for r in rs[n] if "error" in r}))
            lines.append("| %s | %s | %.0f | %.0f | %s | %s | %s |" % (
                be, n, med(rs[n], "rps"), v, "%.1f" % (1e6 / v) if v else "-",
                "%.0f%%" % (100.0 * sum(r.get("resumed", 0) for r in rs[n]) / max(1, sum(r["requests"] for r in rs[n])))
                + (" (%s)" % err if err else ""), "%.2fx" % (v / g) if g else "-"))
    return lines + [""]
