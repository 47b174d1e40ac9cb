#!/usr/bin/python3
"""The abuse bench: every attack class of issue 12 against grelay, nghttpx and
HAProxy side by side, one worker each, in front of the same grpcio backend.

For each attack and proxy, on a fresh backend and a fresh proxy: a real gRPC
client makes unary calls at a steady rate on its own connection while the
attack driver (attacks.py) runs for --seconds; the row gives the proxy's CPU
seconds over that time, its peak RSS, the legitimate calls' success rate and
latency, and what the attacker saw (connections ended, GOAWAY/RST codes).

Usage: abuse.py --grelay BIN [--seconds 5] [--rate 50] [--attacks a,b] [--proxies grelay,nghttpx,haproxy]
Prints a Markdown table and writes it to --out/abuse-DATE.md (and .json).
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from procs import free_port, stop, tree, wait_port  # noqa: E402
PY = "/usr/bin/python3"  # Debian's, which has grpcio
CLK_TCK = os.sysconf("SC_CLK_TCK")
TMP = tempfile.mkdtemp(prefix="grelay-abuse-")
PROXY_CPU, CLIENT_CPU = "0", "1"  # the proxy alone on CPU 0; backend, legit client and attacker on CPU 1

# (row id, attack driver or None, description, extra driver args, HTTP/1.1 listener)
ROWS = [
    ("baseline", None, "no attack", [], False),
    ("rapid_reset_1", "rapid_reset", "rapid reset (HEADERS + RST_STREAM), 1 connection", ["--conns", "1"], False),
    ("rapid_reset_32", "rapid_reset", "rapid reset, 32 connections", ["--conns", "32"], False),
    ("continuation_flood", "continuation_flood", "CONTINUATION frames without END_HEADERS", [], False),
    ("reset_wu0", "reset_window_update_0", "MadeYouReset: WINDOW_UPDATE 0 on each new stream", [], False),
    ("reset_wu_overflow", "reset_window_overflow", "MadeYouReset: WINDOW_UPDATE overflowing each stream's window",
     [], False),
    ("reset_data_window", "reset_data_over_window", "MadeYouReset: DATA 1 byte past each stream's window", [],
     False),
    ("ping_flood", "ping_flood", "PING flood, ACKs never read", [], False),
    ("settings_flood", "settings_flood", "SETTINGS flood, ACKs never read", [], False),
    ("empty_data_flood", "empty_data_flood", "empty DATA frames on an open stream, never reads", [], False),
    ("unknown_frames", "unknown_frame_flood", "frames of an unknown type", [], False),
    ("hpack_many_fields", "hpack_many_fields", "HPACK: ~16,000 one-byte indexed fields per block", [], False),
    ("hpack_table_churn", "hpack_table_churn", "HPACK: table size 0/4096 every block, evicting inserts", [], False),
    ("hpack_bomb", "hpack_bomb", "HPACK bomb: 16 KiB block decoding to 64 MB", [], False),
    ("oversized_headers", "oversized_headers", "12 KiB header, backend advertises MAX_HEADER_LIST_SIZE 8 KiB", [],
     False),
    ("slow_read_window0", "slow_read_window0", "4 clients x 100 server streams, window 0", [], False),
    ("slow_read_noread", "slow_read_noread", "4 clients x 100 server streams, socket never read", [], False),
    ("slowloris_preface", "slowloris_preface", "500 connections trickling the preface", [], False),
    ("slowloris_h2", "slowloris_h2_headers", "500 connections trickling a HEADERS frame", [], False),
    ("slowloris_h1", "slowloris_h1_headers", "500 connections trickling HTTP/1.1 request headers", [], True),
    ("idle_conns", "idle_connections", "4,000 idle HTTP/2 connections", [], False),
]


def cpu_ticks(pid):
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total


def status_kib(pid, key):
    """The sum of a /proc/PID/status field (VmRSS, VmHWM) over the process tree."""
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                total += next((int(line.split()[1]) for line in f if line.startswith(key + ":")), 0)
        except OSError:
            pass
    return total


def reset_hwm(pid):
    for p in tree(pid):
        try:
            with open("/proc/%d/clear_refs" % p, "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass


class RssSampler(threading.Thread):
    """Samples the process tree's VmRSS every 50 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.halt = pid, 0, threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            self.halt.wait(0.05)


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- the proxies: each returns (Popen, port) for a proxy in front of bport ----
# Front-end windows are the same for all: 64 KiB per stream (nghttpx and
# HAProxy: 65535), 1 MiB per connection where the proxy lets one set it
# (HAProxy 2.6 cannot: see README.md). Everything else is each proxy's default,
# but for one worker, no access log, and connection limits above the attacks'.

