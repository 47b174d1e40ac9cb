#!/usr/bin/python3
"""grelay against the proxies users would pick instead, side by side, in one run.

Every proxy runs as an h2c gRPC proxy with one worker, pinned to CPU 0, in
front of the same echo backend (the C one, grpc-go, or each in turn:
--backend c,go); the backend and h2load share CPU 1.
Targets alternate round by round (A B C D ... A B C D ...) and the report
gives medians, so drift hits all alike. The figure that matters is requests
per proxy CPU-second (the load generator saturates before the proxies do).

Usage: bench.py --grelay BIN --stream-load BIN --conn-load BIN [--backend c|go|c,go] [--c-backend BIN]
                [--go-backend BIN] [--rounds N] [--seconds S] [--out DIR] [--tag T]
With no --scenarios it runs them all, with both backends by default; the log_
scenarios (accesslog.py) have every proxy write an access-log line per call.
Prints a Markdown table, writes it and a PNG plot to --out (DATE[-T].md).
"""
import argparse
import atexit
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from procs import free_port, stop, tree, wait_port  # noqa: E402

# conns.py and syscalls.py import this module as "bench": run as a script,
# let them share this one (its TMP, its TARGETS) rather than load a copy.
sys.modules.setdefault("bench", sys.modules[__name__])

CLK_TCK = os.sysconf("SC_CLK_TCK")
TMP = tempfile.mkdtemp(prefix="grelay-bench-")
if not os.environ.get("GRELAY_BENCH_KEEP"):  # GRELAY_BENCH_KEEP=1 keeps the logs (grelay.err, h2load.log)
    atexit.register(shutil.rmtree, TMP, ignore_errors=True)


def proc_sum(pid, read):
    """read(pid) summed over the process tree (a proxy may fork workers)."""
    total = 0
    for p in tree(pid):
        try:
            total += read(p)
        except OSError:
            pass  # exited meanwhile
    return total


def _ticks(p):
    with open("/proc/%d/stat" % p) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss(p):
    with open("/proc/%d/status" % p) as f:
        return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)


def cpu_ticks(pid):
    return proc_sum(pid, _ticks)


def rss_kib(pid):
    return proc_sum(pid, _rss)


def thread_ticks(pid):
    """CPU ticks of each thread of pid: {tid: ticks} (to see how workers share the load)."""
    out = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(t)] = int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return out


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- the targets: each returns (Popen, port) for a proxy in front of backend_port ----
# With tls, the proxy terminates TLS (ALPN h2) with the bench's own certificate
# and still speaks h2c to the backend. With log (a file path; the log_
# scenarios, accesslog.py), the proxy writes an access-log line per call to
# that file, as bench/README.md ("Logging") says for each.

def cert():
    """A self-signed P-256 certificate for 127.0.0.1: (cert, key, both in one PEM)."""
    crt, key, pem = (os.path.join(TMP, n) for n in ("bench.crt", "bench.key", "bench.pem"))
    if not os.path.exists(pem):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        with open(pem, "w") as f:
            f.write(open(crt).read() + open(key).read())
    return crt, key, pem


def t_direct(args, bport, tls=False, workers=1, log=None):
    return None, bport


# grelay-text's access log: a text line shaped like nghttpx's default
# (combined) one, about 120 bytes against the JSON line's 450.
GRELAY_TEXT_LOG = '%PEER% - - [%START_TIME%] "POST %PATH% HTTP/2" %HTTP_STATUS% %RESPONSE_BYTES% "-" "%USER_AGENT%"'


# The core every proxy's worker is pinned to: CPU 0, away from the load
# generator and the backend on CPU 1; a scenario's "proxy_cpu" overrides it
# while measure() runs that scenario (u100_1x1_onecore: all on CPU 1).
PROXY_CPU = "0"


def t_grelay(args, bport, tls=False, workers=1, request_id=True, log=None, log_format="json"):
    port = free_port()
    listener = {"name": "l", "address": "127.0.0.1:%d" % port, "virtual_hosts": [
        {"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "cluster": "c"}]}]}
    if tls:
        crt, key, _ = cert()
        listener["tls"] = {"cert_chain": crt, "private_key": key}
    cfg = {"workers": workers, "log_level": os.environ.get("BENCH_GRELAY_LOG", "warn"), "listeners": [listener],
           "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:%d" % bport}]}]}
    if not request_id:
        cfg["request_id"] = {"generate": False}
    admin = None
    if log:  # and the admin port, whose /metrics count the lines dropped (accesslog.py)
        admin = free_port()
        cfg["admin"] = {"address": "127.0.0.1:%d" % admin}
        cfg["access_log"] = {"path": log, "format": log_format}
        if log_format == "text":
            cfg["access_log"]["template"] = GRELAY_TEXT_LOG
    path = write("grelay.yaml", json.dumps(cfg))
    cpus = PROXY_CPU if workers == 1 else "0-%d" % (workers - 1)
    proc = subprocess.Popen(["taskset", "-c", cpus, args.grelay, "--config", path],
                            stderr=open(os.path.join(TMP, "grelay.err"), "w"))
    proc.admin_port = admin
    return proc, port


def t_grelay_noid(args, bport, tls=False, workers=1, log=None):
    """grelay without its generated x-request-id per call, which no peer
    makes: like for like. Runs only when --only names it."""
    return t_grelay(args, bport, tls, workers, request_id=False, log=log)


def t_grelay_text(args, bport, tls=False, workers=1, log=None):
    """grelay with a text access log shaped like nghttpx's default line
    (GRELAY_TEXT_LOG) instead of its JSON one: like for like in the log_
    scenarios. Runs only when --only names it, and only in those."""
    return t_grelay(args, bport, tls, workers, log=log, log_format="text")


# Fair settings (bench/README.md): no target logs per call, and every
# target's windows are raised to at least grelay's defaults (stream 64 KiB,
# connection 1 MiB), never lowered, so flow control stalls none of them.
# nghttpx's backend connection window stays at its default 2^31-1.
NGHTTPX_FAIR = ["--frontend-http2-window-size=65536", "--frontend-http2-connection-window-size=1048576",
                "--backend-http2-window-size=65536"]


def t_nghttpx(args, bport, tls=False, workers=1, fair=True, log=None):
    port = free_port()
    argv = ["taskset", "-c", PROXY_CPU, "nghttpx", "--conf=/dev/null", "--workers=1", "--single-thread",
            "--frontend=127.0.0.1,%d%s" % (port, "" if tls else ";no-tls"), "--backend=127.0.0.1,%d;;proto=h2" % bport,
            "--no-ocsp", "--errorlog-file=/dev/null"]
    # No --accesslog-file: with one (even /dev/null) nghttpx formats and
    # write()s a line per call, which no other target does.
    argv += NGHTTPX_FAIR if fair else ["--accesslog-file=/dev/null"]
    if log:  # its default format, one write() per line (nghttpx has no buffered access log)
        argv = [a for a in argv if not a.startswith("--accesslog-file=")] + ["--accesslog-file=" + log]
    if tls:
        crt, key, _ = cert()
        argv += [key, crt]
    return subprocess.Popen(argv, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL), port


