"""Outlier ejection (docs/health.md): three real grpcio backends in this
process, each counting the calls it gets; one (or two) of them answers
every call with UNAVAILABLE, trailers-only or in trailers after a DATA
message. grelay runs one worker (ejection is per worker), round robin, and
routes without a retry_policy. Waits are bounded polls of GET /clusters,
never sleeps that assume a speed."""
import collections
import json
import threading
import time
from concurrent import futures

import grpc
import pytest

from harness import free_port, simple_config
from test_admin import Admin
from test_health import metric, wait_for

UNARY, STREAM = "/test.Echo/Unary", "/test.Echo/Stream"


class FlakyBackend:
    """A grpcio server: UNARY answers OK, or UNAVAILABLE trailers-only when
    self.failing (or holds the call while self.hold, until the call ends);
    STREAM sends initial metadata and one message, then ends OK, or
    UNAVAILABLE in trailers when self.failing. Counts its calls."""

    def __init__(self, name):
        self.name, self.failing, self.hold = name, False, False
        self.lock = threading.Lock()
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers([self])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def service(self, details):
        if details.method == UNARY:
            return grpc.unary_unary_rpc_method_handler(self.unary)
        if details.method == STREAM:
            return grpc.unary_stream_rpc_method_handler(self.stream)
        return None

    def count(self):
        with self.lock:
            self.calls += 1

    def unary(self, request, context):
        self.count()
        for _ in range(500):  # held: until the call is cancelled, 10 s at most
            if not self.hold or not context.is_active():
                break
            time.sleep(0.02)
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "%s is failing" % self.name)  # nothing sent: trailers-only
        context.send_initial_metadata([("x-backend", self.name)])
        return request

    def stream(self, request, context):
        self.count()
        context.send_initial_metadata([("x-backend", self.name)])
        yield b"first message of " + self.name.encode()
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "%s failed after a message" % self.name)  # in trailers

    def seen(self):
        with self.lock:
            return self.calls


def start(grelay_factory, backends, workers=1, **outlier):
    port, admin_port = free_port(), free_port()
    extra = {} if outlier.get("off") else {"outlier_detection": outlier}
    cfg = simple_config(port, [b.addr for b in backends], cluster_extra=extra, workers=workers)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    g = grelay_factory(cfg, port)
    g.admin = Admin(admin_port)
    return g


def endpoints(g):
    _, _, body = g.admin.get("/clusters")
    return {e["address"]: e for e in json.loads(body)["clusters"][0]["endpoints"]}


def calls(g, n, method=UNARY, options=None):
    """n calls one after the other; the status each got, counted."""
    got = collections.Counter()
    with grpc.insecure_channel(g.addr, options=options) as ch:
        if method == UNARY:
            call = ch.unary_unary(UNARY)
            for i in range(n):
                try:
                    call(b"%d" % i, timeout=10)
                    got["OK"] += 1
                except grpc.RpcError as e:
                    got[e.code().name] += 1
        else:
            call = ch.unary_stream(STREAM)
            for i in range(n):
                it = call(b"%d" % i, timeout=10)
                try:
                    assert next(it).startswith(b"first message of ")  # the DATA reached the client
                    for _ in it:
                        pass
                    got["OK"] += 1
                except grpc.RpcError as e:
                    got[e.code().name] += 1
    return got


def stop_all(bs):
    for b in bs:
        b.server.stop(0)


