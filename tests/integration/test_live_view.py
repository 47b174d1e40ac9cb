"""The live view (GET / on the admin port) in Debian's chromium, driven by
npm's playwright-core (tests/browser/live_view.mjs): after a known mix of
calls through grelay to real grpcio backends, the page shows each method
with its counts and statuses, the endpoints, the listener, and it keeps
refreshing from /stats.json (a call made after the page loaded shows up).

The test also takes a screenshot; with GRELAY_UPDATE_SCREENSHOT=1 it is
copied to docs/live-view.png (the docs' picture)."""
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time

import grpc
import pytest

from harness import Backend, ROOT, free_port, simple_config
from prometheus import prometheus_factory  # noqa: F401 (a fixture)

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
MAX_UPDATES = 40  # page refreshes (1 s apart) a condition may take to show


class LiveView:
    """One chromium page on the live view; commands and answers are JSON
    lines over the driver's stdin and stdout, each answer awaited with a
    bound."""

    def __init__(self, url):
        self.proc = subprocess.Popen(["node", "live_view.mjs", url], cwd=BROWSER_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        first = self._answer(60)
        assert first.get("ok"), first

    def _answer(self, seconds):
        ready, _, _ = select.select([self.proc.stdout], [], [], seconds)
        if not ready:
            raise AssertionError("the browser driver said nothing in %ds" % seconds)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError("the browser driver ended: " + self.proc.stderr.read())
        return json.loads(line)

    def cmd(self, seconds=45, **c):
        self.proc.stdin.write(json.dumps(c) + "\n")
        self.proc.stdin.flush()
        out = self._answer(seconds)
        assert out.get("ok"), out
        return out

    def read(self):
        out = self.cmd(cmd="read")
        assert out["errors"] == [], out["errors"]  # no script error on the page
        assert out["foreign"] == [], out["foreign"]  # it asked nothing of another origin
        return out["state"]

    def wait_until(self, pred, what):
        """Reads the page after each refresh until pred(state) holds, at most
        MAX_UPDATES refreshes; returns that state."""
        state = self.read()
        for _ in range(MAX_UPDATES):
            if pred(state):
                return state
            self.cmd(cmd="wait_updates", n=state["updates"] + 1)
            state = self.read()
        assert pred(state), "the page never showed %s:\n%s" % (what, json.dumps(state, indent=1))
        return state

    def close(self):
        try:
            self.cmd(cmd="quit")
        finally:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def rows(state, table, **attrs):
    return [r for r in state["tables"][table] if all(r["attrs"].get(k) == v for k, v in attrs.items())]


def one_row(state, table, **attrs):
    found = rows(state, table, **attrs)
    return found[0] if len(found) == 1 else None


def totals(row):
    return {code: c["total"] for code, c in row["codes"].items()} if row else None


@pytest.fixture(scope="module")
def live_backends():
    started = []
    try:
        for name in ("live-1", "live-2"):
            started.append(Backend(name))
        yield started
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def live_grelay(live_backends, grelay_factory):
    if not os.path.exists("/usr/bin/chromium") or not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules")):
        pytest.fail("the live view test needs /usr/bin/chromium and tests/browser/node_modules: run scripts/test.sh")
    port, admin_port = free_port(), free_port()
    cfg = simple_config(port, [b.addr for b in live_backends])
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    g = grelay_factory(cfg, port)
    g.admin_url = "http://127.0.0.1:%d/" % admin_port
    return g


def unary(ch, n, fail=None, delay_ms=None):
    """n unary calls; returns their status codes."""
    call = ch.unary_unary("/test.Echo/Unary")
    md = ([("x-fail-code", fail)] if fail else []) + ([("x-delay-ms", str(delay_ms))] if delay_ms else [])
    codes = []
    for i in range(n):
        try:
            call(b"live %d" % i, metadata=md, timeout=10)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    return codes


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_the_live_view_shows_the_calls_and_refreshes(live_grelay, live_backends):
    eps = sorted(b.addr for b in live_backends)
    with grpc.insecure_channel(live_grelay.addr) as ch:
        # the known mix: 3 OK and 2 NOT_FOUND on Unary, one ServerStream
        # call held open (in flight), one call no route matches
        assert unary(ch, 3) == [grpc.StatusCode.OK] * 3
        assert unary(ch, 2, fail="NOT_FOUND") == [grpc.StatusCode.NOT_FOUND] * 2
        with pytest.raises(grpc.RpcError) as no_route:
            ch.unary_unary("/nowhere.Svc/Go")(b"x", timeout=10)
        assert no_route.value.code() == grpc.StatusCode.UNIMPLEMENTED
        held = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 2, "size": 8, "hold": True, "id": "live-held"}).encode(), timeout=60)
        assert len(next(held)) == 8  # the first message: the call is under way

        view = LiveView(live_grelay.admin_url)
        try:
            def first_mix(s):
                m = one_row(s, "methods", service="test.Echo", method="Unary")
                r = one_row(s, "routes", route="default/0")
                return (m is not None and m["cells"]["count"] == "5" and totals(m) == {"OK": 3, "NOT_FOUND": 2}
                        and r is not None and r["cells"]["in_flight"] == "1")

            s = view.wait_until(first_mix, "3 OK + 2 NOT_FOUND on test.Echo/Unary, one call in flight")
            m = one_row(s, "methods", service="test.Echo", method="Unary")
            assert m["attrs"]["route"] == "default/0" and m["attrs"]["cluster"] == "backend"
            assert m["attrs"]["listener"] == "ingress"
            assert m["codes"]["OK"]["kind"] == "code ok" and m["codes"]["NOT_FOUND"]["kind"] == "code client"
            # the call no route matched: UNIMPLEMENTED, route "none"
            none = rows(s, "methods", route="none")
            assert [totals(r) for r in none] == [{"UNIMPLEMENTED": 1}], none
            assert none[0]["codes"]["UNIMPLEMENTED"]["kind"] == "code server"
            # both endpoints, healthy; the attempts they answered add up to the calls
            # that reached them (5 unary, and the held stream, in flight)
            shown = rows(s, "endpoints", cluster="backend")
            assert sorted(r["attrs"]["endpoint"] for r in shown) == eps
            assert all(r["attrs"]["health"] == "healthy" for r in shown), shown
            ok = sum(totals(r).get("OK", 0) for r in shown)
            not_found = sum(totals(r).get("NOT_FOUND", 0) for r in shown)
            assert (ok, not_found) == (3, 2), shown
            assert sum(int(r["cells"]["in_flight"]) for r in shown) == 1
            assert sum(int(r["cells"]["connections"]) for r in shown) >= 1
            # the listener: this channel's HTTP/2 connection, the held call
            ls = one_row(s, "listeners", listener="ingress")
            assert ls is not None and int(ls["cells"]["h2"]) >= 1 and ls["cells"]["in_flight"] == "1", ls
            assert s["header"]["state"] == "ready"
            # no data became markup
            assert s["foreign_elements"] == 0

            # calls made after the page loaded show up in a later refresh;
            # the held call ends
            held.cancel()
            assert unary(ch, 1, fail="PERMISSION_DENIED") == [grpc.StatusCode.PERMISSION_DENIED]

            def second_mix(s):
                m = one_row(s, "methods", service="test.Echo", method="Unary")
                r = one_row(s, "routes", route="default/0")
                return (m is not None and m["cells"]["count"] == "6"
                        and totals(m) == {"OK": 3, "NOT_FOUND": 2, "PERMISSION_DENIED": 1}
                        and r is not None and r["cells"]["in_flight"] == "0")

            s2 = view.wait_until(second_mix, "the PERMISSION_DENIED call made after load")
            assert s2["updates"] > s["updates"]
            m = one_row(s2, "methods", service="test.Echo", method="Unary")
            assert m["codes"]["PERMISSION_DENIED"]["kind"] == "code client"
            # rates need two reads: by now each has a number
            assert m["cells"]["rate"] != "-" and float(m["cells"]["rate"]) >= 0

            # the picture for the docs: calls at a steady pace, a mix of statuses
            shot = os.path.join(tempfile.mkdtemp(prefix="live-view-"), "live-view.png")
            for i in range(3):
                unary(ch, 12, delay_ms=3 + 4 * i)
                unary(ch, 1, fail="UNAVAILABLE")
                unary(ch, 1, fail="NOT_FOUND")
                ch.unary_unary("/nowhere.Svc/Go").future(b"x", timeout=10).exception()
                view.cmd(cmd="wait_updates", n=view.read()["updates"] + 1)
            view.cmd(cmd="screenshot", path=shot)
            assert png_size(shot) == (1200, 800)
            if os.environ.get("GRELAY_UPDATE_SCREENSHOT") == "1":
                shutil.copyfile(shot, os.path.join(ROOT, "docs", "live-view.png"))
            shutil.rmtree(os.path.dirname(shot))
        finally:
            view.close()