def t_nghttpx_old(args, bport, tls=False, workers=1, log=None):
    """nghttpx as the bench started it until 2026-12-01: an access log to
    /dev/null and its default windows (connection window 65535). Runs only
    when --only names it, to show what the fair settings change."""
    return t_nghttpx(args, bport, tls, workers, fair=False, log=log)


def t_haproxy(args, bport, tls=False, workers=1, log=None, mode="http"):
    port = free_port()
    bind = "ssl crt %s alpn h2" % cert()[2] if tls else "proto h2"
    # HAProxy 2.6 writes no file itself: with log, its raw HTTP log lines go
    # to stdout (one write() each), which is that file (bench/README.md).
    # dontlognull: wait_port()'s probe (a connection without a request) is no call.
    glog, dlog = ("    log stdout format raw local0\n",
                  "    log global\n    option httplog\n    option dontlognull\n") if log else ("",) * 2
    if mode == "tcp":  # bytes through, no HTTP/2; a 64 KiB buffer moves a 16 KiB message in one read
        bind, glog, dlog, log = ("ssl crt %s alpn h2" % cert()[2] if tls else ""), "    tune.bufsize 65536\n", "", None
    path = write("haproxy.cfg", """global
    nbthread 1
    maxconn 9000
%sdefaults
    mode %s
%s    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:%d %s
    default_backend be
backend be
    server s1 127.0.0.1:%d%s
""" % (glog, mode, dlog, port, bind, bport, " proto h2" if mode == "http" else ""))
    return subprocess.Popen(["taskset", "-c", PROXY_CPU, "haproxy", "-db", "-f", path], stderr=subprocess.DEVNULL,
                            stdout=open(log, "w") if log else subprocess.DEVNULL), port


# nginx's access log: its default format; buffer= lets it write lines in
# batches as grelay does (nghttpx, HAProxy and Caddy cannot), flush=1s bounds
# how long a line waits.
NGINX_LOG = "%s combined buffer=64k flush=1s"


def t_haproxy_tcp(args, bport, tls=False, workers=1, log=None):
    """HAProxy as a TCP relay (mode tcp): every byte through the kernel as an
    HTTP/2 proxy moves it, with no HTTP/2 of its own and one backend
    connection per client connection. Not a peer but a floor: its CPU per
    message is about what the sockets cost (bench/README.md, "The kernel's
    floor"). Runs only when --only names it."""
    return t_haproxy(args, bport, tls, workers, mode="tcp")


def t_nginx(args, bport, tls=False, workers=1, log=None):
    port = free_port()
    d = tempfile.mkdtemp(dir=TMP)
    ssl = ""
    if tls:
        crt, key, _ = cert()
        # nginx 1.22's default ssl_protocols lacks TLSv1.3 (added to the
        # default in 1.23.4); every other target offers it.
        ssl = " ssl;\n        ssl_certificate %s;\n        ssl_certificate_key %s;\n        ssl_protocols TLSv1.2 TLSv1.3" % (
            crt, key)
    path = write("nginx.conf", """worker_processes 1;
daemon off;
master_process off;
error_log stderr crit;
pid %s/nginx.pid;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
    access_log %s;
    client_body_temp_path %s/body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    keepalive_requests 100000000;   # default 1000 closes busy HTTP/2 connections
    client_max_body_size 0;         # default 1 MiB ends a long bidi stream
    upstream be { server 127.0.0.1:%d; keepalive 64; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:%d http2%s;
        http2_max_concurrent_streams 1024;
        http2_chunk_size 16k;           # default 8k: grelay and the others send 16 KiB DATA frames
        location / { grpc_pass grpc://be; grpc_buffer_size 16k; }   # default one page (4k)
    }
}
""" % (d, NGINX_LOG % log if log else "off", d, d, d, d, d, bport, port, ssl))
    return subprocess.Popen(["taskset", "-c", PROXY_CPU, "nginx", "-c", path, "-p", d], stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL), port


# Caddy's access log for the site, JSON lines to a file; roll_disabled: its
# default rolls the file at 100 MiB, and every line must stay countable.
CADDY_LOG = "\n    log {\n        output file %s {\n            roll_disabled\n        }\n    }"


def t_caddy(args, bport, tls=False, workers=1, log=None):
    port = free_port()
    site = "http://127.0.0.1:%d {" % port
    if tls:
        crt, key, _ = cert()
        site = "https://127.0.0.1:%d {\n    tls %s %s" % (port, crt, key)
    path = write("Caddyfile", """{
    admin off
    auto_https off
    servers {
        protocols h1 h2 h2c
    }
}
%s
    reverse_proxy h2c://127.0.0.1:%d%s
}
""" % (site, bport, CADDY_LOG % log if log else ""))
    env = dict(os.environ, GOMAXPROCS="1", HOME=TMP, XDG_DATA_HOME=TMP, XDG_CONFIG_HOME=TMP)
    return subprocess.Popen(["taskset", "-c", PROXY_CPU, "caddy", "run", "--config", path, "--adapter", "caddyfile"],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env), port


TARGETS = [("direct", t_direct), ("grelay", t_grelay), ("grelay-noid", t_grelay_noid), ("grelay-text", t_grelay_text),
           ("nghttpx", t_nghttpx),
           ("nghttpx-old", t_nghttpx_old),
           ("haproxy", t_haproxy), ("haproxy-tcp", t_haproxy_tcp), ("nginx", t_nginx), ("caddy", t_caddy)]
OPT_IN = ("nghttpx-old", "grelay-noid", "grelay-text", "haproxy-tcp")  # run only when --only names them
FLOORS = ("haproxy-tcp",)  # not proxies of calls: no target's "best peer"
NEW_PEERS = ("grelay", "nghttpx", "haproxy")  # issue 16's new scenarios run against these
LOG_PEERS = ("grelay", "grelay-text", "nghttpx", "haproxy", "nginx", "caddy")  # the access-log scenarios
LOG_ONLY = ("grelay-text",)  # targets that differ from another only when they log: the log_ scenarios alone


def is_peer(name):
    """A proxy grelay's targets compare with: not direct, not a floor, not grelay itself."""
    return name != "direct" and name not in FLOORS and not name.startswith("grelay")


def available(name):
    return name.split("-")[0] in ("direct", "grelay") or shutil.which(name.split("-")[0]) is not None


# ---- load ----

def _write_bytes(name, data):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def h2load_counts(out):
    """(started, done, answered 2xx) from h2load's summary."""
    started = done = ok = 0
    for line in out.splitlines():
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            done = int(parts[parts.index("done") - 1])
            started = int(parts[parts.index("started") - 1])
        if line.startswith("status codes:"):
            ok = int(line.split()[2])
    return started, done, ok