def ejected_then_back(grelay_factory, method):
    bs = [FlakyBackend(n) for n in ("b1", "b2", "b3")]
    try:
        g = start(grelay_factory, bs, consecutive_failures=3, base_ejection_time="1s", max_ejection_time="10s")
        bs[1].failing = True
        # Round robin: b2 gets every third call; its third failure ejects it.
        assert calls(g, 9, method) == {"OK": 6, "UNAVAILABLE": 3}
        e = endpoints(g)[bs[1].addr]
        assert e["health"] == "ejected", e
        assert e["ejection"]["reason"] == "consecutive_failures", e
        assert 0 < e["ejection"]["for_s"] <= 1.0 and e["ejection"]["until"].endswith("Z"), e
        assert "the last with UNAVAILABLE" in e["why"] and e["outlier_ejections"] == 1, e
        assert metric(g, "grelay_upstream_ejections_total", cluster="backend", endpoint=bs[1].addr,
                      reason="consecutive_failures") == 1
        assert metric(g, "grelay_upstream_ejections_total", cluster="backend", endpoint=bs[1].addr,
                      reason="connect_failure") == 0
        assert metric(g, "grelay_upstream_ejected", cluster="backend", endpoint=bs[1].addr) == 1
        assert "upstream %s of cluster backend ejected for 1.000 s: 3 calls in a row failed" % bs[1].addr in g.log()
        # While ejected it gets no call (unless the second passes meanwhile:
        # then it is back, and that is the next check).
        before = bs[1].seen()
        got = calls(g, 6, method)
        if endpoints(g)[bs[1].addr]["health"] == "ejected":
            assert got == {"OK": 6} and bs[1].seen() == before, (got, bs[1].seen(), before)
        wait_for("b2 back", lambda: endpoints(g)[bs[1].addr]["health"] == "healthy")
        # The worker logs the return just after it publishes it: the admin
        # can show "healthy" a moment before the line is written.
        back = "upstream %s of cluster backend returns from its ejection" % bs[1].addr
        wait_for("the return logged", lambda: back in g.log(), 5)
        bs[1].failing = False
        before = bs[1].seen()
        assert calls(g, 6, method) == {"OK": 6}
        assert bs[1].seen() == before + 2  # its share again
    finally:
        stop_all(bs)


def test_trailers_only_unavailable_ejects_and_the_endpoint_comes_back(grelay_factory):
    ejected_then_back(grelay_factory, UNARY)


def test_unavailable_in_trailers_after_data_ejects_too(grelay_factory):
    """Envoy's envoy#8228: a status in trailers after DATA counts as well."""
    ejected_then_back(grelay_factory, STREAM)


def test_max_ejection_percent_keeps_all_but_one_in_service(grelay_factory):
    bs = [FlakyBackend(n) for n in ("b1", "b2", "b3")]
    try:
        g = start(grelay_factory, bs, consecutive_failures=2, base_ejection_time="30s", max_ejection_percent=50)
        bs[1].failing = bs[2].failing = True
        calls(g, 12)
        eps = endpoints(g)
        states = sorted(eps[b.addr]["health"] for b in bs)
        assert states == ["ejected", "healthy", "healthy"], eps  # 50% of 3 is one endpoint
        kept = bs[2] if eps[bs[1].addr]["health"] == "ejected" else bs[1]
        assert eps[kept.addr]["outlier_ejections"] == 0, eps
        before = kept.seen()
        assert calls(g, 4) == {"OK": 2, "UNAVAILABLE": 2}  # the other failing one keeps its share
        assert kept.seen() == before + 2
        assert sum(metric(g, "grelay_upstream_ejections_total", cluster="backend", endpoint=b.addr,
                          reason="consecutive_failures") for b in bs) == 1
    finally:
        stop_all(bs)


def test_without_outlier_detection_failed_calls_never_eject(grelay_factory):
    bs = [FlakyBackend(n) for n in ("b1", "b2", "b3")]
    try:
        g = start(grelay_factory, bs, off=True)
        bs[1].failing = True
        assert calls(g, 30) == {"OK": 20, "UNAVAILABLE": 10}
        assert bs[1].seen() == 10
        assert all(e["health"] == "healthy" for e in endpoints(g).values())
    finally:
        stop_all(bs)


def test_client_cancels_are_not_failures(grelay_factory):
    """A call the client cancels says nothing of the endpoint, even with
    cancelled among failure_codes (grelay resets the upstream stream: no
    status came from the backend); UNAVAILABLE answers then still eject."""
    b = FlakyBackend("b1")
    try:
        g = start(grelay_factory, [b], consecutive_failures=2, failure_codes=["cancelled", "unavailable"],
                  base_ejection_time="30s")
        b.hold = True
        with grpc.insecure_channel(g.addr) as ch:
            call = ch.unary_unary(UNARY)
            for i in range(3):
                fut = call.future(b"held", timeout=30)
                wait_for("call %d at the backend" % i, lambda i=i: b.seen() == i + 1)
                fut.cancel()
                assert fut.cancelled()
        wait_for("the cancelled calls over", lambda: metric(g, "grelay_upstream_requests_in_flight", cluster="backend",
                                                              endpoint=b.addr) == 0)
        e = endpoints(g)[b.addr]
        assert e["health"] == "healthy" and e["outlier_ejections"] == 0, e
        b.hold, b.failing = False, True
        assert calls(g, 2) == {"UNAVAILABLE": 2}
        e = endpoints(g)[b.addr]
        assert e["health"] == "ejected" and e["outlier_ejections"] == 1, e  # the cancels did not break the run
    finally:
        b.server.stop(0)


