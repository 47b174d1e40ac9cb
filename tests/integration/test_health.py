"""Active gRPC health checks (docs/health.md): real grpcio servers, each
with a grpc.health.v1.Health/Check written by hand (raw protobuf bytes),
whose answer a test changes; grelay checks them every 200 ms. Waits are
bounded polls of GET /clusters or grelay's log, never sleeps that assume
a speed."""
import collections
import json
import threading
import time
from concurrent import futures

import grpc

from harness import free_port, simple_config
from test_failures import wait_for as poll
from test_admin import Admin
from test_dns import Dnsmasq
from test_tls import pki  # noqa: F401 (a fixture)

SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
CHECK = "/grpc.health.v1.Health/Check"


def service_of(request):
    """The service field (1) of a HealthCheckRequest, by hand."""
    if not request:
        return ""
    assert request[0] == 0x0A and request[1] < 0x80, request
    return request[2:2 + request[1]].decode()


class HealthBackend:
    """A grpcio server in this process: /test.Echo/Unary answers with its
    name in x-backend; Check answers self.status (or holds while self.hold;
    with health=False there is no health service: UNIMPLEMENTED)."""

    def __init__(self, name, health=True, tls=None, host="127.0.0.1", port=0):
        self.name, self.health = name, health
        self.status, self.hold = SERVING, False
        self.padding = 0  # bytes of an unknown field added to each answer
        self.abort = None  # a grpc.StatusCode Check ends with at once, instead of an answer
        self.lock = threading.Lock()
        self.checks = 0  # Check calls received (answered or not)
        self.services = []
        self.deadlines = []  # time_remaining() of each check (grpc-timeout)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers([self])
        if tls:
            creds = grpc.ssl_server_credentials([(open(tls[1], "rb").read(), open(tls[0], "rb").read())])
            self.port = self.server.add_secure_port("%s:%d" % (host, port), creds)
        else:
            self.port = self.server.add_insecure_port("%s:%d" % (host, port))
        self.addr = "%s:%d" % (host, self.port)
        self.server.start()

    def service(self, details):
        if details.method == CHECK:
            with self.lock:
                self.checks += 1
            if not self.health:
                return None  # grpcio answers UNIMPLEMENTED
            return grpc.unary_unary_rpc_method_handler(self.check)
        if details.method == "/test.Echo/Unary":
            return grpc.unary_unary_rpc_method_handler(self.echo)
        return None

    def check(self, request, context):
        with self.lock:
            self.services.append(service_of(request))
            self.deadlines.append(context.time_remaining())
        if self.abort is not None:
            context.abort(self.abort, "checked nothing")
        for _ in range(500):  # held: until grelay gives up (its timeout), 10 s at most
            if not self.hold or not context.is_active():
                break
            time.sleep(0.02)
        pad = b""
        if self.padding:
            n = self.padding
            pad = bytes([0x7A, (n & 0x7F) | 0x80, n >> 7]) + b"x" * n  # field 15, a 2-byte length (128..16383)
        return bytes([0x08, self.status]) + pad

    def echo(self, request, context):
        context.send_initial_metadata([("x-backend", self.name)])
        return request

    def checks_seen(self):
        with self.lock:
            return self.checks

    def stop(self):
        self.server.stop(0)


def health_config(port, admin_port, backends, panic=None, tls=None, **hc):
    check = {"interval": "200ms", "timeout": "100ms", "unhealthy_threshold": 2, "healthy_threshold": 2}
    check.update(hc)
    extra = {"health_check": check}
    if panic is not None:
        extra["panic_threshold"] = panic
    if tls:
        extra["tls"] = tls
    cfg = simple_config(port, [b.addr for b in backends], cluster_extra=extra)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port, "allow_mutations": True}
    return cfg


def start(grelay_factory, backends, workers=1, **kw):
    port, admin_port = free_port(), free_port()
    cfg = health_config(port, admin_port, backends, **kw)
    cfg["workers"] = workers
    g = grelay_factory(cfg, port)
    g.admin = Admin(admin_port)
    g.cfg_args = (port, admin_port, backends)
    return g


