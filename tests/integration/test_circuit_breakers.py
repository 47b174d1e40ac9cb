"""Circuit breakers and the retry budget of a cluster (issue 15): past
max_requests or max_pending a call ends at once with UNAVAILABLE naming the
limit and the cluster; past max_retries or the retry budget the retry is not
made and the call ends as its attempt did, its message saying so. The
counts are the whole process's (all workers), survive reloads, and show in
/clusters, /stats.json and /metrics.

The backends are grpcio servers in this process, so the test sees every
attempt that reached them and holds calls open as long as it wants."""
import json
import re
import threading
from concurrent import futures

import grpc

from harness import free_port
from test_admin import Admin
from test_failures import wait_for
from test_reload import reload

SEPARATE = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own (maybe another worker)


class Backend:
    """A grpcio server whose /test.B/Call holds every call until release(),
    then answers OK; with fail_first, each call's first attempt (the request
    names the call) fails UNAVAILABLE once fail_first of them are here, and
    its retries are held."""

    def __init__(self, max_concurrent_streams=None, fail_first=0):
        self.lock = threading.Lock()
        self.attempts = {}  # call id -> attempts seen
        self.held = 0  # attempts waiting for release
        self.gate = threading.Event()
        self.barrier = threading.Barrier(fail_first) if fail_first else None
        opts = [("grpc.max_concurrent_streams", max_concurrent_streams)] if max_concurrent_streams else []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=40), options=opts)
        self.server.add_generic_rpc_handlers([self])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def service(self, details):
        if details.method != "/test.B/Call":
            return None
        return grpc.unary_unary_rpc_method_handler(self.call)

    def call(self, request, context):
        with self.lock:
            n = self.attempts[request] = self.attempts.get(request, 0) + 1
        if self.barrier is not None and n == 1:
            self.barrier.wait(timeout=30)
            context.abort(grpc.StatusCode.UNAVAILABLE, "attempt failed")
        with self.lock:
            self.held += 1
        self.gate.wait(timeout=60)
        with self.lock:
            self.held -= 1
        return request

    def total(self):
        with self.lock:
            return sum(self.attempts.values())

    def holding(self):
        with self.lock:
            return self.held

    def release(self):
        self.gate.set()

    def stop(self):
        self.gate.set()
        self.server.stop(0).wait(10)


def config(port, admin_port, backend, workers=2, retry=None, **cluster):
    route = {"match": {"prefix": "/test.B/"}, "cluster": "backend"}
    if retry:
        route["retry_policy"] = retry
    return {
        "workers": workers,
        "admin": {"address": "127.0.0.1:%d" % admin_port},
        "listeners": [{"name": "edge", "address": "127.0.0.1:%d" % port, "virtual_hosts": [{
            "name": "vh", "domains": ["*"], "routes": [route]}]}],
        "clusters": [dict({"name": "backend", "endpoints": [{"address": backend.addr}]}, **cluster)],
    }


def start(grelay_factory, backend, **kw):
    port, admin_port = free_port(), free_port()
    cfg = config(port, admin_port, backend, **kw)
    g = grelay_factory(cfg, port)
    g.admin = Admin(admin_port)
    g.cfg = cfg
    return g


def cluster(g):
    _, _, body = g.admin.get("/clusters")
    return json.loads(body)["clusters"][0]


def fire(channels, ids):
    """One call per id, spread over channels; -> futures."""
    return [channels[i % len(channels)].unary_unary("/test.B/Call").future(i_d, timeout=30)
            for i, i_d in enumerate(ids)]


