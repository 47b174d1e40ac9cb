"""The admin endpoint (issue 14, "Admin endpoint"; docs/observability.md).

A small HTTP/1.1 server on the main thread's loop: GET /ready, /healthz,
/metrics, /config_dump, /clusters, /stats.json and /; POST /reload, /drain
and /log_level only with admin.allow_mutations. Each test starts the real
binary on loopback ports; calls go to real grpcio backends.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import time

import grpc
import pytest

from harness import free_port, simple_config
from test_failures import wait_for
from test_reload import reload, who
from test_upgrade import Upgradable

FORBIDDEN = "admin: allow_mutations is false"


def admin_config(backends, port, admin_port, allow=False, **top):
    cfg = simple_config(port, [b.addr for b in backends], workers=2)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port, "allow_mutations": allow}
    cfg.update(top)
    return cfg


class Admin:
    """Requests to grelay's admin port, one connection each unless kept."""

    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read().decode()
        finally:
            conn.close()

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body=None):
        return self.request("POST", path, body=body)


def start(grelay_factory, backends, allow=False, env=None, **top):
    port, admin_port = free_port(), free_port()
    g = grelay_factory(admin_config(backends, port, admin_port, allow, **top), port, env=env)
    g.admin = Admin(admin_port)
    g.admin_port = admin_port
    return g


