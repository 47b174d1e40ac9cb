"""The access log (docs/access-log.md): one JSON line per call, written when
it ends, with the status the client got, the endpoint that answered, the
attempts made and the x-request-id the backend saw; SIGUSR1 reopens the file
after logrotate renamed it; a text template; a reload that changes the file
and the format; a file that cannot be opened stops grelay at start."""
import json
import os
import re
import signal
import subprocess
import time

import grpc
import pytest

from grpcweb_client import web_call
from h2client import grpc_headers, raw_h2, read_until_closed
from harness import GRELAY, Backend, free_port, simple_config
from test_admin import Admin

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FIELDS = ["time", "duration_ms", "listener", "protocol", "authority", "path", "grpc_code", "grpc_message",
          "http_status", "route", "cluster", "upstream", "attempts", "request_bytes", "response_bytes",
          "grpc_timeout_ms", "request_id", "user_agent", "peer"]


def read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    assert data == b"" or data.endswith(b"\n"), "a line was cut: %r" % data[-200:]
    return [line for line in data.decode().split("\n") if line]


def wait_lines(path, n, seconds=10):
    """The first n lines of path, once there are n (bounded wait: the writer passes every 25 ms)."""
    deadline = time.monotonic() + seconds
    while True:
        lines = read_lines(path)
        if len(lines) >= n:
            return lines
        assert time.monotonic() < deadline, "%d of %d lines in %s after %d s" % (len(lines), n, path, seconds)
        time.sleep(0.02)


def wait_log(g, text, seconds=10):
    deadline = time.monotonic() + seconds
    while text not in g.log():
        assert time.monotonic() < deadline, "no %r in grelay's log:\n%s" % (text, g.log()[-3000:])
        time.sleep(0.02)


@pytest.fixture
def pair():
    """Two echo backends of this test's own (their call counts are the test's)."""
    b = [Backend("a1"), Backend("a2")]
    try:
        yield b
    finally:
        for x in b:
            x.stop()


@pytest.fixture
def dead():
    d = Backend("dead")
    d.stop()  # its port now refuses connections
    return d


def config(port, log_path, endpoints, dead_addr, **access_log):
    routes = [
        {"name": "echo", "match": {"prefix": "/test.Echo/"}, "cluster": "backend",
         "retry_policy": {"retry_on": ["unavailable"], "num_retries": 1}},
        {"match": {"prefix": "/dead."}, "cluster": "dead"},
    ]
    cfg = simple_config(port, endpoints, routes=routes, workers=2)
    cfg["clusters"].append({"name": "dead", "endpoints": [{"address": dead_addr}]})
    cfg["access_log"] = dict({"path": log_path}, **access_log)
    return cfg


@pytest.fixture
def logged(pair, dead, grelay_factory, tmp_path):
    """grelay writing JSON lines to tmp_path/access.log in front of pair."""
    port, admin_port = free_port(), free_port()
    path = str(tmp_path / "access.log")
    cfg = config(port, path, [b.addr for b in pair], dead.addr)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    g = grelay_factory(cfg, port)
    g.admin = Admin(admin_port)
    g.log_path = path
    g.dead_addr = dead.addr
    return g


def unary(g, path="/test.Echo/Unary", body=b"hello", metadata=(), timeout=10):
    """One call; -> (grpc code, x-backend or None, trailers dict)."""
    with grpc.insecure_channel(g.addr) as ch:
        try:
            _, c = ch.unary_unary(path).with_call(body, metadata=list(metadata), timeout=timeout)
            return grpc.StatusCode.OK, dict(c.initial_metadata()).get("x-backend"), dict(c.trailing_metadata())
        except grpc.RpcError as e:
            return e.code(), dict(e.initial_metadata() or ()).get("x-backend"), dict(e.trailing_metadata() or ())