def h2load(port, body, conns, streams, seconds, rps=None, tls=False):
    log = os.path.join(TMP, "h2load.log")
    if os.path.exists(log):
        os.unlink(log)  # h2load appends
    # No --warm-up-time: h2load would leave the warm-up's requests out of its
    # count while the proxy's CPU time (read around this run) includes them.
    # measure() warms the target up with a run of its own.
    argv = ["taskset", "-c", "1", "h2load", "-c", str(conns), "-m", str(streams), "-D", str(seconds),
            "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
            "--log-file=" + log, "%s://127.0.0.1:%d/bench.Echo/Unary" % ("https" if tls else "http", port)]
    if rps:
        argv.insert(-1, "--rps=%d" % rps)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = r.stdout
    started, done, ok = h2load_counts(out)
    lat = []
    with open(log) as f:
        for line in f:
            cols = line.split()
            if len(cols) >= 3 and cols[1] == "200":
                lat.append(int(cols[2]))
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] if lat else 0
    return {"requests": done, "ok": ok, "started": started, "p50_us": pct(0.50), "p99_us": pct(0.99),
            "p999_us": pct(0.999), "stdout": out}


def stream_load(args, port, sc, seconds):
    """Bidi echo messages through the target (bench/load/stream_load.c)."""
    argv = ["taskset", "-c", "1", args.stream_load, "127.0.0.1", str(port), str(sc["conns"]), str(sc["streams"]),
            str(sc["size"]), str(seconds), str(sc["inflight"])]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    f = r.stdout.split()
    if r.returncode != 0 or len(f) < 8:
        return {"requests": 0, "ok": 0, "p50_us": 0, "p99_us": 0, "stdout": r.stdout + r.stderr}
    n = int(f[1])
    return {"requests": n, "ok": n, "p50_us": 0, "p99_us": 0, "mb_s": int(f[3]) / float(f[5]) / 1e6,
            "stdout": r.stdout}


def load(args, port, sc, seconds, warm=False):
    if sc.get("kind") == "bidi":
        return stream_load(args, port, sc, 1 if warm else seconds)
    if warm:
        return h2load(port, sc["body"], 1, 1, 1, tls=sc.get("tls", False))
    return h2load(port, sc["body"], sc["conns"], sc["streams"], seconds, sc.get("rps"), sc.get("tls", False))


# Scenario kinds measured by a module of their own: kind -> (module, function).
MEASURED_BY = {"held": ("conns", "held"), "conn": ("conns", "conn"), "log": ("accesslog", "measure")}


def measure(args, name, start, bport, scenario, workers=1, before_stop=None):
    """One target in one scenario; before_stop(proc), if given, adds its
    figures to the result while the proxy still runs."""
    if scenario.get("kind") in MEASURED_BY:
        module, fn = MEASURED_BY[scenario["kind"]]
        return getattr(__import__(module), fn)(args, name, start, bport, scenario)
    global PROXY_CPU
    PROXY_CPU = scenario.get("proxy_cpu", "0")
    try:
        proc, port = start(args, bport, scenario.get("tls", False), workers)
    finally:
        PROXY_CPU = "0"
    try:
        if proc is not None:
            wait_port(port, proc)
        warm = load(args, port, scenario, 1, warm=True)  # warm: first connections, pools
        pid = proc.pid if proc is not None else None
        t0 = cpu_ticks(pid) if pid else 0
        th0 = thread_ticks(pid) if pid else {}
        res = load(args, port, scenario, args.seconds)
        t1 = cpu_ticks(pid) if pid else 0
        th1 = thread_ticks(pid) if pid else {}
        res["thread_cpu_s"] = sorted(((th1[t] - th0.get(t, 0)) / CLK_TCK for t in th1), reverse=True)
        res["cpu_s"] = (t1 - t0) / CLK_TCK
        res["rss_kib"] = rss_kib(pid) if pid else 0
        res["rps"] = res["requests"] / args.seconds
        res["warm"] = {k: warm.get(k, 0) for k in ("requests", "ok", "started")}  # the access log has these too
        res["req_per_cpu_s"] = res["requests"] / res["cpu_s"] if res["cpu_s"] > 0 else 0
        if scenario.get("kind") == "big":  # MB each way (the echo is as large as the request)
            res["mb_s"] = res["rps"] * (scenario["size"] + 5) / 1e6
            res["mb_per_cpu_s"] = res["req_per_cpu_s"] * (scenario["size"] + 5) / 1e6
        # h2load counts the calls still in flight when the time is up as failed:
        # allow those (connections x streams), flag anything more.
        if res["ok"] < res["requests"] - scenario["conns"] * scenario["streams"] or res["requests"] == 0:
            res["error"] = "only %d of %d requests succeeded" % (res["ok"], res["requests"])
            if os.environ.get("BENCH_DEBUG"):
                print(res["stdout"], file=sys.stderr)
        if before_stop is not None and proc is not None:
            res.update(before_stop(proc))
        return res
    finally:
        stop(proc)


# What a measurement that raised reports: every figure the tables read, 0.
FAILED = {k: 0 for k in ("requests", "ok", "rps", "req_per_cpu_s", "cpu_s", "p50_us", "p99_us", "p999_us", "mb_s",
                         "mb_per_cpu_s", "resumed", "rss_kib")}


def safe_measure(args, name, start, bport, sc):
    """measure(), but a target that fails to start or a load tool that
    breaks is one failed result in the report, not the end of the run."""
    try:
        return measure(args, name, start, bport, sc)
    except Exception as e:  # noqa: BLE001
        return dict(FAILED, thread_cpu_s=[], error="failed: %s" % e)


def idle_rss(args, name, start, bport, n=2000, idle_s=3.0):
    """RSS per idle HTTP/2 client connection after one call each.

    The clients stay idle but, like every real HTTP/2 client, keep reading
    and answering what the proxy sends (SETTINGS ACKs, PINGs) for idle_s
    seconds before the reading is taken."""
    import h2.config
    import h2.connection
    import h2.events
    proc, port = start(args, bport)
    conns = []
    try:
        wait_port(port, proc)
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        frame = b"\x00\x00\x00\x00\x05hello"
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            c.initiate_connection()
            c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "b"),
                               (":path", "/bench.Echo/Unary"), ("content-type", "application/grpc"),
                               ("te", "trailers")])
            c.send_data(1, frame, end_stream=True)
            s.sendall(c.data_to_send())
            done = False
            while not done:  # until the call has ended
                d = s.recv(65536)
                if not d:
                    raise RuntimeError("%s closed an idle connection" % name)
                for ev in c.receive_data(d):
                    done |= isinstance(ev, h2.events.StreamEnded)
                s.sendall(c.data_to_send())
            s.setblocking(False)
            conns.append((s, c))
        deadline = time.monotonic() + idle_s
        while time.monotonic() < deadline:
            time.sleep(0.25)
            for s, c in conns:  # answer whatever came meanwhile
                try:
                    d = s.recv(65536)
                except BlockingIOError:
                    continue
                if not d:
                    raise RuntimeError("%s closed an idle connection" % name)
                c.receive_data(d)
                s.sendall(c.data_to_send())
        after = rss_kib(proc.pid)
        return {"rss_per_conn_kib": (after - before) / n, "rss_kib": after}
    finally:
        for s, _ in conns:
            s.close()
        stop(proc)