def raw_exchange(port, data, chunk=None, half_close=False):
    """Sends data on a new connection (in pieces of chunk bytes, stopping if
    grelay closes; then shuts the sending side with half_close), then reads
    until grelay closes; returns what came back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        step = chunk or len(data)
        for i in range(0, len(data), step):
            try:
                s.sendall(data[i:i + step])
            except (BrokenPipeError, ConnectionResetError):
                break
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        for _ in range(1000):
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            out += piece
        return out
    finally:
        s.close()


def test_ready_turns_503_when_a_drain_begins(backends, grelay_factory):
    g = start(grelay_factory, backends, drain_delay="30s", drain_timeout="60s")
    status, headers, body = g.admin.get("/ready")
    assert (status, body) == (200, "ready\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "\ngrelay_ready 1\n" in g.admin.get("/metrics")[2]
    g.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: "draining (not ready)" in g.log()), g.log()
    status, _, body = g.admin.get("/ready")
    assert (status, body) == (503, "not ready: draining\n")
    assert "\ngrelay_ready 0\n" in g.admin.get("/metrics")[2]
    assert '"ready":false,"draining":true' in g.admin.get("/stats.json")[2]
    # drain_delay: the listener still takes calls while readiness is false.
    with grpc.insecure_channel(g.addr) as ch:
        assert who(ch) in {b.name for b in backends}
    assert g.admin.get("/ready")[0] == 503
    assert g.admin.get("/healthz")[0] == 200  # draining is not dead
    # The fixture's SIGTERM is the second one: grelay stops waiting and exits 0.


def test_healthz_fails_while_a_worker_is_stuck(backends, grelay_factory):
    g = start(grelay_factory, backends, allow=True, env={"GRELAY_TEST_HOOKS": "1"})
    status, _, body = g.admin.get("/healthz")
    assert (status, body) == (200, "ok: 2 workers\n")
    status, _, body = g.admin.post("/test/stall_worker?worker=1&seconds=6")
    assert (status, body) == (200, "worker 1 sleeps 6 s\n")
    # Bounded polls: the beat is at most 0.5 s old when the stall begins, so
    # /healthz fails 3 to 3.5 s into the 6 s stall and recovers when it ends.
    bad = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(g.admin.get("/healthz")), seconds=10)
    assert bad is not None and bad[0] == 503, bad
    assert "worker 1: its loop has not turned for" in bad[2]
    assert "worker 0" not in bad[2]
    assert g.admin.get("/ready")[0] == 200  # readiness is about draining, not liveness
    good = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(g.admin.get("/healthz")), seconds=15)
    assert good is not None and good[2] == "ok: 2 workers\n", good
    with grpc.insecure_channel(g.addr) as ch:  # the worker serves again
        for _ in range(4):
            assert who(ch) in {b.name for b in backends}
    assert "test hook: worker 1 sleeps 6000 ms" in g.log()
    # Bad arguments are refused.
    assert g.admin.post("/test/stall_worker?worker=2&seconds=1")[0] == 400
    assert g.admin.post("/test/stall_worker?worker=0&seconds=0")[0] == 400
    assert g.admin.post("/test/stall_worker?worker=0")[0] == 400


def test_the_stall_hook_does_not_exist_without_the_environment_variable(backends, grelay_factory):
    g = start(grelay_factory, backends, allow=True)
    assert g.admin.post("/test/stall_worker?worker=0&seconds=1")[0] == 404
    assert "GRELAY_TEST_HOOKS" not in g.log()


def test_config_dump_of_a_tls_config_has_no_key_material(backends, grelay_factory, tmp_path):
    key, crt = str(tmp_path / "grelay.key"), str(tmp_path / "grelay.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", crt, "-subj", "/CN=grelay.test", "-days", "2"],
                   check=True, capture_output=True, timeout=60)
    with open(key) as f:
        key_text = f.read()
    port, admin_port = free_port(), free_port()
    cfg = admin_config(backends, port, admin_port)
    cfg["listeners"][0]["tls"] = {"cert_chain": crt, "private_key": key}
    g = grelay_factory(cfg, port)
    status, headers, body = Admin(admin_port).get("/config_dump")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    dump = json.loads(body)
    assert dump["listeners"][0]["tls"] == {"cert_chain": crt, "private_key": "[redacted]"}
    assert dump["workers"] == 2
    assert dump["admin"] == {"address": "127.0.0.1:%d" % admin_port, "allow_mutations": False}
    assert dump["clusters"][0]["endpoints"] == [{"address": b.addr} for b in backends]
    # Not a line of the key file, nor its path, is in the answer.
    for line in key_text.splitlines():
        if line.strip() and not line.startswith("-----"):
            assert line not in body
    assert "PRIVATE KEY" not in body and "-----BEGIN" not in body
    assert key not in body


def test_mutations_answer_403_unless_allowed(backends, grelay_factory):
    g = start(grelay_factory, backends, allow=False)
    for path in ("/reload", "/drain", "/log_level?level=debug"):
        status, _, body = g.admin.post(path)
        assert (status, body) == (403, FORBIDDEN + "\n"), path
    assert g.admin.get("/ready")[0] == 200  # nothing drained
    assert "reload (" not in g.log() and "POST /log_level" not in g.log()
    # A reload that allows them: the same admin port takes them now.
    cfg = admin_config(backends, g.port, g.admin_port, allow=True)
    reload(g, cfg)
    status, _, body = g.admin.post("/log_level?level=warn")
    assert (status, body) == (200, "log level: warn\n")
    # And one that moves the address: it stays (a restart moves it), with a warning.
    cfg["admin"]["address"] = "127.0.0.1:%d" % free_port()
    reload(g, cfg)
    assert "admin: address %s waits for a restart" % cfg["admin"]["address"] in g.log()
    assert g.admin.get("/ready")[0] == 200


def test_post_reload_picks_up_the_file_and_reports_a_bad_one(backends, grelay_factory):
    b1, b2 = backends[0], backends[1]
    g = start(grelay_factory, [b1], allow=True)
    with grpc.insecure_channel(g.addr) as ch:
        assert who(ch) == b1.name
        g.write_config(admin_config([b2], g.port, g.admin_port, allow=True))
        status, _, body = g.admin.post("/reload")
        assert (status, body) == (200, "reload: done: 1 listener, 1 cluster\n")
        assert who(ch) == b2.name
        with open(g.config_path, "w") as f:
            f.write("workers: 2\nlisteners: [\n")
        status, _, body = g.admin.post("/reload")
        assert status == 400  # curl --fail sees it
        assert body.startswith("reload: failed: %s:3:1: " % g.config_path), body
        assert body.endswith("grelay keeps running the previous configuration\n")
        assert who(ch) == b2.name
    _, _, metrics = g.admin.get("/metrics")
    assert 'grelay_config_reloads_total{result="success"} 1\n' in metrics
    assert 'grelay_config_reloads_total{result="failure"} 1\n' in metrics
    assert "reload (POST /reload): loading" in g.log()


def test_post_log_level(backends, grelay_factory):
    g = start(grelay_factory, backends, allow=True)
    assert "[debug]" not in g.log()
    status, _, body = g.admin.post("/log_level?level=loud")
    assert (status, body) == (400, "log_level: want ?level=error, warn, info or debug\n")
    assert g.admin.post("/log_level")[0] == 400
    status, _, body = g.admin.post("/log_level?level=debug")
    assert (status, body) == (200, "log level: debug\n")
    g.admin.get("/ready")  # logged at debug level now
    assert wait_for(lambda: "[debug] main: admin: GET /ready: 200" in g.log()), g.log()[-2000:]


def test_post_drain_ends_the_process_with_exit_0(backends, grelay_factory):
    g = start(grelay_factory, backends, allow=True)
    with grpc.insecure_channel(g.addr) as ch:
        assert who(ch) in {b.name for b in backends}
    status, _, body = g.admin.post("/drain")
    assert status == 202
    assert body.startswith("drain: begun: not ready now")
    g.proc.wait(30)
    assert g.proc.returncode == 0
    assert "POST /drain: draining (not ready)" in g.log()
    # The fixture's stop checks the exit status and that no sanitizer spoke.


def test_unknown_paths_404_and_wrong_methods_405(backends, grelay_factory):
    g = start(grelay_factory, backends, allow=True)
    status, _, body = g.admin.get("/nope")
    assert status == 404 and "no such endpoint" in body
    assert g.admin.get("/ready/")[0] == 404  # paths are exact
    status, headers, body = g.admin.request("PUT", "/ready")
    assert (status, headers["Allow"], body) == (405, "GET", "admin: /ready takes GET\n")
    status, headers, _ = g.admin.get("/reload")
    assert (status, headers["Allow"]) == (405, "POST")
    assert g.admin.request("DELETE", "/metrics")[0] == 405
    assert g.admin.get("/ready")[0] == 200


def cpu_seconds(pid):
    """User plus system CPU time of pid, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_metrics_pass_promtool(backends, grelay_factory):
    g = start(grelay_factory, backends)
    # CPU time and descriptors are read here just before and just after the
    # scrape: grelay's figures must lie between (the harness's port probe may
    # still be closing meanwhile).
    conn = http.client.HTTPConnection("127.0.0.1", g.admin_port, timeout=10)
    conn.request("GET", "/ready")  # this connection is accepted (its descriptor exists) from here on
    assert conn.getresponse().read() == b"ready\n"
    cpu_before, fds_before = cpu_seconds(g.proc.pid), len(os.listdir("/proc/%d/fd" % g.proc.pid))
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    status, headers, body = r.status, dict(r.getheaders()), r.read().decode()
    cpu_after, fds_after = cpu_seconds(g.proc.pid), len(os.listdir("/proc/%d/fd" % g.proc.pid))
    conn.close()
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    check = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=body.encode(), capture_output=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    values = {}
    for line in body.splitlines():
        if line.startswith("process_"):
            name, value = line.split(" ")
            values[name] = float(value)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        assert "# TYPE %s " % name in body
    for name in ("process_resident_memory_bytes", "process_virtual_memory_bytes", "process_max_fds"):
        assert values[name] > 0, name
    # Printed with two decimals, as the clock ticks (1/100 s) allow.
    assert round(cpu_before, 2) <= values["process_cpu_seconds_total"] <= round(cpu_after, 2)
    with open("/proc/%d/status" % g.proc.pid) as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert 0.5 < values["process_resident_memory_bytes"] / (rss_kib * 1024) < 2
    assert min(fds_before, fds_after) <= values["process_open_fds"] <= max(fds_before, fds_after)
    assert abs(values["process_start_time_seconds"] - os.stat("/proc/%d" % g.proc.pid).st_mtime) < 60