def test_one_json_line_per_call_with_its_outcome(logged, pair, dead):
    addr = {b.name: b.addr for b in pair}
    ok = unary(logged, metadata=[("x-request-id", "call-ok")], timeout=10)
    app = unary(logged, body=b"no such thing", metadata=[("x-fail-code", "NOT_FOUND"), ("x-request-id", "call-app")],
                timeout=None)
    noroute = unary(logged, path="/other.Svc/Method", metadata=[("x-request-id", "call-noroute")])
    down = unary(logged, path="/dead.Svc/Method", metadata=[("x-request-id", "call-dead")])
    assert [ok[0], app[0], noroute[0], down[0]] == [grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND,
                                                    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE]
    lines = [json.loads(x) for x in wait_lines(logged.log_path, 4)]
    assert len(read_lines(logged.log_path)) == 4
    _, _, text = logged.admin.get("/metrics")
    assert "\ngrelay_access_log_lines_total 4\n" in text and "\ngrelay_access_log_dropped_total 0\n" in text, text
    for rec in lines:
        assert list(rec) == FIELDS
        assert TIME.match(rec["time"]) and isinstance(rec["duration_ms"], (int, float)) and rec["duration_ms"] >= 0
        assert rec["listener"] == "ingress" and rec["protocol"] == "h2"
        assert rec["authority"] == logged.addr
        assert rec["peer"].startswith("127.0.0.1:")
        assert rec["user_agent"].startswith("grpc-python/")
        assert rec["http_status"] == 200
    by_id = {rec["request_id"]: rec for rec in lines}
    r = by_id["call-ok"]
    assert (r["grpc_code"], r["route"], r["cluster"], r["attempts"]) == ("OK", "echo", "backend", 1)
    assert r["upstream"] == addr[ok[1]]  # the backend that answered
    assert r["path"] == "/test.Echo/Unary" and r["grpc_message"] is None
    assert r["request_bytes"] == 5 + len(b"hello") and r["response_bytes"] == 5 + len(b"hello")
    # grpcio sends what is left of its 10 s, rounded up to a coarser unit
    # (grpc-core encodes 10 s less a little as 10100m at times).
    assert 0 < r["grpc_timeout_ms"] <= 11000
    r = by_id["call-app"]
    assert (r["grpc_code"], r["grpc_message"], r["attempts"], r["upstream"]) == (
        "NOT_FOUND", "no such thing", 1, addr[app[1]])
    assert r["grpc_timeout_ms"] is None
    r = by_id["call-noroute"]
    assert (r["grpc_code"], r["route"], r["cluster"], r["upstream"], r["attempts"]) == (
        "UNIMPLEMENTED", "none", "none", None, 0)
    assert r["path"] == "/other.Svc/Method"
    r = by_id["call-dead"]
    # The endpoint tried, though it answered nothing: which replica failed.
    assert (r["grpc_code"], r["route"], r["cluster"], r["upstream"]) == (
        "UNAVAILABLE", "default/1", "dead", logged.dead_addr)
    assert r["attempts"] >= 1 and r["grpc_message"]


def raw_call(port, extra):
    """One unary call from a raw HTTP/2 client (headers as given, no user-agent); -> its grpc-status."""
    s, c = raw_h2(port)
    try:
        c.send_headers(1, grpc_headers("/test.Echo/Unary", extra))
        c.send_data(1, b"\x00\x00\x00\x00\x02hi", end_stream=True)
        s.sendall(c.data_to_send())
        out = read_until_closed(s, c, 1)
        return (out["trailers"] or out["headers"] or {}).get(b"grpc-status")
    finally:
        s.close()


def test_grpc_timeout_is_logged_in_milliseconds_as_the_client_wrote_it(logged):
    sent = [("250m", 250), ("1234567u", 1234.567), ("2S", 2000), ("1M", 60000), ("99999999n", 100)]
    for value, _ in sent:
        assert raw_call(logged.port, [("grpc-timeout", value), ("x-request-id", "t-" + value)]) == b"0"
    assert raw_call(logged.port, [("grpc-timeout", "12x"), ("x-request-id", "t-bad")]) == b"13"  # INTERNAL
    by_id = {r["request_id"]: r for r in map(json.loads, wait_lines(logged.log_path, len(sent) + 1))}
    for value, ms in sent:
        assert by_id["t-" + value]["grpc_timeout_ms"] == ms
        assert by_id["t-" + value]["authority"] == "test" and by_id["t-" + value]["user_agent"] is None
    assert by_id["t-bad"]["grpc_timeout_ms"] is None and by_id["t-bad"]["grpc_code"] == "INTERNAL"