SCENARIOS = [
    {"id": "u100_4x16", "title": "unary 100 B, 4 conns x 16 streams", "size": 100, "conns": 4, "streams": 16},
    {"id": "u100_16x64", "title": "unary 100 B, 16 conns x 64 streams", "size": 100, "conns": 16, "streams": 64},
    {"id": "u100_100x1", "title": "unary 100 B, 100 conns x 1 stream", "size": 100, "conns": 100, "streams": 1},
    {"id": "u100_1x1", "title": "unary 100 B, 1 conn x 1 stream (latency)", "size": 100, "conns": 1, "streams": 1},
    # The same with the proxy on CPU 1 too: every hop a wake-up on the same
    # core, so the p50 added is the proxy's own time, not the VM's cross-core
    # wake-ups (about 30 us a hop here, four a proxied call: bench/README.md).
    {"id": "u100_1x1_onecore", "title": "unary 100 B, 1 conn x 1 stream, the proxy on the core of the load "
     "generator and the backend (latency without cross-core wake-ups)", "size": 100, "conns": 1, "streams": 1,
     "proxy_cpu": "1"},
    {"id": "u16k_4x4", "title": "unary 16 KiB, 4 conns x 4 streams", "size": 16384, "conns": 4, "streams": 4},
    {"id": "u16k_64x1", "title": "unary 16 KiB, 64 conns x 1 stream", "size": 16384, "conns": 64, "streams": 1},
    {"id": "bidi100_4x4", "title": "bidi streaming, 100 B messages, 4 conns x 4 streams, 16 messages in flight each",
     "kind": "bidi", "size": 100, "conns": 4, "streams": 4, "inflight": 16},
    {"id": "bidi16k_4x16", "title": "bidi streaming, 16 KiB messages, 4 conns x 16 streams, ping-pong (one message "
     "in flight each, 64 in all)", "kind": "bidi", "size": 16384, "conns": 4, "streams": 16, "inflight": 1},
    {"id": "tls_u100_4x16", "title": "TLS front end: unary 100 B, 4 conns x 16 streams", "tls": True, "size": 100,
     "conns": 4, "streams": 16},
    {"id": "tls_u16k_4x4", "title": "TLS front end: unary 16 KiB, 4 conns x 4 streams", "tls": True, "size": 16384,
     "conns": 4, "streams": 4},
    # Issue 16's scenarios: against nghttpx and HAProxy (NEW_PEERS); "judge"
    # runs with the grpc-go backend only when it is in --backend (the one the
    # targets are judged with), else with the first: a connection's setup does
    # not depend on how the backend writes.
    {"id": "u4m_4x1", "title": "unary 4 MiB, 4 conns x 1 stream: MB per proxy CPU-second each way", "kind": "big",
     "size": 4 << 20, "conns": 4, "streams": 1, "targets": NEW_PEERS + ("direct",)},
    {"id": "held10k", "title": "10,000 calls in flight: 100 conns x 100 bidi calls held open (100 B echoed each, "
     "then quiet for 4 s)", "kind": "held", "size": 100, "conns": 100, "streams": 100, "hold_s": 4,
     "targets": NEW_PEERS},
    {"id": "churn_h2c", "title": "connection churn: new h2c connections, one unary 100 B call each, 8 at a time",
     "kind": "conn", "mode": "h2c", "size": 100, "threads": 8, "conns": 8, "streams": 1, "targets": NEW_PEERS,
     "backend": "judge"},
    {"id": "tls12_full", "title": "TLS 1.2 full handshakes (P-256, ECDHE), one unary 100 B call per connection, "
     "8 at a time", "kind": "conn", "mode": "tls1.2", "size": 100, "threads": 8, "conns": 8, "streams": 1,
     "targets": NEW_PEERS, "backend": "judge"},
    {"id": "tls12_resumed", "title": "TLS 1.2 resumed handshakes (session tickets), one unary 100 B call per "
     "connection, 8 at a time", "kind": "conn", "mode": "tls1.2-resume", "size": 100, "threads": 8, "conns": 8,
     "streams": 1, "targets": NEW_PEERS, "backend": "judge"},
    {"id": "tls13_full", "title": "TLS 1.3 full handshakes (P-256, X25519), one unary 100 B call per connection, "
     "8 at a time", "kind": "conn", "mode": "tls1.3", "size": 100, "threads": 8, "conns": 8, "streams": 1,
     "targets": NEW_PEERS, "backend": "judge"},
    {"id": "tls13_resumed", "title": "TLS 1.3 resumed handshakes (session tickets, PSK with ECDHE), one unary 100 B "
     "call per connection, 8 at a time", "kind": "conn", "mode": "tls1.3-resume", "size": 100, "threads": 8,
     "conns": 8, "streams": 1, "targets": NEW_PEERS, "backend": "judge"},
    # Issue 16's second logging scenario: the unary calls of "base" with every
    # proxy writing an access-log line per call to a file (accesslog.py).
    {"id": "log_u100_4x16", "title": "access log to a file, every proxy: unary 100 B, 4 conns x 16 streams",
     "kind": "log", "size": 100, "conns": 4, "streams": 16, "targets": LOG_PEERS, "base": "u100_4x16"},
    {"id": "log_u100_16x64", "title": "access log to a file, every proxy: unary 100 B, 16 conns x 64 streams",
     "kind": "log", "size": 100, "conns": 16, "streams": 64, "targets": LOG_PEERS, "base": "u100_16x64"},
]
LATENCY = ("u100_1x1", "u100_1x1_onecore")  # the 1x1 scenarios: judged by the p50 added over direct
# Fixed-rate latency: a share of the slowest proxy's peak at 4x16 (run_fixed()).
FIXED = [("fixed_rate", 0.5, "p99 at a fixed rate (half the slowest proxy's peak at 4x16), 4 conns x 16 streams"),
         ("fixed_rate80", 0.8, "p99 and p99.9 at 80% of the slowest proxy's peak at 4x16, 4 conns x 16 streams")]
# workers: 2 against workers: 1, grelay alone (see scaling()).
SCALING = {"id": "scaling", "size": 100, "conns": 16, "streams": 16}