def test_the_live_view_shows_circuit_breaker_trips(live_backends, grelay_factory):
    """A cluster with max_requests 1: one call held open, two refused; the
    Clusters table shows the call in flight and the trips by limit."""
    if not os.path.exists("/usr/bin/chromium") or not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules")):
        pytest.fail("the live view test needs /usr/bin/chromium and tests/browser/node_modules: run scripts/test.sh")
    port, admin_port = free_port(), free_port()
    cfg = simple_config(port, [live_backends[0].addr], cluster_extra={"circuit_breakers": {"max_requests": 1}})
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    g = grelay_factory(cfg, port)
    with grpc.insecure_channel(g.addr) as ch:
        held = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 2, "size": 8, "hold": True, "id": "live-breaker"}).encode(), timeout=60)
        assert len(next(held)) == 8
        assert unary(ch, 2) == [grpc.StatusCode.UNAVAILABLE] * 2
        view = LiveView("http://127.0.0.1:%d/" % admin_port)
        try:
            def tripped(s):
                c = one_row(s, "clusters", cluster="backend")
                return c is not None and c["cells"]["requests"] == "1" and totals(c).get("max_requests") == 2

            s = view.wait_until(tripped, "one call in flight and two max_requests trips on cluster backend")
            c = one_row(s, "clusters", cluster="backend")
            assert (c["cells"]["pending"], c["cells"]["retries"]) == ("0", "0")
            assert totals(c) == {"max_requests": 2}  # limits that never tripped show no chip
            assert c["codes"]["max_requests"]["kind"] == "code server"
            held.cancel()
            s = view.wait_until(lambda s: one_row(s, "clusters", cluster="backend")["cells"]["requests"] == "0",
                                "the held call's end")
        finally:
            view.close()