def cluster(g):
    status, _, body = g.admin.get("/clusters")
    assert status == 200
    return json.loads(body)["clusters"][0]


def endpoint(g, addr):
    for e in cluster(g)["endpoints"]:
        if e["address"] == addr:
            return e
    return None


def wait_good_check(g, addr, what):
    """Waits for a SERVING answer from addr's health service, as grelay counts it."""
    return wait_for(what, lambda: metric(g, "grelay_health_checks_total", cluster="backend", endpoint=addr,
                                         result="serving"))


def wait_for(what, cond, seconds=20):
    """Polls cond (bounded, test_failures.wait_for); returns its true value."""
    v = poll(cond, seconds)
    assert v, "timed out waiting for " + what
    return v


def wait_health(g, addr, health):
    return wait_for("%s %s" % (addr, health), lambda: (e := endpoint(g, addr)) and e["health"] == health and e)


def spread(g, n, channel=None):
    counts = collections.Counter()
    ch = channel or grpc.insecure_channel(g.addr)
    with ch:
        call = ch.unary_unary("/test.Echo/Unary")
        for i in range(n):
            _, c = call.with_call(b"%d" % i, timeout=10)
            counts[dict(c.initial_metadata())["x-backend"]] += 1
    return counts


def spread_connections(g, connections, n):
    """n calls on each of several client connections (spread over grelay's
    workers by SO_REUSEPORT), added up."""
    total = collections.Counter()
    for _ in range(connections):
        total += spread(g, n, grpc.insecure_channel(g.addr, options=[("grpc.use_local_subchannel_pool", 1)]))
    return total


def metric(g, name, **labels):
    """The value of one series of /metrics (None when absent)."""
    _, _, text = g.admin.get("/metrics")
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            got = ",".join(sorted(series[len(name) + 1:-1].split(",")))
            if got == want:
                return float(value)
    return None


def backends_of(*names, **kw):
    return [HealthBackend(n, **kw) for n in names]


def stop_all(bs):
    for b in bs:
        b.stop()


def test_not_serving_gets_no_calls_until_serving_again(grelay_factory):
    bs = backends_of("b1", "b2", "b3")
    try:
        g = start(grelay_factory, bs, workers=2, service_name="test.Echo")
        for b in bs:
            wait_for("a first check of " + b.name, lambda b=b: b.checks_seen() >= 1)
        assert spread(g, 30) == {"b1": 10, "b2": 10, "b3": 10}
        bs[1].status = NOT_SERVING
        e = wait_health(g, bs[1].addr, "unhealthy")
        assert e["why"].startswith("NOT_SERVING from grpc.health.v1 ("), e
        assert "cluster backend: endpoint %s is unhealthy: NOT_SERVING from grpc.health.v1 (1 check)" % bs[1].addr \
            in g.log()  # failed at once, not after unhealthy_threshold
        counts = spread_connections(g, 8, 10)  # every worker has the verdict
        assert counts["b2"] == 0 and counts["b1"] + counts["b3"] == 80, counts
        assert metric(g, "grelay_endpoint_healthy", cluster="backend", endpoint=bs[1].addr) == 0
        assert metric(g, "grelay_endpoint_healthy", cluster="backend", endpoint=bs[0].addr) == 1
        assert metric(g, "grelay_health_checks_total", cluster="backend", endpoint=bs[1].addr,
                      result="not_serving") >= 1
        assert not cluster(g)["panic"]  # 2 of 3 healthy: above 50%
        live = json.loads(g.admin.get("/stats.json")[2])["endpoints"]  # what the live view shows
        shown = [e for e in live if e["endpoint"] == bs[1].addr]
        assert len(shown) == 1 and shown[0]["health"] == "unhealthy", live
        assert shown[0]["why"].startswith("NOT_SERVING from grpc.health.v1"), shown
        assert set(bs[1].services) == {"test.Echo"}
        assert all(d is not None and 0 < d <= 0.1 for d in bs[1].deadlines), bs[1].deadlines  # timeout: 100ms
        before = bs[1].checks_seen()
        bs[1].status = SERVING
        wait_health(g, bs[1].addr, "healthy")
        assert bs[1].checks_seen() - before >= 2  # healthy_threshold good checks
        assert "endpoint %s is healthy again (2 good checks)" % bs[1].addr in g.log()
        assert spread(g, 30) == {"b1": 10, "b2": 10, "b3": 10}
        assert metric(g, "grelay_endpoint_healthy", cluster="backend", endpoint=bs[1].addr) == 1
    finally:
        stop_all(bs)