BACKENDS = {"c": "C (nghttp2)", "go": "grpc-go"}


def start_backend(args, kind):
    """The echo backend on CPU 1: (Popen, port). grpc-go gets one P, as the
    C backend has one thread (bench/README.md, The backends)."""
    port = free_port()
    binary = args.c_backend if kind == "c" else args.go_backend
    if not binary:
        sys.exit("--backend %s needs --%s-backend BIN" % (kind, kind))
    env = dict(os.environ, GOMAXPROCS="1") if kind == "go" else None
    proc = subprocess.Popen(["taskset", "-c", "1", binary, "127.0.0.1", str(port)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    return proc, port


def judge(backends):
    """The backend the issue's targets are judged with: grpc-go if it runs."""
    return "go" if "go" in backends else backends[0]


def run_scenarios(args, targets, bport, be, backends):
    """Every scenario against every target, rounds alternating, then the
    fixed-rate latency: {scenario id: {target: [result per round]}}."""
    results = {}
    warm_body = _write_bytes("body-100", b"\x00\x00\x00\x00\x64" + b"x" * 100)
    for sc in SCENARIOS:
        if sc["id"] in (f[0] for f in FIXED) or (sc.get("backend") == "judge" and be != judge(backends)):
            continue
        sc["body"] = _write_bytes("body-%d" % sc["size"], b"\x00" + sc["size"].to_bytes(4, "big") + b"x" * sc["size"])
        sc["warm_body"] = warm_body
        for rnd in range(args.rounds):
            for name, start in targets:  # A B C D ... each round
                if name == "direct" and sc.get("tls") or name not in sc.get("targets", (name,)) or (
                        name in LOG_ONLY and sc.get("kind") != "log"):
                    continue  # the backend speaks h2c only; a scenario of issue 16's peers only
                r = safe_measure(args, name, start, bport, sc)
                results.setdefault(sc["id"], {}).setdefault(name, []).append(r)
                print("%-2s %-13s round %d %-8s %8.0f %s/s  %8.0f %s/CPU-s  p50 %5d us  p99 %6d us%s%s%s" % (
                    be, sc["id"], rnd + 1, name, r["rps"], unit(sc), r["req_per_cpu_s"], unit(sc), r["p50_us"],
                    r["p99_us"], "  %.2f KiB/call held" % r["rss_per_call_kib"] if "rss_per_call_kib" in r else "",
                    "  %d log lines for %d calls" % (r["log_lines"], r["log_calls_started"]) if "log_lines" in r
                    else "", "  " + r["error"] if "error" in r else ""), flush=True)
    for sid, share, _ in FIXED:
        if extra(args, sid):
            run_fixed(args, targets, bport, be, results, sid, share, warm_body)
    return results


def run_fixed(args, targets, bport, be, results, sid, share, body):
    """p50/p99/p99.9 at a fixed rate: share of the slowest proxy's maximum
    in the 4x16 scenario (h2load --rps, per connection)."""
    peak = results["u100_4x16"]
    targets = [(n, f) for n, f in targets if n not in LOG_ONLY]
    slowest = min(statistics.median(x["rps"] for x in peak[n]) for n, _ in targets if n != "direct")
    rate = max(100, int(slowest * share))
    sc = {"id": sid, "size": 100, "conns": 4, "streams": 16, "rps": rate // 4, "rate": rate, "body": body}
    for rnd in range(args.rounds):
        for name, start in targets:
            r = safe_measure(args, name, start, bport, sc)
            r["rate"] = rate
            results.setdefault(sid, {}).setdefault(name, []).append(r)
            print("%-2s %-12s round %d %-8s %d req/s: p50 %5d us  p99 %6d us  p99.9 %6d us" % (
                be, sid, rnd + 1, name, rate, r["p50_us"], r["p99_us"], r["p999_us"]), flush=True)


def extra(args, x):
    return not args.scenarios or x in args.scenarios.split(",")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grelay", required=True)
    ap.add_argument("--backend", default="c,go", help="c, go or c,go (the default): the echo backend(s), each in turn")
    ap.add_argument("--c-backend", help="bench/backend/echo_backend binary")
    ap.add_argument("--go-backend", help="bench/gobackend binary (bench/gobackend/build.sh)")
    ap.add_argument("--stream-load", required=True)
    ap.add_argument("--conn-load", help="bench/load/conn_load binary (bench/load/build.sh): churn and TLS scenarios")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--tag", default="", help="results go to DATE-TAG.{md,json,png}")
    ap.add_argument("--only", default="", help="targets, comma-separated (direct always runs)")
    ap.add_argument("--scenarios", default="", help="scenario ids, comma-separated (default: all)")
    args = ap.parse_args()
    backends = args.backend.split(",")
    if any(b not in BACKENDS for b in backends):
        sys.exit("--backend: c, go or c,go")
    if args.scenarios:
        keep = args.scenarios.split(",")
        SCENARIOS[:] = [sc for sc in SCENARIOS if sc["id"] in keep or sc["id"] == "u100_4x16"]
    only = args.only.split(",") if args.only else []
    targets = [(n, f) for n, f in TARGETS if available(n) and (n in only or n == "direct" or
                                                               (not only and n not in OPT_IN))]
    results, scale, idle, sysc = {}, {}, {}, {}
    for i, be in enumerate(backends):
        backend, bport = start_backend(args, be)
        try:
            results[be] = run_scenarios(args, targets, bport, be, backends)
            if extra(args, "syscalls"):
                sysc[be] = syscall_counts(args, targets, bport, be)
            if i > 0:
                continue  # scaling and idle memory do not depend on the backend: measured once
            if any(n == "grelay" for n, _ in targets) and extra(args, "scaling"):
                scale = scaling(args, bport)
            for name, start in targets:
                if name != "direct" and name not in LOG_ONLY and extra(args, "idle"):
                    idle[name] = idle_rss(args, name, start, bport)
                    print("idle-rss     %-8s %.2f KiB per idle HTTP/2 connection" % (
                        name, idle[name]["rss_per_conn_kib"]), flush=True)
        finally:
            backend.send_signal(signal.SIGTERM)
            backend.wait(10)
    for sid, _, title in FIXED:
        if extra(args, sid):
            SCENARIOS.append({"id": sid, "title": title, "kind": "fixed"})
    save_json(args, backends, results, idle, scale, sysc)  # first: the figures survive a failing report
    report(args, targets, backends, results, idle, scale, sysc)


def unit(sc):
    return "msg" if sc.get("kind") == "bidi" else "req"


def scaling(args, bport):
    """grelay with workers: 2 (CPUs 0-1) against workers: 1 (CPU 0), rounds alternating.

    On a 2-core machine the load generator and the backend share those cores,
    so req/s cannot double here; what this shows is whether the second
    worker takes its share of the load (CPU seconds per thread) and whether
    the cost per request stays the same."""
    sc = dict(SCALING, body=_write_bytes("body-100", b"\x00\x00\x00\x00\x64" + b"x" * 100))
    out = {1: [], 2: []}
    for rnd in range(args.rounds):
        for workers in (1, 2):
            r = measure(args, "grelay", t_grelay, bport, sc, workers)
            out[workers].append(r)
            print("scaling       round %d workers %d %8.0f req/s  %8.0f req/CPU-s  thread CPU-s %s" % (
                rnd + 1, workers, r["rps"], r["req_per_cpu_s"],
                " ".join("%.2f" % t for t in r["thread_cpu_s"][:3])), flush=True)
    return out


def med(rs, key):
    return statistics.median(r[key] for r in rs)


def report(args, targets, backends, results, idle, scale, sysc):
    names = [n for n, _ in targets]
    cpu = open("/proc/cpuinfo").read()
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "?")
    lines = ["# grelay benchmark, %s" % datetime.date.today().isoformat(), "",
             "Machine: %d cores (%s), %s, Linux %s. Proxies pinned to CPU 0 with one worker; backend (%s) "
             "and h2load on CPU 1. %d rounds of %d s per target, alternating targets; medians. No target logs per call "
             "(but in the log_ scenarios, where every proxy logs each call to a file); "
             "each peer's windows and buffers, and each backend's settings: bench/README.md. Ratios compare "
             "targets in front of the same backend, in this run."
             % (os.cpu_count(), model, platform.machine(), platform.release(),
                ", then ".join(BACKENDS[b] for b in backends), args.rounds, args.seconds), "",
             "Versions: " + versions(), "",
             "grelay with its defaults: metrics on, no access log (log_ scenarios: its JSON access log), request ids "
             "generated (a UUID v4 per call, sent upstream). Memory %s; load average at the start %s, at the end %s "
             "(other work on the machine shows there)." % (meminfo(), LOAD_AT_START, open("/proc/loadavg").read().split()[0]), ""]
    lines += targets_lines(backends, results) + summary(names, backends, results)
    for sc in SCENARIOS:
        if not any(results[b].get(sc["id"]) for b in backends):
            continue
        if sc.get("kind") in TABLES:
            lines += TABLES[sc["kind"]](sc, names, backends, results)
            continue
        lines += ["## " + sc["title"], "",
                  "| backend | target | req/s | req per proxy CPU-s | proxy CPU-us/req | p50 us | p99 us | "
                  "p50 added over direct | req/CPU-s vs grelay |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for be in backends:
            rs = results[be].get(sc["id"], {})
            g = med(rs["grelay"], "req_per_cpu_s") if "grelay" in rs else 0
            d50 = med(rs["direct"], "p50_us") if "direct" in rs else 0
            for n in names:
                if n not in rs:
                    continue
                rpc = med(rs[n], "req_per_cpu_s")
                lines.append("| %s | %s | %.0f | %s | %s | %.0f | %.0f | %s | %s |" % (
                    be + (" @%d req/s" % rs[n][0]["rate"] if "rate" in rs[n][0] else ""), n, med(rs[n], "rps"),
                    "%.0f" % rpc if n != "direct" else "-", "%.1f" % (1e6 / rpc) if rpc and n != "direct" else "-",
                    med(rs[n], "p50_us"), med(rs[n], "p99_us"),
                    "%+.0f" % (med(rs[n], "p50_us") - d50) if n != "direct" and "direct" in rs else "-",
                    "%.2fx" % (rpc / g) if g and n != "direct" else "-"))
        lines.append("")
    lines += syscall_lines(sysc) + scaling_lines(scale) + idle_lines(names, idle)
    lines += ["", "Rerun: `bench/run.sh` (see bench/README.md).", ""]
    stamp = save_json(args, backends, results, idle, scale, sysc)
    with open(os.path.join(args.out, "%s.md" % stamp), "w") as f:
        f.write("\n".join(lines))
    plot(args, names, backends, results, stamp)
    print("\n".join(lines))


def save_json(args, backends, results, idle, scale, sysc):
    """Writes DATE[-TAG].json (every round's figures) and returns DATE[-TAG]."""
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat() + ("-" + args.tag if args.tag else "")
    clean = lambda res: {k: {n: [{x: y for x, y in r.items() if x != "stdout"} for r in v] for n, v in rs.items()}
                         for k, rs in res.items()}
    with open(os.path.join(args.out, "%s.json" % stamp), "w") as f:
        json.dump({"backends": {b: clean(results[b]) for b in backends}, "idle": idle, "syscalls": sysc,
                   "scaling": {w: [{x: y for x, y in r.items() if x != "stdout"} for r in v] for w, v in scale.items()}},
                  f, indent=1)
    return stamp


def summary(names, backends, results):
    """grelay's calls (messages) per proxy CPU-second over each peer's, per
    scenario and backend; at 1x1 the p50 each adds over direct."""
    peers = [n for n in names if n not in ("direct", "grelay")]
    if "grelay" not in names or not peers:
        return []
    lines = ["## grelay against each peer, per backend", "",
             "Calls (bidi: messages; churn and TLS: connections) per proxy CPU-second, grelay's over the peer's "
             "(above 1: grelay needs less CPU); 1x1: the p50 each adds over direct, in us; held10k: the peer's RSS "
             "per call held over grelay's (above 1: grelay needs less memory).", "",
             "| scenario | backend | grelay per CPU-s | " + " | ".join("vs " + p for p in peers) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in peers) + " |"]
    for sc in SCENARIOS:
        for be in backends:
            rs = results[be].get(sc["id"], {})
            if "grelay" not in rs or sc.get("kind") == "fixed":
                continue
            if sc.get("kind") == "held":  # memory: the peer's RSS per call over grelay's
                ok = {n: [r for r in v if "rss_per_call_kib" in r] for n, v in rs.items()}
                g = med(ok["grelay"], "rss_per_call_kib") if ok["grelay"] else 0
                cells = ["%.2fx" % (med(ok[p], "rss_per_call_kib") / g) if ok.get(p) and g else "-" for p in peers]
                lines.append("| %s (RSS per call) | %s | %.2f KiB | %s |" % (sc["id"], be, g, " | ".join(cells)))
                continue
            g = med(rs["grelay"], "req_per_cpu_s")
            if sc["id"] in LATENCY and "direct" in rs:
                d = med(rs["direct"], "p50_us")
                cells = ["%+.0f" % (med(rs[p], "p50_us") - d) if p in rs else "-" for p in peers]
                lines.append("| %s | %s | %.0f (p50 %+.0f) | %s |" % (sc["id"], be, g, med(rs["grelay"], "p50_us") - d,
                                                                      " | ".join(cells)))
                continue
            cells = ["%.2fx" % (g / med(rs[p], "req_per_cpu_s")) if p in rs and med(rs[p], "req_per_cpu_s") else "-"
                     for p in peers]
            lines.append("| %s | %s | %.0f | %s |" % (sc["id"], be, g, " | ".join(cells)))
    return lines + [""]


def big_table(sc, names, backends, results):
    lines = ["## " + sc["title"], "",
             "| backend | target | calls/s | MB/s each way | MB per proxy CPU-s each way | p50 ms | p99 ms | "
             "MB/CPU-s vs grelay |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for be in backends:
        rs = results[be].get(sc["id"], {})
        g = med(rs["grelay"], "mb_per_cpu_s") if "grelay" in rs else 0
        for n in names:
            if n not in rs:
                continue
            v = med(rs[n], "mb_per_cpu_s") if n != "direct" else 0
            lines.append("| %s | %s | %.1f | %.0f | %s | %.1f | %.1f | %s |" % (
                be, n, med(rs[n], "rps"), med(rs[n], "mb_s"), "%.0f" % v if v else "-", med(rs[n], "p50_us") / 1e3,
                med(rs[n], "p99_us") / 1e3, "%.2fx" % (v / g) if g and v else "-"))
    return lines + [""]


def fixed_table(sc, names, backends, results):
    lines = ["## " + sc["title"], "",
             "| backend | target | rate req/s | p50 us | p99 us | p99.9 us | p99 added over direct | p99.9 added over "
             "direct | p99.9 vs grelay |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for be in backends:
        rs = results[be].get(sc["id"], {})
        g = med(rs["grelay"], "p999_us") if "grelay" in rs else 0
        d = rs.get("direct")
        for n in names:
            if n not in rs:
                continue
            p99, p999 = med(rs[n], "p99_us"), med(rs[n], "p999_us")
            lines.append("| %s | %s | %d | %.0f | %.0f | %.0f | %s | %s | %s |" % (
                be, n, rs[n][0]["rate"], med(rs[n], "p50_us"), p99, p999,
                "%+.0f" % (p99 - med(d, "p99_us")) if d and n != "direct" else "-",
                "%+.0f" % (p999 - med(d, "p999_us")) if d and n != "direct" else "-",
                "%.2fx" % (p999 / g) if g and n != "direct" else "-"))
    return lines + [""]


def syscall_counts(args, targets, bport, be):
    """Syscalls, packets and CPU per call (per echoed message in bidi) of
    grelay, nghttpx and HAProxy (syscalls.py, perf stat tracepoints) in the
    main unary scenarios and bidi 16 KiB: {scenario: {target: {event: per
    call}}}."""
    import syscalls
    out = {}
    for sid, calls in SYSCALL_SCENARIOS:
        sc = next((x for x in SCENARIOS if x["id"] == sid), None)
        if sc is None:
            continue
        a = argparse.Namespace(**vars(args))
        a.calls = max(2000, calls * args.seconds // 4)  # unary
        a.seconds = max(2, args.seconds)  # bidi: a run of this long after a 1 s warm-up
        for name, start in targets:
            if name in NEW_PEERS:
                try:
                    if sc.get("kind") == "bidi":
                        r = syscalls.count_bidi(a, name, start, bport, sc["size"], sc["conns"], sc["streams"],
                                                sc["inflight"])
                    else:
                        r = syscalls.count(a, name, start, bport, sc["body"], sc["conns"], sc["streams"])
                except Exception as e:  # noqa: BLE001 -- one failed count must not end a long run
                    print("%-2s syscalls %-11s %-8s failed: %s" % (be, sid, name, e), flush=True)
                    continue
                out.setdefault(sid, {})[name] = r
                print("%-2s syscalls %-11s %-8s %.2f syscalls, %.2f packets, %.1f + %.1f CPU-us per call" % (
                    be, sid, name, r.get("raw_syscalls:sys_enter", 0), r.get("net:net_dev_xmit", 0), r["user_us"],
                    r["sys_us"]), flush=True)
    return out


def syscall_lines(sysc):
    if not sysc:
        return []
    import syscalls
    lines = ["## Syscalls, packets and CPU per call (perf stat tracepoints, bench/syscalls.py)", "",
             "Counted over the proxy's whole process tree around N calls after a warm-up (bidi: per echoed message, "
             "over a run of --seconds); CPU from /proc around the same calls (tracing inflates it somewhat, alike "
             "for all).", "",
             "| scenario | backend | target | syscalls per call | packets sent per call | CPU-us per call, user + "
             "system | of which |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for be, per in sysc.items():
        for sid, rows in per.items():
            for name, r in rows.items():
                parts = sorted(((r.get("syscalls:sys_enter_" + c, 0), c) for c in syscalls.CALLS), reverse=True)
                lines.append("| %s | %s | %s | %.2f | %.2f | %.1f + %.1f | %s |" % (
                    sid, be, name, r.get("raw_syscalls:sys_enter", 0), r.get("net:net_dev_xmit", 0), r["user_us"],
                    r["sys_us"], ", ".join("%s %.2f" % (c, v) for v, c in parts if v >= 0.005)))
    return lines + [""]


def targets_lines(backends, results):
    """Issue 16's targets against this run (the judging backend)."""
    be = judge(backends)
    res = results.get(be, {})
    lines = ["## Issue 16's targets (%s backend)" % BACKENDS[be], "",
             "| scenario | target | result | met |", "| --- | --- | --- | --- |"]

    def rate(sid, n, key="req_per_cpu_s"):
        rs = res.get(sid, {}).get(n)
        ok = [r for r in rs or [] if key in r and "error" not in r]
        return med(ok, key) if ok else None

    def row(sid, what, want, got, met, fmt="%.2fx"):
        lines.append("| %s | %s | %s | %s |" % (sid, what, fmt % got if got is not None else "not run",
                                                "-" if got is None else ("yes" if met(got, want) else "**no**")))

    ge = lambda got, want: got >= want
    for sid, want in (("u100_4x16", 2.0), ("u100_16x64", 2.0), ("u16k_4x4", 1.6), ("u16k_64x1", 1.6)):
        g, p = rate(sid, "grelay"), rate(sid, "nghttpx")
        row(sid, "calls per proxy CPU-s >= %.1fx nghttpx" % want, want, g / p if g and p else None, ge)
    for sid, want, what in (("bidi16k_4x16", 1.5, "messages per proxy CPU-s >= 1.5x the best peer"),
                            ("tls12_full", 1.0, "handshakes per proxy CPU-s >= the best peer"),
                            ("tls12_resumed", 1.0, "handshakes per proxy CPU-s >= the best peer"),
                            ("tls13_full", 1.0, "handshakes per proxy CPU-s >= the best peer"),
                            ("tls13_resumed", 1.0, "handshakes per proxy CPU-s >= the best peer")):
        g = rate(sid, "grelay")
        best = max([v for v in (rate(sid, n) for n in res.get(sid, {}) if is_peer(n)) if v] or [0])
        row(sid, what, want, g / best if g and best else None, ge)
    for sid in LATENCY:
        d = rate(sid, "direct", "p50_us")
        added = {n: rate(sid, n, "p50_us") - d for n in res.get(sid, {}) if n != "direct" and d is not None}
        peers = [v for n, v in added.items() if is_peer(n)]
        if "grelay" in added and peers:
            best = min(peers)
            lines.append("| %s | p50 added over direct <= 0.8x the best peer | grelay %+.0f us, best peer %+.0f us "
                         "(%.2fx) | %s |" % (sid, added["grelay"], best,
                                             added["grelay"] / best if best > 0 else float("inf"),
                                             "yes" if added["grelay"] <= 0.8 * best else "**no**"))
    g = rate("held10k", "grelay", "rss_per_call_kib")
    best = min([v for v in (rate("held10k", n, "rss_per_call_kib") for n in res.get("held10k", {})
                            if is_peer(n)) if v] or [0])
    if g and best:
        lines.append("| held10k | RSS per call in flight <= 0.5x the best peer | grelay %.2f KiB, best peer %.2f KiB "
                     "(%.2fx) | %s |" % (g, best, g / best, "yes" if g <= 0.5 * best else "**no**"))
    lines.append("| callgrind 4x16 | user-space instructions per call <= 20,000 | bench/callgrind.sh, "
                 "docs/performance.md | - |")
    return lines + [""]


def scaling_lines(scale):
    if not scale:
        return []
    lines = ["## grelay with workers: 2 against workers: 1 (unary 100 B, 16 conns x 16 streams, first backend)", "",
             "Workers 1 pinned to CPU 0, workers 2 to CPUs 0-1; h2load and the backend stay on CPU 1, so on "
             "this 2-core machine the second worker competes with the load generator and req/s cannot "
             "double. The split of CPU time between the worker threads shows whether both take load.", "",
             "| workers | req/s | req per proxy CPU-s | CPU-s of the busiest threads (median round) |",
             "| --- | --- | --- | --- |"]
    for w in (1, 2):
        rs = scale[w]
        mid = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        lines.append("| %d | %.0f | %.0f | %s |" % (w, med(rs, "rps"), med(rs, "req_per_cpu_s"),
                                                    ", ".join("%.2f" % t for t in mid["thread_cpu_s"][:3])))
    lines.append("")
    lines.append("workers 2 / workers 1: %.2fx req/s, %.2fx req per CPU-s." % (
        med(scale[2], "rps") / med(scale[1], "rps"), med(scale[2], "req_per_cpu_s") / med(scale[1], "req_per_cpu_s")))
    return lines + [""]


def idle_lines(names, idle):
    if not idle:
        return []
    lines = ["## RSS per idle HTTP/2 client connection after one call (2,000 connections, 3 s idle, first backend)",
             "", "| target | KiB per connection | total RSS KiB |", "| --- | --- | --- |"]
    for n in names:
        if n in idle:
            lines.append("| %s | %.2f | %d |" % (n, idle[n]["rss_per_conn_kib"], idle[n]["rss_kib"]))
    return lines


def bidi_table(sc, names, backends, results):
    lines = ["## " + sc["title"], "",
             "| backend | target | messages/s | MB/s (one way) | messages per proxy CPU-s | proxy CPU-us/message | "
             "msg/CPU-s vs grelay |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for be in backends:
        rs = results[be].get(sc["id"], {})
        g = med(rs["grelay"], "req_per_cpu_s") if "grelay" in rs else 0
        for n in names:
            if n not in rs:
                continue
            mpc = med(rs[n], "req_per_cpu_s")
            proxy = n != "direct"
            lines.append("| %s | %s | %.0f | %.1f | %s | %s | %s |" % (
                be, n, med(rs[n], "rps"), med(rs[n], "mb_s") if all("mb_s" in r for r in rs[n]) else 0,
                "%.0f" % mpc if proxy else "-", "%.2f" % (1e6 / mpc) if mpc and proxy else "-",
                "%.2fx" % (mpc / g) if g and proxy else "-"))
    return lines + [""]


TABLES = {"bidi": bidi_table, "big": big_table, "fixed": fixed_table,
          "log": lambda *a: __import__("accesslog").log_table(*a),
          "held": lambda *a: __import__("conns").held_table(*a), "conn": lambda *a: __import__("conns").conn_table(*a)}
# The scenarios syscalls.py counts, and the calls it counts in each unary one
# (at --seconds 4; scaled with --seconds); bidi runs for --seconds.
SYSCALL_SCENARIOS = (("u100_4x16", 100000), ("u16k_4x4", 20000), ("bidi16k_4x16", 0))


LOAD_AT_START = open("/proc/loadavg").read().split()[0]


def meminfo():
    with open("/proc/meminfo") as f:
        kib = next((int(l.split()[1]) for l in f if l.startswith("MemTotal:")), 0)
    return "%.1f GiB" % (kib / 1048576.0)


def versions():
    out = []
    for cmd in (["nghttpx", "--version"], ["haproxy", "-v"], ["nginx", "-v"], ["caddy", "version"]):
        if shutil.which(cmd[0]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = (r.stdout + r.stderr).strip().splitlines()[0][:60]
            out.append(line if cmd[0] in line.lower() else "%s %s" % (cmd[0], line))
    return "; ".join(out)


def plot(args, names, backends, results, stamp):
    if shutil.which("gnuplot") is None:
        return
    ids = [(i, b) for i in ("u100_4x16", "u100_16x64", "u100_100x1", "u16k_4x4", "u16k_64x1", "tls_u100_4x16",
                            "tls_u16k_4x4", "log_u100_4x16", "log_u100_16x64") for b in backends if i in results[b]]
    proxies = [n for n in names if n != "direct"]
    data = os.path.join(TMP, "plot.dat")
    with open(data, "w") as f:
        f.write("scenario " + " ".join(proxies) + "\n")
        for i, b in ids:
            rs = results[b][i]
            f.write("%s%s " % (i, "/" + b if len(backends) > 1 else "") +
                    " ".join("%.0f" % med(rs[n], "req_per_cpu_s") if n in rs else "0" for n in proxies) + "\n")
    png = os.path.join(args.out, "%s.png" % stamp)
    script = """set terminal pngcairo size %d,560 font ",10" noenhanced
set output '%s'
set title 'Requests per proxy CPU-second (higher is better), one worker pinned to one core; scenario/backend'
set style data histograms
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set key top right
set ylabel 'req / CPU-s'
set grid ytics
set xtics rotate by -30
plot for [i=2:%d] '%s' using i:xtic(1) title columnheader(i)
""" % (max(1000, 110 * len(ids)), png, len(proxies) + 1, data)
    subprocess.run(["gnuplot"], input=script, text=True, check=False)


if __name__ == "__main__":
    main()