def p_grelay(args, bport, h1):
    port = free_port()
    listener = {"name": "edge", "address": "127.0.0.1:%d" % port, "virtual_hosts": [
        {"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "cluster": "c"}]}]}
    if h1:
        listener["grpc_web"] = True  # the listener that accepts HTTP/1.1
    cfg = {"workers": 1, "log_level": os.environ.get("ABUSE_GRELAY_LOG", "warn"), "listeners": [listener],
           "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:%d" % bport}]}]}
    path = write("grelay.yaml", json.dumps(cfg))
    return subprocess.Popen(["taskset", "-c", PROXY_CPU, args.grelay, "--config", path],
                            stderr=open(os.path.join(TMP, "grelay.err"), "w")), port


def p_nghttpx(args, bport, h1):
    port = free_port()
    argv = ["taskset", "-c", PROXY_CPU, "nghttpx", "--conf=/dev/null", "--workers=1", "--single-thread",
            "--frontend=127.0.0.1,%d;no-tls" % port, "--backend=127.0.0.1,%d;;proto=h2" % bport,
            "--frontend-http2-connection-window-size=1M", "--no-ocsp", "--errorlog-file=/dev/null"]
    return subprocess.Popen(argv, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL), port


def p_haproxy(args, bport, h1):
    port = free_port()
    path = write("haproxy.cfg", """global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:%d%s
    default_backend be
backend be
    server s1 127.0.0.1:%d proto h2
""" % (port, "" if h1 else " proto h2", bport))
    return subprocess.Popen(["taskset", "-c", PROXY_CPU, "haproxy", "-db", "-f", path], stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL), port


PROXIES = [("grelay", p_grelay), ("nghttpx", p_nghttpx), ("haproxy", p_haproxy)]


def start_backend():
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", CLIENT_CPU, PY, os.path.join(HERE, "backend.py"),
                             "127.0.0.1:%d" % port, "8192"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        stop(proc, 3)
        raise RuntimeError("backend did not start")
    return proc, port


