"""bench.py's access-log scenarios (issue 16): the unary calls of u100_4x16
and u100_16x64 with every proxy writing one access-log line per call to a
file of its own, each as bench/README.md ("Logging to a file") says.

The file is in the bench's temporary directory (bench.TMP, under /tmp: the
machine's local ext4 disk, not a tmpfs), new for every measurement. Once the
proxy has stopped (and so written whatever it buffered), its lines are
counted against the calls h2load made, warm-up included: a proxy that
silently logged fewer lines than calls succeeded, or more than were started,
would make the comparison unfair, and its result is flagged; so is grelay's
when its own count of lines dropped (its ring full, read from its admin
port's /metrics before it stops) is not 0.

measure() returns bench.py's result dict plus "log_lines", "log_bytes",
"log_calls_ok" and "log_calls_started"; log_table() is the report's table.
"""
import os
import re
import urllib.request

import bench


def count_lines(path):
    """(lines, bytes) of the file at path; (0, 0) if there is none."""
    if not os.path.exists(path):
        return 0, 0
    lines = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            lines += chunk.count(b"\n")
    return lines, os.path.getsize(path)


def grelay_dropped(proc):
    """grelay's own count of the lines it dropped (its ring full), from its
    admin port's /metrics; {} for the other proxies."""
    port = getattr(proc, "admin_port", None)
    if not port:
        return {}
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        m = re.search(r"^grelay_access_log_dropped_total (\d+)", r.read().decode(), re.M)
    return {"log_dropped": int(m.group(1))} if m else {}


def measure(args, name, start, bport, sc):
    """bench.measure() of sc's unary calls with name logging to a new file."""
    path = os.path.join(bench.TMP, "access-%s.log" % name)
    if os.path.exists(path):
        os.unlink(path)

    def logged(a, b, tls=False, workers=1):
        return start(a, b, tls, workers, log=path)

    res = bench.measure(args, name, logged, bport, dict(sc, kind="unary"), before_stop=grelay_dropped)
    lines, size = count_lines(path)
    if os.path.exists(path):
        os.unlink(path)  # a run of 16x64 writes some hundred MB
    warm = res.get("warm", {})
    ok = res["ok"] + warm.get("ok", 0)
    started = max(res.get("started", 0), res["requests"]) + warm.get("started", 0)
    res.update(log_lines=lines, log_bytes=size, log_calls_ok=ok, log_calls_started=started)
    if "error" not in res and (not ok <= lines <= started or res.get("log_dropped")):
        res["error"] = "%d access-log lines for %d calls started, %d succeeded%s" % (
            lines, started, ok, "; grelay dropped %d" % res["log_dropped"] if res.get("log_dropped") else "")
    return res


def log_table(sc, names, backends, results):
    """Calls per proxy CPU-second with the log, against the same target
    without it (sc["base"], when that scenario ran too), and the lines
    each wrote."""
    lines = ["## " + sc["title"], "",
             "Every proxy writes one access-log line per call to a file (bench/README.md, \"Logging to a file\"). "
             "Without log: the same target in %s in this run. Lines: what the file held once the proxy had "
             "stopped, against the calls h2load started (warm-up included; the last ones in flight may end "
             "either way) and those that succeeded, summed over the rounds; a round is flagged unless succeeded "
             "<= lines <= started, and when grelay dropped a line. grelay drops a line rather than slow a call when its ring is full, and counts "
             "it (grelay_access_log_dropped_total, read before it stops)." % sc["base"],
             "", "| backend | target | calls/s | calls per proxy CPU-s | proxy CPU-us per call | CPU-us per call "
             "without log | log lines / calls started (succeeded) | bytes per line | grelay's calls/CPU-s over "
             "this target's |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for be in backends:
        rs = results[be].get(sc["id"], {})
        base = results[be].get(sc["base"], {})
        g = bench.med(rs["grelay"], "req_per_cpu_s") if "grelay" in rs else 0
        for n in names:
            if n not in rs:
                continue
            v = bench.med(rs[n], "req_per_cpu_s")
            b = bench.med(base[n], "req_per_cpu_s") if n in base else 0
            nl = sum(r.get("log_lines", 0) for r in rs[n])
            dropped = sum(r.get("log_dropped", 0) for r in rs[n])
            flagged = sum(1 for r in rs[n] if "error" in r)
            note = "; %d dropped, counted by grelay" % dropped if dropped else ""
            note += "; **%d of %d rounds flagged**" % (flagged, len(rs[n])) if flagged else ""
            lines.append("| %s | %s | %.0f | %.0f | %s | %s | %d / %d (%d)%s | %s | %s |" % (
                be, n, bench.med(rs[n], "rps"), v, "%.2f" % (1e6 / v) if v else "-",
                "%.2f" % (1e6 / b) if b else "-", nl, sum(r.get("log_calls_started", 0) for r in rs[n]),
                sum(r.get("log_calls_ok", 0) for r in rs[n]), note,
                "%.0f" % (sum(r.get("log_bytes", 0) for r in rs[n]) / nl) if nl else "-",
                "%.2fx" % (g / v) if g and v else "-"))
    return lines + [""]