def test_service_unknown_fails_at_once(grelay_factory):
    bs = backends_of("b1", "b2")
    try:
        g = start(grelay_factory, bs, panic="0%")
        bs[0].status = SERVICE_UNKNOWN
        e = wait_health(g, bs[0].addr, "unhealthy")
        assert e["why"].startswith("SERVICE_UNKNOWN from grpc.health.v1"), e
        assert spread(g, 10) == {"b2": 10}
    finally:
        stop_all(bs)


def test_answers_are_bounded(grelay_factory):
    """An unknown field is skipped; an answer over 1 KiB fails the check."""
    bs = backends_of("b1", "b2")
    try:
        bs[0].padding = 900
        g = start(grelay_factory, bs, panic="0%")
        wait_good_check(g, bs[0].addr, "a good check of a padded answer")
        bs[0].padding = 2000
        e = wait_health(g, bs[0].addr, "unhealthy")
        assert e["why"].startswith("health checks failed: error status or bad answer ("), e
        assert "endpoint %s is unhealthy: health checks failed: error status or bad answer (2 checks): an answer " \
               "over 1024 bytes" % bs[0].addr in g.log()
        assert spread(g, 10) == {"b2": 10}
    finally:
        stop_all(bs)


def test_no_health_service_stays_healthy_with_one_log_line(grelay_factory):
    bs = [HealthBackend("b1", health=False), HealthBackend("b2")]
    try:
        g = start(grelay_factory, bs)
        wait_for("3 checks of b1", lambda: bs[0].checks_seen() >= 3)
        line = "endpoint %s has no grpc.health.v1 service" % bs[0].addr
        wait_for("the log line", lambda: line in g.log())
        assert g.log().count(line) == 1
        assert endpoint(g, bs[0].addr)["health"] == "healthy"
        assert spread(g, 10) == {"b1": 5, "b2": 5}
        assert metric(g, "grelay_health_checks_total", cluster="backend", endpoint=bs[0].addr,
                      result="unimplemented") >= 3
        assert metric(g, "grelay_endpoint_healthy", cluster="backend", endpoint=bs[0].addr) == 1
    finally:
        stop_all(bs)


def test_a_check_that_times_out_counts_toward_the_threshold(grelay_factory):
    bs = backends_of("b1", "b2")
    try:
        g = start(grelay_factory, bs, panic="0%")
        wait_good_check(g, bs[0].addr, "a good check of b1")
        bs[0].hold = True
        e = wait_health(g, bs[0].addr, "unhealthy")
        assert e["why"].startswith("health checks timed out"), e
        # after unhealthy_threshold timeouts, not the first; the last ended by
        # grelay's timer or by grpcio keeping the grpc-timeout it was sent
        line = "endpoint %s is unhealthy: health checks timed out (2 checks): " % bs[0].addr
        assert line + "no answer within 100ms" in g.log() or \
            line + "DEADLINE_EXCEEDED from the endpoint, given grpc-timeout 100ms" in g.log(), g.log()
        assert spread(g, 10) == {"b2": 10}
        assert metric(g, "grelay_health_checks_total", cluster="backend", endpoint=bs[0].addr,
                      result="timeout") >= 2
        bs[0].hold = False
        wait_health(g, bs[0].addr, "healthy")
    finally:
        stop_all(bs)