def test_each_worker_ejects_on_its_own(grelay_factory):
    """Two workers, each counting its own calls: the failing endpoint gets
    at most workers x consecutive_failures calls before every worker that
    serves calls has ejected it, and each ejection is its worker's."""
    bs = [FlakyBackend(n) for n in ("b1", "b2", "b3")]
    try:
        g = start(grelay_factory, bs, workers=2, consecutive_failures=3, base_ejection_time="30s")
        bs[1].failing = True
        got = collections.Counter()
        for _ in range(8):  # connections, spread over the workers by SO_REUSEPORT
            got += calls(g, 9, options=[("grpc.use_local_subchannel_pool", 1)])
        assert bs[1].seen() <= 2 * 3 and got["UNAVAILABLE"] == bs[1].seen(), (got, bs[1].seen())
        ejections = metric(g, "grelay_upstream_ejections_total", cluster="backend", endpoint=bs[1].addr,
                           reason="consecutive_failures")
        lines = [line for line in g.log().splitlines() if "%s of cluster backend ejected" % bs[1].addr in line]
        assert 1 <= ejections <= 2 and len(lines) == ejections, (ejections, lines)
        assert bs[1].seen() == 3 * ejections  # each worker that ejected it sent it its 3 failures, then none
        assert len({line.split(": ")[0].split()[-1] for line in lines}) == ejections, lines  # w0:, w1:
    finally:
        stop_all(bs)


def test_ejections_that_follow_each_other_fast_keep_grelay_sound(grelay_factory, tmp_path):
    """One endpoint that fails every call, ejected after each failure for
    1 ms: many calls in flight end just as each ejection does, so a new one
    can begin before the old one's timer has fired (it fires on the loop's
    cached clock, an iteration later). grelay must not re-arm a timer libev
    still holds (it did: libev's timer heap broke after ~1,000 calls). h2load
    drives the load; grelay must serve every call and exit cleanly, without
    a sanitizer report."""
    import subprocess
    b = FlakyBackend("fast")
    b.failing = True
    try:
        g = start(grelay_factory, [b], consecutive_failures=1, base_ejection_time="1ms", max_ejection_time="1ms",
                  max_ejection_percent=100)
        body = tmp_path / "req.bin"
        body.write_bytes(b"\0\0\0\0\3abc")
        r = subprocess.run(["h2load", "-n", "6000", "-c", "8", "-m", "32", "-d", str(body),
                            "-H", "content-type: application/grpc", "-H", "te: trailers",
                            "http://%s%s" % (g.addr, UNARY)], capture_output=True, text=True, timeout=120)
        assert "6000 done" in r.stdout, r.stdout + r.stderr
        assert g.proc.poll() is None, g.log()[-3000:]
        assert metric(g, "grelay_upstream_ejections_total", cluster="backend", endpoint=b.addr,
                      reason="consecutive_failures") > 10, g.log()[-2000:]
        assert b.seen() == 6000  # every call reached it (one endpoint: picks fall back to it)
    finally:
        stop_all([b])


def test_an_endpoint_that_answers_plain_http_is_ejected(grelay_factory):
    """A web server where a gRPC backend should be: HTTP 503 pages, or 200
    with text/html (gRPC reads both as failures: UNAVAILABLE, UNKNOWN), eject
    it like gRPC failures do."""
    from harness import Backend
    for what, code in (("Http503", "UNAVAILABLE"), ("Http200Html", "UNKNOWN")):
        raw = Backend("raw", raw=True)
        try:
            g = start(grelay_factory, [raw], consecutive_failures=2, base_ejection_time="60s")
            with grpc.insecure_channel(g.addr) as ch:
                for i in range(2):
                    with pytest.raises(grpc.RpcError) as e:
                        ch.unary_unary("/test.Echo/" + what)(b"x", timeout=10)
                    assert e.value.code().name == code, e.value
            wait_for("the plain-HTTP endpoint ejected", lambda: endpoints(g)[raw.addr]["health"] == "ejected")
            assert metric(g, "grelay_upstream_ejections_total", cluster="backend", endpoint=raw.addr,
                          reason="consecutive_failures") == 1
        finally:
            raw.stop()