def run_row(args, row, pname, pstart):
    rid, driver, _, extra, h1 = row
    backend, bport = start_backend()
    proxy = legit = attacker = None
    out = {"attack": rid, "proxy": pname}
    try:
        proxy, port = pstart(args, bport, h1)
        wait_port(port, proxy)
        legit = subprocess.Popen(["taskset", "-c", CLIENT_CPU, PY, os.path.join(HERE, "legit.py"), str(port),
                                  str(args.seconds), str(args.rate), str(args.timeout)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if legit.stdout.readline().strip() != b"ready":
            raise RuntimeError("legit client did not start")
        time.sleep(0.3)
        rss0 = status_kib(proxy.pid, "VmRSS")
        reset_hwm(proxy.pid)
        sampler = RssSampler(proxy.pid)
        sampler.start()
        t0 = cpu_ticks(proxy.pid)
        w0 = time.monotonic()
        if driver:
            # the attack runs a little longer than the legitimate calls, so it is on all through them
            attacker = subprocess.Popen(["taskset", "-c", CLIENT_CPU, PY, os.path.join(HERE, "attacks.py"), driver,
                                         str(port), str(args.seconds + 0.5)] + extra,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.2)
        legit.stdin.write(b"go\n")
        legit.stdin.flush()
        lout = legit.communicate(timeout=args.seconds + args.timeout + 30)[0]
        out["legit"] = json.loads(lout.decode().strip().splitlines()[-1])
        if attacker is not None:
            aout, aerr = attacker.communicate(timeout=args.seconds + 60)
            lines = aout.decode().strip().splitlines()
            out["attacker"] = json.loads(lines[-1]) if lines else {"driver_error": aerr.decode()[-300:]}
        out["wall_s"] = round(time.monotonic() - w0, 2)
        out["cpu_s"] = (cpu_ticks(proxy.pid) - t0) / CLK_TCK
        sampler.halt.set()
        sampler.join()
        out["rss_start_kib"] = rss0
        out["peak_rss_kib"] = max(sampler.peak, status_kib(proxy.pid, "VmHWM"))
        out["alive"] = proxy.poll() is None
    except Exception as e:  # a broken row must not end the run: report it
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        for p in (attacker, legit):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if proxy is not None:
            out.setdefault("alive", proxy.poll() is None)
        stop(proxy, 3)
        stop(backend, 3)
    return out


# ---- the report ----

# Closed-loop rows: the attacker's pace follows the proxy's answers (a call per
# answer, a new connection per one ended), so a proxy that handles an attack
# unit faster is sent more of them, and its CPU seconds grow with its speed.
# Those rows also get CPU per attack unit (docs/security.md says why), and
# grelay's CPU counts as behind only when both figures are. Per row: the
# attacker's count that is one unit the proxy handled, and its name.
UNITS = {
    "oversized_headers": ("calls_sent", "call"),          # each one answered or refused by the proxy
    "hpack_table_churn": ("streams_answered", "call"),    # valid calls, answered through the backend
    "hpack_many_fields": ("connections", "conn"),         # a connection ends after one or two blocks
    "hpack_bomb": ("connections", "conn"),
}


def per_unit(r):
    """(µs of proxy CPU per attack unit, unit name), or None for an open-loop row."""
    key = UNITS.get(r["attack"])
    n = (r.get("attacker") or {}).get(key[0], 0) if key else 0
    return (r["cpu_s"] * 1e6 / n, key[1]) if n else None

def attacker_summary(st):
    if not st:
        return ""
    parts = []
    if "driver_error" in st:
        parts.append("driver error: " + st["driver_error"])
    for k in ("streams_reset", "streams_provoked", "calls_sent", "continuation_frames", "frames_sent",
              "streams_held", "open_at_peak"):
        if k in st:
            parts.append("%s %s" % (k.replace("_", " "), fmt_n(st[k])))
    if "streams_answered" in st:
        parts.append("answered %s" % fmt_n(st["streams_answered"]))
    parts.append("conns %s" % fmt_n(st.get("connections", 0)))
    ends = {k: v for k, v in st.items() if k.startswith(("goaway_", "rst_", "conn_end", "connect_failed"))}
    for k, v in sorted(ends.items(), key=lambda kv: -kv[1]):
        parts.append("%s x%s" % (k.replace("goaway_", "GOAWAY ").replace("rst_", "RST ").replace("conn_end: ", ""),
                                 fmt_n(v)))
    for k in ("ended_by_proxy", "holders_ended_by_proxy", "conn_window_stalled", "conn_stalled_replaced"):
        if st.get(k):
            parts.append("%s %s" % (k.replace("_", " "), st[k]))
    return "; ".join(parts)


def fmt_n(n):
    if n >= 10_000_000:
        return "%.0fM" % (n / 1e6)
    if n >= 10_000:
        return "%.0fk" % (n / 1e3)
    return str(n)


def cells(r, base):
    if "error" in r and "legit" not in r:
        return ["-", "-", "-", "-", "-", "-", "-", "-", "row failed: " + r["error"]]
    lg = r["legit"]
    ok = 100.0 * lg["ok"] / lg["calls"] if lg["calls"] else 0
    b50 = base.get(r["proxy"], {}).get("legit", {}).get("p50_ms")
    ratio = "%.1fx" % (lg["p50_ms"] / b50) if lg["p50_ms"] and b50 else "-"
    note = attacker_summary(r.get("attacker"))
    if not r.get("alive", True):
        note = "**proxy died**; " + note
    if lg["failures"]:
        note = "legit failures: %s; %s" % (", ".join("%s %d" % kv for kv in lg["failures"].items()), note)
    pu = per_unit(r)
    return ["%.2f" % r["cpu_s"], "%.0f/%s" % pu if pu else "-", "%.1f" % (r["peak_rss_kib"] / 1024), "%.1f%%" % ok,
            "%.2f" % lg["p50_ms"] if lg["p50_ms"] is not None else "-", ratio,
            "%.0f" % lg["p99_ms"] if lg["p99_ms"] is not None else "-", "%.0f" % lg["longest_gap_ms"], note]


def behind(rows_of_attack, base):
    """Where grelay is behind the best peer on this attack (with a noise margin):
    CPU > 1.25x and +0.1 s; peak RSS > 1.25x and +4 MiB; legit success lower;
    p50 > 1.5x and +1 ms."""
    by = {r["proxy"]: r for r in rows_of_attack if "legit" in r}
    g = by.get("grelay")
    peers = [r for p, r in by.items() if p != "grelay"]
    if g is None or not peers:
        return "-"
    out = []
    okr = lambda r: r["legit"]["ok"] / max(1, r["legit"]["calls"])
    if g["legit"]["ok"] < g["legit"]["calls"]:
        out.append("legit %.1f%%" % (100 * okr(g)))
    if okr(g) < max(okr(r) for r in peers):
        out.append("success")
    best_cpu = min(r["cpu_s"] for r in peers)
    units = [per_unit(r) for r in [g] + peers]
    unit_behind = None in units or units[0][0] > 1.25 * min(u[0] for u in units[1:])
    if g["cpu_s"] > 1.25 * best_cpu and g["cpu_s"] - best_cpu > 0.1 and unit_behind:
        out.append("CPU")
    best_rss = min(r["peak_rss_kib"] for r in peers)
    if g["peak_rss_kib"] > 1.25 * best_rss and g["peak_rss_kib"] - best_rss > 4096:
        out.append("RSS")
    p50s = [r["legit"]["p50_ms"] for r in peers if r["legit"]["p50_ms"] is not None]
    gp = g["legit"]["p50_ms"]
    if p50s and (gp is None or (gp > 1.5 * min(p50s) and gp - min(p50s) > 1)):
        out.append("p50")
    return ", ".join(out) if out else "no"


def versions(args):
    out = []
    r = subprocess.run([args.grelay, "--version"], capture_output=True, text=True)
    out.append(((r.stdout + r.stderr).strip().splitlines() or ["grelay ?"])[0][:60])
    for cmd in (["nghttpx", "--version"], ["haproxy", "-v"]):
        if shutil.which(cmd[0]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            out.append(" ".join((r.stdout + r.stderr).split()[:3]))  # "HAProxy version 2.6.12-1+deb12u4"
    import grpc
    out.append("grpcio %s (backend and legit client)" % grpc.__version__)
    return "; ".join(out)


def report(args, results, elapsed):
    cpu = open("/proc/cpuinfo").read()
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "?")
    load = open("/proc/loadavg").read().split()[:3]
    base = {r["proxy"]: r for r in results if r["attack"] == "baseline"}
    lines = ["# grelay abuse bench, %s" % datetime.date.today().isoformat(), "",
             "Machine: %d cores (%s), Linux %s, load average at the end %s. Each proxy runs one worker pinned to "
             "CPU %s; the grpcio backend, the legitimate client and the attacker share CPU %s. Per row: a fresh "
             "backend and proxy, %g s of attack, legitimate unary calls (100 B) at %g/s on their own connection, "
             "%g s timeout each. Whole run: %.0f s." % (os.cpu_count(), model, platform.release(), " ".join(load),
                                                      PROXY_CPU, CLIENT_CPU, args.seconds, args.rate,
                                                      args.timeout, elapsed), "",
             "Versions: " + versions(args), "",
             "Columns: proxy CPU seconds (utime + stime) over the row; on the closed-loop rows (the attacker "
             "sends more the faster the proxy answers), CPU µs per attack unit too (a call, or a connection "
             "where each ends after a block or two: docs/security.md); peak RSS of the proxy (MiB, sampled every "
             "50 ms and VmHWM); legitimate calls that succeeded; their median latency, and that median over the "
             "same proxy's no-attack baseline; p99 latency; the longest stretch with no legitimate success; what "
             "the attacker saw. \"grelay behind\" names where grelay is worse than the best peer (CPU or RSS "
             "over 1.25x and by more than 0.1 s or 4 MiB, and on closed-loop rows CPU per unit over 1.25x as "
             "well; median over 1.5x and by more than 1 ms; any legitimate call lost).", "",
             "| attack | proxy | CPU s | CPU µs/unit | peak RSS MiB | legit ok | p50 ms | p50 vs base | p99 ms "
             "| longest gap ms | attacker saw |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    verdicts = []
    for row in ROWS:
        rs = [r for r in results if r["attack"] == row[0]]
        if not rs:
            continue
        for r in rs:
            lines.append("| %s | %s | %s |" % (row[0], r["proxy"], " | ".join(cells(r, base))))
        verdicts.append((row[0], row[2], behind(rs, base)))
    lines += ["", "| attack | what it does | grelay behind the best peer on |", "| --- | --- | --- |"]
    lines += ["| %s | %s | %s |" % v for v in verdicts]
    lines += ["", "Rerun: `bench/abuse/run.sh [--seconds N]` (bench/abuse/README.md).", ""]
    text = "\n".join(lines)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    with open(os.path.join(args.out, "abuse-%s.md" % stamp), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "abuse-%s.json" % stamp), "w") as f:
        json.dump(results, f, indent=1)
    print(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grelay", required=True)
    ap.add_argument("--seconds", type=float, default=5, help="attack length per row")
    ap.add_argument("--rate", type=float, default=50, help="legitimate calls per second")
    ap.add_argument("--timeout", type=float, default=2, help="legitimate call timeout, seconds")
    ap.add_argument("--attacks", default="", help="row ids, comma-separated (default: all; baseline always runs)")
    ap.add_argument("--proxies", default="", help="comma-separated (default: grelay,nghttpx,haproxy)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "results"))
    args = ap.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the proxies and the attacker
    keep = set(args.attacks.split(",")) if args.attacks else None
    rows = [r for r in ROWS if keep is None or r[0] in keep or r[0] == "baseline"]
    unknown = (keep or set()) - {r[0] for r in ROWS}
    if unknown:
        sys.exit("unknown attacks: %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(r[0] for r in ROWS)))
    proxies = [(n, f) for n, f in PROXIES if (not args.proxies or n in args.proxies.split(","))
               and (n == "grelay" or shutil.which(n))]
    results = []
    t0 = time.monotonic()
    for row in rows:
        for pname, pstart in proxies:
            r = run_row(args, row, pname, pstart)
            results.append(r)
            lg = r.get("legit", {})
            print("%-19s %-8s cpu %5.2f s  rss %6.1f MiB  legit %3d/%3d  p50 %s ms  %s" % (
                row[0], pname, r.get("cpu_s", 0), r.get("peak_rss_kib", 0) / 1024, lg.get("ok", 0),
                lg.get("calls", 0), lg.get("p50_ms"), r.get("error") or attacker_summary(r.get("attacker"))),
                file=sys.stderr, flush=True)
    report(args, results, time.monotonic() - t0)
    if not os.environ.get("ABUSE_KEEP"):
        shutil.rmtree(TMP, ignore_errors=True)  # ABUSE_KEEP=1 keeps the proxies' logs


if __name__ == "__main__":
    main()