def test_json_and_page_endpoints(backends, grelay_factory):
    g = start(grelay_factory, backends)
    for path in ("/clusters", "/stats.json"):
        status, headers, body = g.admin.get(path)
        assert status == 200 and headers["Content-Type"] == "application/json", path
        json.loads(body)
    status, headers, body = g.admin.get("/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body.encode())


def test_oversized_requests_get_431_and_413_and_the_port_keeps_serving(backends, grelay_factory):
    g = start(grelay_factory, backends, allow=True)
    big_head = b"GET /ready HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    out = raw_exchange(g.admin_port, big_head, chunk=4096)
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]
    big_body = b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
    out = raw_exchange(g.admin_port, big_body, chunk=4096)
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]
    assert b"Connection: close\r\n" in out
    assert raw_exchange(g.admin_port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # Smuggling shapes: whitespace before the colon, two lengths that disagree.
    assert raw_exchange(g.admin_port, b"POST /reload HTTP/1.1\r\nContent-Length : 4\r\n\r\nGET ").startswith(
        b"HTTP/1.1 400 ")
    assert raw_exchange(g.admin_port, b"POST /reload HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                        ).startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(g.admin_port, b"POST /drain HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").startswith(
        b"HTTP/1.1 411 ")
    assert g.admin.get("/ready")[0] == 200
    assert "reload (" not in g.log() and "draining" not in g.log()


def test_a_post_from_a_web_page_is_refused(backends, grelay_factory):
    """A form on any page the operator's browser opens could POST to a
    loopback admin port (no CORS preflight for a form): browsers send Origin."""
    g = start(grelay_factory, backends, allow=True)
    for origin in ("http://evil.example", "http://127.0.0.1:%d" % g.admin_port):
        status, _, body = g.admin.request("POST", "/drain", headers={"Origin": origin})
        assert (status, body) == (403, "admin: POST from a web page (Origin header) refused\n")
    assert g.admin.request("GET", "/ready", headers={"Origin": "http://evil.example"})[0] == 200
    assert "draining" not in g.log()


def test_keep_alive_pipelining_and_connection_close(backends, grelay_factory):
    g = start(grelay_factory, backends)
    conn = http.client.HTTPConnection("127.0.0.1", g.admin_port, timeout=10)
    for _ in range(3):  # one connection, three requests
        conn.request("GET", "/ready")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"ready\n")
        assert r.getheader("Connection") is None
    conn.close()
    two = b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    out = raw_exchange(g.admin_port, two)  # returns because grelay closes after the second answer
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert out.endswith(b"Connection: close\r\n\r\nok: 2 workers\n")
    # HTTP/1.0 closes by default.
    assert raw_exchange(g.admin_port, b"GET /ready HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nready\n")
    # A client that sends a whole request and shuts its side still gets the
    # answer (then grelay closes: raw_exchange returns); one that shuts it in the middle of a request gets none.
    out = raw_exchange(g.admin_port, b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n", half_close=True)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nready\n")
    assert raw_exchange(g.admin_port, b"GET /ready HTTP/1.1\r\nHost:", half_close=True) == b""