def test_the_live_view_shows_an_ejection(live_backends, live_grelay, grelay_factory):
    """Outlier ejection (docs/health.md) on the page: both endpoints answer
    UNAVAILABLE (x-fail-code); with 2 in a row ejecting and 50% of 2, one is
    ejected (for a minute), the other is not, and the page says which, why
    and until when."""
    port, admin_port = free_port(), free_port()
    cfg = simple_config(port, [b.addr for b in live_backends], cluster_extra={"outlier_detection": {
        "consecutive_failures": 2, "base_ejection_time": "60s", "max_ejection_percent": 50}})
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    g = grelay_factory(cfg, port)
    with grpc.insecure_channel(g.addr) as ch:
        assert unary(ch, 4, fail="UNAVAILABLE") == [grpc.StatusCode.UNAVAILABLE] * 4
    view = LiveView("http://127.0.0.1:%d/" % admin_port)
    try:
        s = view.wait_until(lambda s: len(rows(s, "endpoints", health="ejected")) == 1, "one ejected endpoint")
        ejected = rows(s, "endpoints", health="ejected")[0]
        assert ejected["attrs"]["ejection"] == "consecutive_failures", ejected
        assert ejected["attrs"]["until"].endswith("Z"), ejected
        health = ejected["cells"]["health"]
        assert "calls in a row failed (consecutive_failures), the last with UNAVAILABLE" in health, health
        assert "(consecutive failures, until " in health and health.endswith(" UTC)"), health
        other = rows(s, "endpoints", health="healthy")
        assert len(other) == 1 and other[0]["attrs"]["ejection"] == "", other  # 50% of 2: one at most
    finally:
        view.close()