def outcome(f):
    try:
        f.result()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def test_max_requests_refuses_calls_past_it_across_workers(grelay_factory):
    b = Backend()
    chans = []
    try:
        g = start(grelay_factory, b, circuit_breakers={"max_requests": 4})
        chans = [grpc.insecure_channel(g.addr, options=SEPARATE) for _ in range(3)]
        held = fire(chans, [b"h%d" % i for i in range(4)])
        assert wait_for(lambda: b.holding() == 4), b.holding()
        refused = [outcome(f) for f in fire(chans, [b"r%d" % i for i in range(6)])]
        assert refused == [(grpc.StatusCode.UNAVAILABLE, "cluster backend: max_requests 4 reached")] * 6
        assert b.total() == 4  # the refused calls never reached the backend
        c = cluster(g)
        assert (c["requests"], c["pending"], c["retries"]) == (4, 0, 0)
        assert c["circuit_breakers"] == {"max_requests": 4, "max_pending": 1024, "max_retries": 3}
        assert c["trips"] == {"max_requests": 6, "max_pending": 0, "max_retries": 0, "retry_budget": 0}
        _, _, text = g.admin.get("/metrics")
        assert 'grelay_cluster_active_requests{cluster="backend"} 4\n' in text
        assert 'grelay_cluster_pending_requests{cluster="backend"} 0\n' in text
        b.release()
        assert [outcome(f)[0] for f in held] == [grpc.StatusCode.OK] * 4
        assert wait_for(lambda: cluster(g)["requests"] == 0)
        _, _, text = g.admin.get("/metrics")
        assert 'grelay_circuit_breaker_trips_total{cluster="backend",limit="max_requests"} 6\n' in text
        assert 'grelay_cluster_active_requests{cluster="backend"} 0\n' in text
        assert ('grelay_requests_total{listener="edge",route="vh/0",cluster="backend",grpc_service="test.B",'
                'grpc_method="Call",grpc_code="UNAVAILABLE"} 6\n') in text
        _, _, body = g.admin.get("/stats.json")
        s = [x for x in json.loads(body)["clusters"] if x["cluster"] == "backend"]
        assert s and s[0]["trips"]["max_requests"] == 6 and s[0]["requests"] == 0
    finally:
        for ch in chans:
            ch.close()
        b.stop()


def test_max_pending_refuses_calls_past_the_clusters_line(grelay_factory):
    # One connection that takes one stream at a time: the other calls wait in line.
    b = Backend(max_concurrent_streams=1)
    ch = None
    try:
        g = start(grelay_factory, b, workers=1, max_connections=1, max_pending_time="60s",
                  circuit_breakers={"max_pending": 2})
        ch = grpc.insecure_channel(g.addr)
        first = fire([ch], [b"first"])
        assert wait_for(lambda: b.holding() == 1)
        waiting = fire([ch], [b"w1", b"w2"])
        assert wait_for(lambda: cluster(g)["pending"] == 2), cluster(g)
        refused = [outcome(f) for f in fire([ch], [b"r1", b"r2", b"r3"])]
        assert refused == [(grpc.StatusCode.UNAVAILABLE, "cluster backend: max_pending 2 reached")] * 3
        c = cluster(g)
        assert (c["requests"], c["pending"]) == (3, 2)
        assert c["trips"]["max_pending"] == 3
        b.release()
        assert [outcome(f)[0] for f in first + waiting] == [grpc.StatusCode.OK] * 3
        assert wait_for(lambda: (cluster(g)["requests"], cluster(g)["pending"]) == (0, 0))
        assert b.total() == 3
        _, _, text = g.admin.get("/metrics")
        assert 'grelay_circuit_breaker_trips_total{cluster="backend",limit="max_pending"} 3\n' in text
    finally:
        if ch is not None:
            ch.close()
        b.stop()


RETRY = {"retry_on": ["unavailable"], "num_retries": 1, "backoff": {"base_interval": "1ms", "max_interval": "2ms"}}


def retry_storm(g, b, n, n_channels):
    """n calls whose first attempts all fail at once; -> (outcomes of the
    calls whose retry was refused, outcomes of the others once released,
    the cluster's state before the release)."""
    chans = [grpc.insecure_channel(g.addr, options=SEPARATE) for _ in range(n_channels)]
    try:
        fs = fire(chans, [b"c%d" % i for i in range(n)])
        assert wait_for(lambda: sum(f.done() for f in fs) + b.holding() == n, 30), (b.holding(), b.total())
        refused = [outcome(f) for f in fs if f.done()]
        rest = [f for f in fs if not f.done()]
        c = cluster(g)
        b.release()
        return refused, [outcome(f) for f in rest], c
    finally:
        for ch in chans:
            ch.close()


