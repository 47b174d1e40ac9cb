"""Metrics as an operator reads them: a real Prometheus (Debian's) scrapes
grelay's admin port, and after a known mix of calls its HTTP API gives the
exact counts per grpc_code, per endpoint and per retry kind; promtool
accepts the scrape; counters survive a reload; a scan of random method
names does not grow the series."""
import time

import grpc

from harness import Backend, free_port
from prometheus import check_metrics, labels, prometheus_factory  # noqa: F401 (a fixture)
from test_admin import Admin
from test_failures import wait_for


def config(port, admin_port, a, b, c, dead_port, extra_route=False):
    routes = [
        {"name": "dead", "match": {"prefix": "/test.", "headers": [{"name": "x-case", "exact": "dead"}]},
         "cluster": "dead"},
        {"name": "flaky", "match": {"prefix": "/test.", "headers": [{"name": "x-case", "exact": "flaky"}]},
         "cluster": "flaky", "retry_policy": {"retry_on": ["unavailable"], "num_retries": 1}},
        {"name": "echo", "match": {"prefix": "/test."}, "cluster": "one"},
    ]
    if extra_route:
        routes.insert(0, {"name": "added", "match": {"prefix": "/added."}, "cluster": "one"})
    return {
        "workers": 1,
        "admin": {"address": "127.0.0.1:%d" % admin_port, "allow_mutations": True},
        "listeners": [{"name": "edge", "address": "127.0.0.1:%d" % port,
                       "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": routes}]}],
        "clusters": [
            {"name": "one", "endpoints": [{"address": a.addr}]},
            {"name": "flaky", "lb_policy": "round_robin", "endpoints": [{"address": b.addr}, {"address": c.addr}]},
            {"name": "dead", "endpoints": [{"address": "127.0.0.1:%d" % dead_port}], "connect_timeout": "1s"},
        ],
    }


