"""A route's rate_limit: a token bucket per worker (the rate and burst split
over the workers); calls past it end at once with RESOURCE_EXHAUSTED (which
gRPC clients do not retry by default, unlike Envoy's UNAVAILABLE,
envoy#4660) or the status chosen, with a message naming the route and the
limit, and counted."""
import json
import subprocess
import time

import grpc

from harness import GRELAY, Backend, free_port
from test_admin import Admin


def config(port, admin_port, backend, workers=1):
    def route(name, prefix, **rl):
        return {"name": name, "match": {"prefix": prefix}, "cluster": "one", "rate_limit": rl}
    return {
        "workers": workers,
        "admin": {"address": "127.0.0.1:%d" % admin_port},
        "listeners": [{"name": "edge", "address": "127.0.0.1:%d" % port, "virtual_hosts": [{
            "name": "vh", "domains": ["*"], "routes": [
                route("limited", "/test.Echo/Unary", requests_per_second=5, burst=10),
                route("unavailable", "/test.Echo/", requests_per_second=1, burst=2, status="unavailable"),
            ]}]}],
        "clusters": [{"name": "one", "endpoints": [{"address": backend.addr}]}],
    }


def burst_of(ch, path, n, at_once=False):
    """n calls, one after the other (or all sent at once, at_once); ->
    ([codes], [messages of failures], seconds taken)."""
    codes, msgs = [], []
    t0 = time.monotonic()
    call = ch.unary_unary(path)
    futures = [call.future(b"x", timeout=30) for _ in range(n)] if at_once else None
    for i in range(n):
        try:
            futures[i].result() if at_once else call(b"x", timeout=10)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
            msgs.append(e.details())
    return codes, msgs, time.monotonic() - t0


def test_a_burst_past_the_rate_gets_resource_exhausted_with_the_limit_named(grelay_factory):
    b = Backend("a")
    try:
        port, admin_port = free_port(), free_port()
        g = grelay_factory(config(port, admin_port, b), port)
        with grpc.insecure_channel(g.addr) as ch:
            codes, msgs, took = burst_of(ch, "/test.Echo/Unary", 100)
        ok = codes.count(grpc.StatusCode.OK)
        refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert ok + refused == 100, codes
        # The burst, then 5 a second for the time the 100 calls took (plus
        # the one the last fraction of a second may have refilled).
        assert 10 <= ok <= 10 + 5 * took + 1, (ok, took)
        assert set(msgs) == {"route limited: rate_limit of 5 calls per second (burst 10) reached at grelay"}
        _, _, text = Admin(admin_port).get("/metrics")
        assert 'grelay_limit_hits_total{listener="edge",limit="rate_limit"} %d\n' % refused in text
        assert ('grelay_requests_total{listener="edge",route="limited",cluster="one",grpc_service="test.Echo",'
                'grpc_method="Unary",grpc_code="RESOURCE_EXHAUSTED"} %d\n' % refused) in text
    finally:
        b.stop()


def test_the_status_may_be_unavailable(grelay_factory):
    b = Backend("a")
    try:
        port, admin_port = free_port(), free_port()
        g = grelay_factory(config(port, admin_port, b), port)
        with grpc.insecure_channel(g.addr) as ch:
            codes, msgs, took = burst_of(ch, "/test.Echo/ServerStreamNot", 20)
        # The backend answers UNIMPLEMENTED to the calls admitted (the burst of 2, and 1 a second).
        admitted = codes.count(grpc.StatusCode.UNIMPLEMENTED)
        assert 2 <= admitted <= 2 + took + 1, (codes, took)
        assert codes.count(grpc.StatusCode.UNAVAILABLE) == 20 - admitted
        assert set(msgs) - {"Method not found!"} == {
            "route unavailable: rate_limit of 1 calls per second (burst 2) reached at grelay"}
    finally:
        b.stop()


def test_a_rate_of_zero_is_a_config_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("listeners:\n"
                 "  - name: l\n"
                 "    address: 127.0.0.1:1\n"
                 "    virtual_hosts:\n"
                 "      - name: v\n"
                 "        domains: ['*']\n"
                 "        routes:\n"
                 "          - match: {prefix: /}\n"
                 "            cluster: c\n"
                 "            rate_limit: {requests_per_second: 0}\n"
                 "clusters:\n"
                 "  - name: c\n"
                 "    endpoints: [{address: 127.0.0.1:2}]\n")
    r = subprocess.run([GRELAY, "--check", "-c", str(p)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "bad.yaml:10:" in r.stderr + r.stdout and "requests_per_second" in r.stderr + r.stdout, r.stderr


def test_500_calls_at_once_against_50_per_second_burst_10(grelay_factory):
    """The issue's case: 500 calls sent together (one channel, all in flight
    at once) against requests_per_second 50, burst 10: the burst and what
    the rate refilled while they arrived are admitted, every other call gets
    RESOURCE_EXHAUSTED with the message; the counters, /stats.json and the
    live view say how many."""
    from test_live_view import LiveView, one_row
    b = Backend("a")
    try:
        port, admin_port = free_port(), free_port()
        cfg = config(port, admin_port, b)
        cfg["listeners"][0]["virtual_hosts"][0]["routes"][0]["rate_limit"] = {"requests_per_second": 50, "burst": 10}
        g = grelay_factory(cfg, port)
        with grpc.insecure_channel(g.addr) as ch:
            codes, msgs, took = burst_of(ch, "/test.Echo/Unary", 500, at_once=True)
        ok = codes.count(grpc.StatusCode.OK)
        refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert ok + refused == 500, codes
        # The burst of 10, then 50 a second for as long as the calls took to
        # arrive (bounded by the time they all took), plus one partial token.
        assert 10 <= ok <= 10 + 50 * took + 1, (ok, took)
        assert refused >= 500 - (10 + 50 * took + 1) and refused > 0, (refused, took)
        assert set(msgs) == {"route limited: rate_limit of 50 calls per second (burst 10) reached at grelay"}
        _, _, text = Admin(admin_port).get("/metrics")
        assert 'grelay_route_rate_limited_total{listener="edge",route="limited",cluster="one"} %d\n' % refused in text
        assert 'grelay_limit_hits_total{listener="edge",limit="rate_limit"} %d\n' % refused in text
        _, _, body = Admin(admin_port).get("/stats.json")
        routes = {r["route"]: r for r in json.loads(body)["routes"]}
        assert routes["limited"]["rate_limited"] == refused, routes
        view = LiveView("http://127.0.0.1:%d/" % admin_port)
        try:
            s = view.wait_until(lambda s: (one_row(s, "routes", route="limited") or {}).get("cells", {})
                                .get("limited") == str(refused), "%d rate-limited calls on route limited" % refused)
            assert one_row(s, "routes", route="limited")["cells"]["limited_rate"] != ""
        finally:
            view.close()
    finally:
        b.stop()