def test_max_retries_caps_the_retries_in_flight(grelay_factory):
    b = Backend(fail_first=10)
    try:
        g = start(grelay_factory, b, retry=RETRY, circuit_breakers={"max_retries": 2})
        refused, admitted, c = retry_storm(g, b, 10, 2)
        assert c["retries"] == 2 and c["requests"] == 2, c
        assert admitted == [(grpc.StatusCode.OK, "")] * 2
        assert refused == [(grpc.StatusCode.UNAVAILABLE,
                            "attempt failed; retry not made: cluster backend: max_retries 2 reached")] * 8
        assert b.total() == 12  # ten first attempts, two retries
        assert wait_for(lambda: cluster(g)["retries"] == 0 and cluster(g)["requests"] == 0)
        c = cluster(g)
        assert c["trips"]["max_retries"] == 8
        _, _, text = g.admin.get("/metrics")
        assert 'grelay_circuit_breaker_trips_total{cluster="backend",limit="max_retries"} 8\n' in text
        assert 'grelay_retries_total{listener="edge",route="vh/0",cluster="backend",kind="configured"} 2\n' in text
    finally:
        b.stop()


def test_the_retry_budget_caps_retries_at_a_share_of_the_calls(grelay_factory):
    # One worker: the retries are decided one after the other, against 10
    # calls in flight: 20% of them is 2 (min_concurrent 1 is less).
    b = Backend(fail_first=10)
    try:
        g = start(grelay_factory, b, workers=1, retry=RETRY, retry_budget={"percent": 20, "min_concurrent": 1})
        refused, admitted, c = retry_storm(g, b, 10, 1)
        assert admitted == [(grpc.StatusCode.OK, "")] * 2
        assert c["retries"] == 2, c
        msg = "attempt failed; retry not made: cluster backend: retry_budget (20% of calls in flight, at least 1) reached"
        assert refused == [(grpc.StatusCode.UNAVAILABLE, msg)] * 8
        assert b.total() == 12
        assert cluster(g)["retry_budget"] == {"percent": 20, "min_concurrent": 1}
        assert cluster(g)["trips"]["retry_budget"] == 8
    finally:
        b.stop()


def test_a_reload_keeps_the_counts_of_calls_in_flight(grelay_factory):
    b = Backend()
    ch = None
    try:
        g = start(grelay_factory, b, circuit_breakers={"max_requests": 10})
        ch = grpc.insecure_channel(g.addr)
        held = fire([ch], [b"h%d" % i for i in range(3)])
        assert wait_for(lambda: b.holding() == 3)
        c = cluster(g)
        assert c["circuit_breakers"]["max_requests"] == 10 and c["requests"] == 3
        g.cfg["clusters"][0]["circuit_breakers"] = {"max_requests": 3}
        reload(g, g.cfg)
        assert outcome(fire([ch], [b"over"])[0]) == (grpc.StatusCode.UNAVAILABLE,
                                                     "cluster backend: max_requests 3 reached")
        g.cfg["clusters"][0]["circuit_breakers"] = {"max_requests": 5}
        reload(g, g.cfg)
        held += fire([ch], [b"h3", b"h4"])
        assert wait_for(lambda: b.holding() == 5)
        assert outcome(fire([ch], [b"over2"])[0]) == (grpc.StatusCode.UNAVAILABLE,
                                                      "cluster backend: max_requests 5 reached")
        assert cluster(g)["requests"] == 5
        b.release()
        assert [outcome(f)[0] for f in held] == [grpc.StatusCode.OK] * 5
        assert wait_for(lambda: cluster(g)["requests"] == 0)
        # No underflow and the limit still holds: five more fit, the sixth does not.
        b.gate.clear()
        held = fire([ch], [b"k%d" % i for i in range(5)])
        assert wait_for(lambda: b.holding() == 5)
        assert outcome(fire([ch], [b"over3"])[0])[0] == grpc.StatusCode.UNAVAILABLE
        b.release()
        assert [outcome(f)[0] for f in held] == [grpc.StatusCode.OK] * 5
        assert cluster(g)["trips"]["max_requests"] == 3
    finally:
        if ch is not None:
            ch.close()
        b.stop()