def test_a_retried_call_logs_its_attempts_and_the_endpoint_that_answered(logged, pair):
    a1, a2 = pair
    before = a1.events()["calls"]
    outcomes = [unary(logged, metadata=[("x-fail-on", "a1")]) for _ in range(6)]
    assert [o[:2] for o in outcomes] == [(grpc.StatusCode.OK, "a2")] * 6
    lines = [json.loads(x) for x in wait_lines(logged.log_path, 6)]
    assert all(r["grpc_code"] == "OK" and r["upstream"] == a2.addr for r in lines)
    assert all(r["attempts"] in (1, 2) for r in lines)
    # Each attempt on a1 failed and was retried on a2: one extra attempt each.
    assert sum(r["attempts"] - 1 for r in lines) == a1.events()["calls"] - before > 0


def test_the_logged_request_id_is_what_the_backend_saw(logged):
    seen = []
    for _ in range(5):
        code, _, trailers = unary(logged)  # no x-request-id: grelay makes one
        assert code == grpc.StatusCode.OK
        seen.append(trailers["x-request-id-t"])  # the echo backend returns x-* metadata as trailers
    code, _, trailers = unary(logged, metadata=[("x-request-id", "mine")])
    seen.append(trailers["x-request-id-t"])
    assert seen[-1] == "mine"
    assert all(UUID4.match(x) for x in seen[:-1]) and len(set(seen)) == 6
    lines = [json.loads(x) for x in wait_lines(logged.log_path, 6)]
    assert sorted(r["request_id"] for r in lines) == sorted(seen)


def test_sigusr1_after_a_rename_writes_later_lines_to_a_new_file(logged):
    for i in range(3):
        assert unary(logged, metadata=[("x-request-id", "before-%d" % i)])[0] == grpc.StatusCode.OK
    wait_lines(logged.log_path, 3)
    rotated = logged.log_path + ".1"
    os.rename(logged.log_path, rotated)  # logrotate without copytruncate
    logged.proc.send_signal(signal.SIGUSR1)
    wait_log(logged, "SIGUSR1: reopening the access log")
    for i in range(2):
        assert unary(logged, metadata=[("x-request-id", "after-%d" % i)])[0] == grpc.StatusCode.OK
    after = [json.loads(x)["request_id"] for x in wait_lines(logged.log_path, 2)]
    assert sorted(after) == ["after-0", "after-1"]
    assert sorted(json.loads(x)["request_id"] for x in read_lines(rotated)) == ["before-0", "before-1", "before-2"]
    assert oct(os.stat(logged.log_path).st_mode & 0o777) == oct(0o644 & ~current_umask())


def current_umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def test_a_text_template_line(pair, dead, grelay_factory, tmp_path):
    port = free_port()
    path = str(tmp_path / "text.log")
    tmpl = "%START_TIME% %GRPC_CODE% %PATH% rid=%REQUEST_ID% up=%UPSTREAM% n=%ATTEMPTS% t=%GRPC_TIMEOUT_MS% 100%%"
    g = grelay_factory(config(port, path, [pair[0].addr], dead.addr, format="text", template=tmpl), port)
    assert unary(g, metadata=[("x-request-id", "text-1")], timeout=None)[0] == grpc.StatusCode.OK
    assert unary(g, path="/other.Svc/M", metadata=[("x-request-id", "text-2")], timeout=None)[0] == \
        grpc.StatusCode.UNIMPLEMENTED
    lines = wait_lines(path, 2)
    by_rid = {re.search(r"rid=(\S+)", x).group(1): x for x in lines}
    stamp, rest = by_rid["text-1"].split(" ", 1)
    assert TIME.match(stamp)
    assert rest == "OK /test.Echo/Unary rid=text-1 up=%s n=1 t=- 100%%" % pair[0].addr
    assert by_rid["text-2"].split(" ", 1)[1] == "UNIMPLEMENTED /other.Svc/M rid=text-2 up=- n=0 t=- 100%"