def call(ch, md=(), path="/test.Echo/Unary"):
    try:
        ch.unary_unary(path)(b"hello", metadata=list(md), timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def series(prom, expr):
    """{labels: value} with the labels Prometheus adds (instance, job) left out."""
    out = {}
    for k, v in prom.query(expr).items():
        key = tuple((n, x) for n, x in k if n not in ("instance", "job", "__name__"))
        out[key] = v
    return out


def test_prometheus_counts_each_status_endpoint_and_retry(grelay_factory, prometheus_factory):
    a, b, c = Backend("a"), Backend("b"), Backend("c")
    try:
        port, admin_port, dead_port = free_port(), free_port(), free_port()
        g = grelay_factory(config(port, admin_port, a, b, c, dead_port), port)
        target = "127.0.0.1:%d" % admin_port
        prom = prometheus_factory({"grelay": [target]})
        with grpc.insecure_channel(g.addr) as ch:
            assert [call(ch) for _ in range(5)] == [grpc.StatusCode.OK] * 5
            assert call(ch, [("x-fail-code", "NOT_FOUND")]) == grpc.StatusCode.NOT_FOUND
            assert call(ch, [("x-fail-code", "NOT_FOUND")]) == grpc.StatusCode.NOT_FOUND
            assert call(ch, path="/nothing.Here/AtAll") == grpc.StatusCode.UNIMPLEMENTED
            assert call(ch, [("x-case", "dead")]) == grpc.StatusCode.UNAVAILABLE
            # Round robin over b and c: a call that goes to b first fails
            # there (trailers-only UNAVAILABLE) and is retried on c (a retry
            # picks another endpoint); where the rotation starts decides
            # whether one or both calls try b first.
            flaky = [("x-case", "flaky"), ("x-fail-on", "b")]
            assert [call(ch, flaky), call(ch, flaky)] == [grpc.StatusCode.OK] * 2
        after = time.time()
        prom.wait_scraped(target, after)

        def route(r, **kw):
            return labels(listener="edge", route=r, cluster=kw.pop("cluster", {"echo": "one"}.get(r, r)), **kw)

        got = series(prom, "grelay_requests_total")
        assert got == {
            route("echo", grpc_service="test.Echo", grpc_method="Unary", grpc_code="OK"): 5,
            route("echo", grpc_service="test.Echo", grpc_method="Unary", grpc_code="NOT_FOUND"): 2,
            route("none", cluster="none", grpc_service="other", grpc_method="other", grpc_code="UNIMPLEMENTED"): 1,
            route("dead", grpc_service="test.Echo", grpc_method="Unary", grpc_code="UNAVAILABLE"): 1,
            route("flaky", grpc_service="test.Echo", grpc_method="Unary", grpc_code="OK"): 2,
        }, got
        got = series(prom, "grelay_upstream_requests_total")
        ep = lambda cl, e, code: labels(cluster=cl, endpoint=e, grpc_code=code)  # noqa: E731
        dead = "127.0.0.1:%d" % dead_port
        assert got[ep("one", a.addr, "OK")] == 5
        assert got[ep("one", a.addr, "NOT_FOUND")] == 2
        failed_on_b = got[ep("flaky", b.addr, "UNAVAILABLE")]
        assert failed_on_b in (1, 2)
        assert got[ep("flaky", c.addr, "OK")] == 2
        assert got[ep("dead", dead, "UNAVAILABLE")] >= 1
        assert {k for k in got if dict(k)["grpc_code"] != "UNAVAILABLE" or dict(k)["cluster"] != "dead"} == {
            ep("one", a.addr, "OK"), ep("one", a.addr, "NOT_FOUND"), ep("flaky", b.addr, "UNAVAILABLE"),
            ep("flaky", c.addr, "OK")}
        assert series(prom, "grelay_upstream_connect_failures_total")[labels(cluster="dead", endpoint=dead)] >= 1
        retries = series(prom, "grelay_retries_total")
        assert retries[route("flaky", kind="configured")] == failed_on_b  # one retry per failure on b
        assert retries[route("echo", kind="configured")] == 0
        assert retries[route("echo", kind="transparent")] == 0
        # The histogram counts every call once, with the same labels minus grpc_code.
        counts = series(prom, "grelay_request_duration_seconds_count")
        assert counts[route("echo", grpc_service="test.Echo", grpc_method="Unary")] == 7
        assert counts[route("flaky", grpc_service="test.Echo", grpc_method="Unary")] == 2  # calls, not attempts
        inf = series(prom, 'grelay_request_duration_seconds_bucket{le="+Inf",route="echo"}')
        assert list(inf.values()) == [7]
        q = series(prom, 'histogram_quantile(0.5, sum by (le) (grelay_request_duration_seconds_bucket{route="echo"}))')
        assert len(q) == 1 and 0 < list(q.values())[0] <= 300
        conns = series(prom, "grelay_downstream_connections_total")
        assert conns[labels(listener="edge", protocol="h2")] >= 1
        assert conns[labels(listener="edge", protocol="http1")] == 0
        assert series(prom, "grelay_requests_in_flight") == {labels(listener="edge"): 0}
        assert series(prom, 'up{job="grelay"}') == {(): 1}
        # promtool accepts the same scrape.
        _, _, text = Admin(admin_port).get("/metrics")
        code, out = check_metrics(text)
        assert code == 0, out
    finally:
        for be in (a, b, c):
            be.stop()


def test_counters_survive_a_reload_and_random_methods_stay_other(grelay_factory, prometheus_factory):
    a, b, c = Backend("a"), Backend("b"), Backend("c")
    try:
        port, admin_port, dead_port = free_port(), free_port(), free_port()
        g = grelay_factory(config(port, admin_port, a, b, c, dead_port), port)
        admin = Admin(admin_port)
        target = "127.0.0.1:%d" % admin_port
        prom = prometheus_factory({"grelay": [target]})
        ok = labels(listener="edge", route="echo", cluster="one", grpc_service="test.Echo", grpc_method="Unary",
                    grpc_code="OK")
        with grpc.insecure_channel(g.addr) as ch:
            assert [call(ch) for _ in range(3)] == [grpc.StatusCode.OK] * 3
            g.write_config(config(port, admin_port, a, b, c, dead_port, extra_route=True))
            assert admin.post("/reload")[0] == 200
            assert call(ch) == grpc.StatusCode.OK
            # Methods the backend does not know (UNIMPLEMENTED) are not
            # admitted: 50 random names make no new series.
            for i in range(50):
                assert call(ch, path="/test.Echo/Random%d" % i) == grpc.StatusCode.UNIMPLEMENTED
        after = time.time()
        prom.wait_scraped(target, after)
        got = series(prom, "grelay_requests_total")
        assert got[ok] == 4  # 3 before the reload, 1 after: one series, never reset
        other = labels(listener="edge", route="echo", cluster="one", grpc_service="other", grpc_method="other",
                       grpc_code="UNIMPLEMENTED")
        assert got[other] == 50
        assert len(got) == 2, got
        assert series(prom, "grelay_config_reloads_total") == {labels(result="success"): 1,
                                                              labels(result="failure"): 0}
        # No counter of the kept route went back: Prometheus saw no reset.
        assert series(prom, "resets(grelay_requests_total[5m])") == {
            tuple((n, x) for n, x in k): 0 for k in got}
    finally:
        for be in (a, b, c):
            be.stop()


def scrape(admin):
    """The metrics page as {series text: value}."""
    status, _, text = admin.get("/metrics")
    assert status == 200
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_metric(admin, name, pred, seconds=10):
    """Polls the metric (bounded, test_failures.wait_for) until pred holds."""
    ok = wait_for(lambda: (lambda v: v is not None and pred(v))(scrape(admin).get(name)), seconds)
    assert ok, "%s never satisfied the condition: %r" % (name, scrape(admin).get(name))


def test_hibernation_limits_grpc_web_and_drains_are_counted(grelay_factory):
    from grpcweb_client import web_call
    a = Backend("a")
    try:
        port, admin_port = free_port(), free_port()
        cfg = {
            "workers": 1,
            "admin": {"address": "127.0.0.1:%d" % admin_port},
            "listeners": [{
                "name": "edge", "address": "127.0.0.1:%d" % port, "grpc_web": True, "hibernate_after": "100ms",
                "max_requests_per_connection": 3, "max_request_headers": "4KiB",
                "virtual_hosts": [{"name": "vh", "domains": ["*"],
                                   "routes": [{"name": "echo", "match": {"prefix": "/test."}, "cluster": "one"}]}]}],
            "clusters": [{"name": "one", "endpoints": [{"address": a.addr}]}],
        }
        g = grelay_factory(cfg, port)
        admin = Admin(admin_port)
        edge = 'listener="edge"'
        with grpc.insecure_channel(g.addr) as ch:
            assert call(ch) == grpc.StatusCode.OK
            # Idle past hibernate_after: the session is freed, then rebuilt by the next call.
            wait_metric(admin, "grelay_hibernated_connections{%s}" % edge, lambda v: v == 1)
            assert call(ch) == grpc.StatusCode.OK
            m = scrape(admin)
            assert m["grelay_hibernated_connections{%s}" % edge] == 0
            assert m["grelay_hibernations_total{%s}" % edge] >= 1
            # A header block past max_request_headers: RESOURCE_EXHAUSTED, and the limit counted.
            assert call(ch, [("x-big", "v" * 5000)]) == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The third call on that connection reached max_requests_per_connection: it was drained.
        m = scrape(admin)
        assert m['grelay_limit_hits_total{%s,limit="max_request_headers"}' % edge] == 1
        assert m["grelay_drained_connections_total{%s}" % edge] == 1
        assert m['grelay_requests_total{%s,route="echo",cluster="one",grpc_service="test.Echo",grpc_method="Unary",'
                 'grpc_code="RESOURCE_EXHAUSTED"}' % edge] == 1
        # gRPC-Web over HTTP/1.1, binary and text: counted by mode, and by protocol as connections.
        for text in (False, True):
            status, _, msgs, trailers = web_call(port, "/test.Echo/Unary", b"hi", text)
            assert (status, msgs, trailers["grpc-status"]) == (200, [b"hi"], "0")
        m = scrape(admin)
        assert m['grelay_grpc_web_requests_total{%s,mode="binary"}' % edge] == 1
        assert m['grelay_grpc_web_requests_total{%s,mode="text"}' % edge] == 1
        assert m['grelay_downstream_connections_total{%s,protocol="http1"}' % edge] == 2
        assert m['grelay_downstream_connections_total{%s,protocol="h2"}' % edge] == 1
        assert m["grelay_requests_in_flight{%s}" % edge] == 0
        code, out = check_metrics(admin.get("/metrics")[2])
        assert code == 0, out
    finally:
        a.stop()