def test_the_page_computes_quantiles_as_prometheus_does(live_grelay, prometheus_factory):  # noqa: F811
    """p50/p99 in the page and histogram_quantile in a real Prometheus, on the
    same bucket counts (served to Prometheus by a tiny exposition server)."""
    import http.server
    import threading
    ub = [0.005, 0.01, 0.025, 0.05, 0.1]
    cases = [[0, 4, 10, 10, 10, 10], [3, 3, 3, 7, 9, 9], [0, 0, 0, 0, 0, 5], [5, 5, 5, 5, 5, 5], [1, 2, 4, 8, 16, 17]]
    text = "# TYPE h histogram\n"
    for i, cum in enumerate(cases):
        for b, c in zip([str(x) for x in ub] + ["+Inf"], cum):
            text += 'h_bucket{case="%d",le="%s"} %d\n' % (i, b, c)
        text += 'h_count{case="%d"} %d\nh_sum{case="%d"} 1\n' % (i, cum[-1], i)

    class Exposition(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Exposition)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = "127.0.0.1:%d" % server.server_address[1]
        after = time.time()
        prom = prometheus_factory({"h": [target]})
        prom.wait_scraped(target, after)
        view = LiveView(live_grelay.admin_url)
        try:
            for q in (0.5, 0.99, 0.25):
                want = prom.query("histogram_quantile(%s, h_bucket)" % q)
                for i, cum in enumerate(cases):
                    got = view.cmd(cmd="quantile", q=q, ub=ub, cum=cum)["value"]
                    p = [v for k, v in want.items() if dict(k)["case"] == str(i)][0]
                    assert got == pytest.approx(p, rel=1e-9), (q, cum, got, p)
        finally:
            view.close()
    finally:
        server.shutdown()
        server.server_close()


def test_the_live_view_shows_panic_and_calls_without_a_hash_key(grelay_factory):
    """A ring_hash cluster of two health-checked backends: calls without the
    x-user-id key are counted (they go at random); when both backends say
    NOT_SERVING the cluster is in panic, and the Clusters table says so;
    SERVING again ends it."""
    from test_health import NOT_SERVING, SERVING, backends_of, health_config, stop_all
    if not os.path.exists("/usr/bin/chromium") or not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules")):
        pytest.fail("the live view test needs /usr/bin/chromium and tests/browser/node_modules: run scripts/test.sh")
    bs = backends_of("h1", "h2")
    try:
        port, admin_port = free_port(), free_port()
        cfg = health_config(port, admin_port, bs)
        cfg["clusters"][0].update({"lb_policy": "ring_hash", "hash_on": {"header": "x-user-id"}})
        g = grelay_factory(cfg, port)
        with grpc.insecure_channel(g.addr) as ch:
            call = ch.unary_unary("/test.Echo/Unary")
            for i in range(3):
                call(b"no key %d" % i, timeout=10)
            call(b"keyed", metadata=[("x-user-id", "u1")], timeout=10)
        view = LiveView("http://127.0.0.1:%d/" % admin_port)
        try:
            row_of = lambda s: one_row(s, "clusters", cluster="backend") or {"cells": {}}  # noqa: E731
            s = view.wait_until(lambda s: row_of(s)["cells"].get("hash_no_key") == "3", "3 calls without a key")
            assert row_of(s)["cells"]["panic"] == "no"
            for b in bs:
                b.status = NOT_SERVING
            s = view.wait_until(lambda s: row_of(s)["cells"].get("panic") == "panic", "the cluster in panic")
            for b in bs:
                b.status = SERVING
            view.wait_until(lambda s: row_of(s)["cells"].get("panic") == "no", "the panic's end")
        finally:
            view.close()
    finally:
        stop_all(bs)