def test_deadline_exceeded_from_the_endpoint_is_a_timeout(grelay_factory):
    """The check sends its timeout as grpc-timeout, so a held check may end
    either by grelay's timer or by the server's own DEADLINE_EXCEEDED (CI,
    2026-12-02: grpcio's came first, and the check counted as "error status
    or bad answer"). Both are the same timeout; here the endpoint answers
    DEADLINE_EXCEEDED at once, well within a 1 s timeout, so the verdict
    cannot race."""
    bs = backends_of("b1", "b2")
    try:
        g = start(grelay_factory, bs, panic="0%", timeout="1s", interval="1s")
        wait_good_check(g, bs[0].addr, "a good check of b1")
        bs[0].abort = grpc.StatusCode.DEADLINE_EXCEEDED
        e = wait_health(g, bs[0].addr, "unhealthy")
        assert e["why"].startswith("health checks timed out"), e
        assert "endpoint %s is unhealthy: health checks timed out (2 checks): DEADLINE_EXCEEDED from the endpoint, " \
               "given grpc-timeout 1000ms: checked nothing" % bs[0].addr in g.log()
        assert metric(g, "grelay_health_checks_total", cluster="backend", endpoint=bs[0].addr,
                      result="timeout") >= 2
        assert metric(g, "grelay_health_checks_total", cluster="backend", endpoint=bs[0].addr,
                      result="error") in (None, 0)  # no such series, or none counted
    finally:
        stop_all(bs)


def test_a_stopped_endpoint_fails_its_checks(grelay_factory):
    bs = backends_of("b1", "b2")
    try:
        g = start(grelay_factory, bs, panic="0%")
        wait_good_check(g, bs[0].addr, "a good check of b1")
        bs[0].stop()
        e = wait_health(g, bs[0].addr, "unhealthy")
        assert e["why"].startswith("health checks could not connect"), (e, g.log()[-3000:])
    finally:
        stop_all(bs)


def test_panic_balances_over_all_and_is_counted(grelay_factory):
    bs = backends_of("b1", "b2", "b3")
    try:
        g = start(grelay_factory, bs)
        for b in bs:
            wait_for("a first check of " + b.name, lambda b=b: b.checks_seen() >= 1)
        bs[0].status = bs[1].status = NOT_SERVING
        wait_for("the panic", lambda: cluster(g)["panic"])
        wait_health(g, bs[0].addr, "unhealthy")
        wait_health(g, bs[1].addr, "unhealthy")
        assert "cluster backend: 1 of 3 endpoints healthy, below panic_threshold 50%" in g.log()
        assert spread(g, 30) == {"b1": 10, "b2": 10, "b3": 10}
        assert metric(g, "grelay_cluster_panic_total", cluster="backend") >= 30
        assert metric(g, "grelay_cluster_panic", cluster="backend") == 1
        # A reload to panic_threshold 30%: 1 of 3 is enough; the verdicts stay.
        port, admin_port, _ = g.cfg_args
        g.write_config(health_config(port, admin_port, bs, panic="30%"))
        assert g.admin.post("/reload")[0] == 200
        wait_for("the panic to end", lambda: not cluster(g)["panic"])
        assert endpoint(g, bs[0].addr)["health"] == "unhealthy"
        panics = metric(g, "grelay_cluster_panic_total", cluster="backend")
        assert spread(g, 20) == {"b3": 20}
        assert metric(g, "grelay_cluster_panic_total", cluster="backend") == panics
        assert metric(g, "grelay_cluster_panic", cluster="backend") == 0
    finally:
        stop_all(bs)