def test_a_reload_changes_the_file_and_the_format(pair, dead, grelay_factory, tmp_path):
    port = free_port()
    first, second = str(tmp_path / "first.log"), str(tmp_path / "second.log")
    g = grelay_factory(config(port, first, [pair[0].addr], dead.addr), port)
    assert unary(g, metadata=[("x-request-id", "in-json")])[0] == grpc.StatusCode.OK
    assert json.loads(wait_lines(first, 1)[0])["request_id"] == "in-json"
    g.write_config(config(port, second, [pair[0].addr], dead.addr, format="text", template="%REQUEST_ID% %GRPC_CODE%"))
    g.proc.send_signal(signal.SIGHUP)
    wait_log(g, "reload: done")
    assert unary(g, metadata=[("x-request-id", "in-text")])[0] == grpc.StatusCode.OK
    assert wait_lines(second, 1) == ["in-text OK"]
    assert len(read_lines(first)) == 1


def test_dev_stdout_gets_the_lines(pair, dead, grelay_factory, tmp_path):
    out = str(tmp_path / "stdout.txt")

    def stdout_to_file():  # in the child, before exec: grelay's fd 1 is this file
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.close(fd)

    port = free_port()
    g = grelay_factory(config(port, "/dev/stdout", [pair[0].addr], dead.addr), port, preexec_fn=stdout_to_file)
    assert unary(g, metadata=[("x-request-id", "to-stdout")])[0] == grpc.StatusCode.OK
    assert json.loads(wait_lines(out, 1)[0])["request_id"] == "to-stdout"
    g.proc.send_signal(signal.SIGUSR1)  # not reopened: still the same descriptor
    wait_log(g, "SIGUSR1: reopening the access log")
    assert unary(g, metadata=[("x-request-id", "still-stdout")])[0] == grpc.StatusCode.OK
    assert [json.loads(x)["request_id"] for x in wait_lines(out, 2)] == ["to-stdout", "still-stdout"]


@pytest.mark.parametrize("text", [False, True])
def test_grpc_web_calls_name_their_protocol(pair, dead, grelay_factory, tmp_path, text):
    port = free_port()
    path = str(tmp_path / "web.log")
    cfg = config(port, path, [pair[0].addr], dead.addr)
    cfg["listeners"][0]["grpc_web"] = True
    g = grelay_factory(cfg, port)
    status, _, msgs, trailers = web_call(g.port, "/test.Echo/Unary", b"from a browser", text,
                                         headers=[("x-request-id", "web-1"), ("user-agent", "Mozilla/5.0 test")])
    assert status == 200 and msgs == [b"from a browser"] and trailers["grpc-status"] == "0"
    r = json.loads(wait_lines(path, 1)[0])
    assert (r["protocol"], r["grpc_code"], r["request_id"], r["upstream"]) == (
        "grpc-web-text" if text else "grpc-web", "OK", "web-1", pair[0].addr)
    assert r["user_agent"] == "Mozilla/5.0 test" and r["authority"] == "grelay.test"


def run_grelay(cfg, tmp_path):
    path = tmp_path / "grelay.yaml"
    path.write_text(json.dumps(cfg))
    return subprocess.run([GRELAY, "--config", str(path)], capture_output=True, timeout=20)


def test_a_file_that_cannot_be_opened_stops_grelay_at_start(tmp_path):
    port = free_port()
    cfg = simple_config(port, ["127.0.0.1:1"])
    cfg["access_log"] = {"path": str(tmp_path / "no-such-dir" / "access.log")}
    p = run_grelay(cfg, tmp_path)
    assert p.returncode == 1
    assert b"access_log: cannot open " + str(tmp_path / "no-such-dir" / "access.log").encode() + \
        b": No such file or directory" in p.stderr


def test_an_unknown_template_operator_is_a_config_error(tmp_path):
    cfg = simple_config(free_port(), ["127.0.0.1:1"])
    cfg["access_log"] = {"path": "/dev/stdout", "format": "text", "template": "%START_TIME% %NOPE%"}
    p = run_grelay(cfg, tmp_path)
    assert p.returncode == 1
    assert re.search(rb"grelay\.yaml:\d+:\d+: access_log: template: unknown operator %NOPE% at offset 13", p.stderr), \
        p.stderr