def test_connections_past_64_are_closed(backends, grelay_factory):
    g = start(grelay_factory, backends)
    held = []
    try:
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", g.admin_port), timeout=10)
            held.append(s)
        # Each held connection has been accepted once it answers.
        for s in held:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert raw_exchange(g.admin_port, b"GET /ready HTTP/1.1\r\n\r\n") == b""  # the 65th
        assert wait_for(lambda: "admin: 64 connections open: 1 new connection closed" in g.log())
        held.pop().close()
        # A slot is free once grelay has seen the close: then a new connection is served.
        ok = wait_for(lambda: raw_exchange(g.admin_port, b"GET /ready HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200"))
        assert ok
    finally:
        for s in held:
            s.close()


def test_a_binary_upgrade_hands_the_admin_socket_over():
    """SIGUSR2: the new process takes the admin socket itself (it could not
    bind the address while the old one holds it) and serves /ready once the
    old process is gone."""
    admin_port = free_port()
    with Upgradable(workers=1, admin={"address": "127.0.0.1:%d" % admin_port}) as u:
        admin = Admin(admin_port)
        assert admin.get("/ready")[0] == 200
        pid = u.upgrade()
        assert u.g.proc.wait(15) == 0  # the old one drained and exited 0
        status, _, body = admin.get("/ready")
        assert (status, body) == (200, "ready\n")
        with grpc.insecure_channel(u.g.addr) as ch:
            assert who(ch) == "b1"
        log = u.g.log()
        assert "cannot listen" not in log
        assert log.count("admin: listening on 127.0.0.1:%d" % admin_port) == 2
        assert pid != u.g.proc.pid