def test_all_unhealthy_is_a_panic(grelay_factory):
    bs = backends_of("b1", "b2")
    try:
        g = start(grelay_factory, bs)
        bs[0].status = bs[1].status = NOT_SERVING
        wait_for("the panic", lambda: cluster(g)["panic"] and all(e["health"] == "unhealthy"
                                                                   for e in cluster(g)["endpoints"]))
        assert "0 of 2 endpoints healthy, below panic_threshold 50%" in g.log()
        assert spread(g, 10) == {"b1": 5, "b2": 5}
        assert cluster(g)["panic_total"] >= 10
    finally:
        stop_all(bs)


def test_checks_over_tls(pki, grelay_factory):  # noqa: F811 (the fixture)
    tls = (pki("backend.internal.crt"), pki("backend.internal.key"))
    bs = [HealthBackend("b1", tls=tls), HealthBackend("b2", tls=tls)]
    try:
        g = start(grelay_factory, bs, panic="0%", tls={"ca": pki("ca.crt"), "sni": "backend.internal"})
        wait_for("a good check over TLS",
                 lambda: metric(g, "grelay_health_checks_total", cluster="backend", endpoint=bs[0].addr,
                                result="serving"))
        bs[0].status = NOT_SERVING
        wait_health(g, bs[0].addr, "unhealthy")
        assert spread(g, 10) == {"b2": 10}
        bs[0].status = SERVING
        wait_health(g, bs[0].addr, "healthy")
        assert spread(g, 10) == {"b1": 5, "b2": 5}
    finally:
        stop_all(bs)


def test_a_tls_check_that_fails_verification_counts(pki, grelay_factory):  # noqa: F811
    tls = (pki("wrong.internal.crt"), pki("wrong.internal.key"))
    bs = [HealthBackend("b1", tls=tls)]
    try:
        g = start(grelay_factory, bs, tls={"ca": pki("ca.crt"), "sni": "backend.internal"})
        e = wait_health(g, bs[0].addr, "unhealthy")  # its first check failed
        assert e["why"].startswith("health checks could not connect"), e
        assert "TLS: " in g.log()
    finally:
        stop_all(bs)


def test_dns_endpoints_are_checked_as_they_appear(tmp_path, grelay_factory):
    port = free_port()
    bs = [HealthBackend("d1", host="127.0.0.31", port=port), HealthBackend("d2", host="127.0.0.32", port=port)]
    dns = Dnsmasq(tmp_path, [("svc.test", "127.0.0.31")])
    try:
        bs[1].status = NOT_SERVING
        lport, admin_port = free_port(), free_port()
        cfg = health_config(lport, admin_port, [], panic="0%")
        cfg["clusters"][0].update({"discovery": "strict_dns", "dns_refresh": "200ms",
                                   "dns_resolvers": ["127.0.0.1:%d" % dns.port],
                                   "endpoints": [{"address": "svc.test:%d" % port}]})
        g = grelay_factory(cfg, lport)
        g.admin = Admin(admin_port)
        wait_good_check(g, bs[0].addr, "a good check of d1")
        dns.set([("svc.test", "127.0.0.31"), ("svc.test", "127.0.0.32")])
        e = wait_health(g, bs[1].addr, "unhealthy")  # its first check said NOT_SERVING
        assert e["why"].startswith("NOT_SERVING"), e
        assert spread(g, 10) == {"d1": 10}
        bs[1].status = SERVING
        wait_health(g, bs[1].addr, "healthy")
        assert spread(g, 10) == {"d1": 5, "d2": 5}
        # d1 leaves the answer: its checks stop, its health gauge goes
        dns.set([("svc.test", "127.0.0.32")])
        wait_for("d1 to leave", lambda: metric(g, "grelay_endpoint_healthy", cluster="backend",
                                               endpoint=bs[0].addr) is None)
        seen, d2 = bs[0].checks_seen(), bs[1].checks_seen()
        wait_for("3 more checks of d2", lambda: bs[1].checks_seen() >= d2 + 3)
        assert bs[0].checks_seen() <= seen + 1  # at most one check was in flight as it left
    finally:
        dns.stop()
        stop_all(bs)