def test_a_refused_retry_after_a_per_try_timeout_keeps_its_status(grelay_factory):
    b = Backend()
    try:
        retry = {"retry_on": ["unavailable"], "num_retries": 2, "per_try_timeout": "200ms"}
        g = start(grelay_factory, b, retry=retry, circuit_breakers={"max_retries": 0})
        with grpc.insecure_channel(g.addr) as ch:
            got = outcome(fire([ch], [b"slow"])[0])
        assert got == (grpc.StatusCode.DEADLINE_EXCEEDED, "per-try timeout of 200ms exceeded at grelay; "
                       "retry not made: cluster backend: max_retries 0 reached")
        assert b.total() == 1
        assert cluster(g)["trips"]["max_retries"] == 1
    finally:
        b.stop()


def test_transparent_retries_are_not_counted(grelay_factory):
    # The first endpoint refuses connections: its calls go to the second
    # transparently (nothing reached a backend), whatever max_retries says.
    dead = free_port()
    b = Backend()
    b.release()
    try:
        port, admin_port = free_port(), free_port()
        cfg = config(port, admin_port, b, workers=1, circuit_breakers={"max_retries": 0})
        cfg["clusters"][0]["endpoints"] = [{"address": "127.0.0.1:%d" % dead}, {"address": b.addr}]
        g = grelay_factory(cfg, port)
        g.admin = Admin(admin_port)
        with grpc.insecure_channel(g.addr) as ch:
            assert [outcome(f) for f in fire([ch], [b"t%d" % i for i in range(4)])] == [(grpc.StatusCode.OK, "")] * 4
        _, _, text = g.admin.get("/metrics")
        m = re.search(r'grelay_retries_total\{listener="edge",route="vh/0",cluster="backend",kind="transparent"\} (\d+)',
                      text)
        assert m and int(m.group(1)) >= 1, text  # the dead endpoint's call went on transparently
        assert cluster(g)["trips"]["max_retries"] == 0 and cluster(g)["retries"] == 0
    finally:
        b.stop()


def test_a_cluster_without_a_breaker_is_not_counted(grelay_factory):
    """No circuit_breakers nor retry_budget: its calls touch no shared
    counter (the gauge stays 0 with calls held). A reload that adds a
    breaker counts the calls that begin after it, and those in flight before
    it end without taking anything away (no underflow)."""
    b = Backend()
    ch = None
    try:
        g = start(grelay_factory, b)
        ch = grpc.insecure_channel(g.addr)
        held = fire([ch], [b"u%d" % i for i in range(2)])
        assert wait_for(lambda: b.holding() == 2)
        assert cluster(g)["requests"] == 0
        g.cfg["clusters"][0]["circuit_breakers"] = {"max_requests": 1}
        reload(g, g.cfg)
        held += fire([ch], [b"c0"])
        assert wait_for(lambda: b.holding() == 3)
        assert cluster(g)["requests"] == 1
        assert outcome(fire([ch], [b"over"])[0]) == (grpc.StatusCode.UNAVAILABLE,
                                                     "cluster backend: max_requests 1 reached")
        b.release()
        assert [outcome(f)[0] for f in held] == [grpc.StatusCode.OK] * 3
        assert wait_for(lambda: cluster(g)["requests"] == 0)
    finally:
        if ch is not None:
            ch.close()
        b.stop()
