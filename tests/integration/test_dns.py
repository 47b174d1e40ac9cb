"""DNS discovery against a real DNS server on loopback (Debian's dnsmasq,
reading a hosts file the test rewrites). The machine's resolver is never used."""
import collections
import json
import os
import signal
import subprocess
import time

import grpc
import pytest

from harness import Backend, free_port, simple_config, stop
from test_failures import wait_for


class Dnsmasq:
    def __init__(self, tmp_path, records, extra=()):
        self.hosts = tmp_path / "hosts"
        self.port = free_port()
        self.set(records, reload=False)
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--addn-hosts=%s" % self.hosts, "--listen-address=127.0.0.1", "--bind-interfaces",
             "--port=%d" % self.port, "--user=root", "--pid-file=", "--local-ttl=0"] + list(extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()

    def wait_ready(self, seconds=10):
        """Until dnsmasq answers a query (before that, a SIGHUP would kill it)."""
        import socket
        import struct
        query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x05ready\x04test\x00" + struct.pack(">HH", 1, 1)
        deadline = time.monotonic() + seconds
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, "dnsmasq exited"
                s.sendto(query, ("127.0.0.1", self.port))
                try:
                    if s.recv(512)[:2] == b"\x12\x34":
                        return
                except socket.timeout:
                    pass
        raise RuntimeError("dnsmasq does not answer")

    def set(self, records, reload=True):
        self.hosts.write_text("".join("%s %s\n" % (ip, name) for name, ip in records))
        if reload:
            self.proc.send_signal(signal.SIGHUP)  # dnsmasq re-reads its hosts files

    def stop(self):
        stop(self.proc)


def backends_on_one_port(n, name, first_host):
    """n backends on one port at 127.0.0.<first_host>, ...: DNS gives the
    addresses, the port is the config's. A generator for fixtures."""
    port = free_port()
    started = []
    try:
        for i in range(1, n + 1):
            started.append(Backend("%s%d" % (name, i), port=port, host="127.0.0.%d" % (first_host + i - 1)))
        yield started, port
    finally:
        for b in started:
            b.stop()


@pytest.fixture(scope="module")
def dns_backends():
    """Three backends on one port, at 127.0.0.21-23."""
    yield from backends_on_one_port(3, "d", 21)


@pytest.fixture
def dns(tmp_path):
    d = Dnsmasq(tmp_path, [])
    yield d
    d.stop()


def dns_config(port, dns, name, backend_port, discovery="strict_dns"):
    cfg = simple_config(port, ["%s:%d" % (name, backend_port)], routes=[{"match": {"prefix": "/"},
                                                                          "cluster": "backend"}])
    cfg["clusters"][0].update({"discovery": discovery, "dns_refresh": "200ms",
                               "dns_resolvers": ["127.0.0.1:%d" % dns.port]})
    return cfg


def spread(call, n):
    seen, failed = collections.Counter(), []
    for i in range(n):
        try:
            _, c = call.with_call(b"%d" % i, timeout=10)
            seen[dict(c.initial_metadata())["x-backend"]] += 1
        except grpc.RpcError as e:
            failed.append((e.code(), e.details()))
    return seen, failed


def grelay_on(dns, records, grelay_factory, bport, name="backend.test", discovery="strict_dns"):
    """dnsmasq serves records; grelay resolves name through it."""
    dns.set(records)
    port = free_port()
    return grelay_factory(dns_config(port, dns, name, bport, discovery), port)


def test_endpoints_follow_the_records_with_no_failed_calls(dns_backends, dns, grelay_factory):
    (b1, b2, b3), bport = dns_backends
    g = grelay_on(dns, [("backend.test", "127.0.0.21"), ("backend.test", "127.0.0.22")], grelay_factory, bport)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        assert wait_for(lambda: set(spread(call, 6)[0]) == {"d1", "d2"}), g.log()
        dns.set([("backend.test", "127.0.0.22"), ("backend.test", "127.0.0.23")])
        failures = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # calls keep flowing while the set changes
            seen, failed = spread(call, 6)
            failures += failed
            if set(seen) == {"d2", "d3"}:
                break
        assert failures == []
        seen, failed = spread(call, 30)
        assert failed == [] and set(seen) == {"d2", "d3"}
    assert "left the set" in g.log()


def test_a_stream_to_a_removed_endpoint_finishes(dns_backends, dns, grelay_factory):
    (b1, b2, b3), bport = dns_backends
    g = grelay_on(dns, [("backend.test", "127.0.0.21")], grelay_factory, bport)
    with grpc.insecure_channel(g.addr) as ch:
        assert wait_for(lambda: spread(ch.unary_unary("/test.Echo/Unary"), 1)[0] == {"d1": 1}), g.log()
        it = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 8, "size": 8, "interval_ms": 150}).encode(), timeout=30)
        first = next(it)
        dns.set([("backend.test", "127.0.0.22")])
        assert wait_for(lambda: "left the set" in g.log()), g.log()
        rest = list(it)
        assert [first] + rest == [b"%08d" % i for i in range(8)]
        assert it.code() == grpc.StatusCode.OK
        assert spread(ch.unary_unary("/test.Echo/Unary"), 4)[0] == {"d2": 4}


def test_a_stream_to_a_removed_endpoint_is_cut_after_drain_timeout(dns_backends, dns, grelay_factory):
    """A server stream on an endpoint DNS removes may run for drain_timeout,
    then ends with UNAVAILABLE "endpoint removed" in its trailers (after the
    messages it got), and new calls go to the endpoint that remains."""
    (b1, b2, b3), bport = dns_backends
    dns.set([("backend.test", "127.0.0.21")])
    port = free_port()
    cfg = dns_config(port, dns, "backend.test", bport)
    cfg["clusters"][0]["drain_timeout"] = "1s"
    g = grelay_factory(cfg, port)
    with grpc.insecure_channel(g.addr) as ch:
        assert wait_for(lambda: spread(ch.unary_unary("/test.Echo/Unary"), 1)[0] == {"d1": 1}), g.log()
        it = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 200, "size": 8, "interval_ms": 50}).encode(), timeout=30)
        got = [next(it)]
        dns.set([("backend.test", "127.0.0.22")])
        assert wait_for(lambda: "left the set" in g.log()), g.log()
        removed = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            for m in it:  # bounded: 200 messages, 10 s
                got.append(m)
        lasted = time.monotonic() - removed
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
        assert "endpoint removed from cluster backend" in e.value.details()
        assert "drain_timeout (1000ms)" in e.value.details()
        assert got == [b"%08d" % i for i in range(len(got))] and len(got) < 200
        assert lasted > 0.5, lasted  # it had its drain_timeout, not an immediate cut
        assert spread(ch.unary_unary("/test.Echo/Unary"), 4) == ({"d2": 4}, [])


def test_logical_dns_uses_one_address_at_a_time(dns_backends, dns, grelay_factory):
    (b1, b2, b3), bport = dns_backends
    g = grelay_on(dns, [("backend.test", "127.0.0.21"), ("backend.test", "127.0.0.22"), ("backend.test", "127.0.0.23")], grelay_factory, bport, discovery="logical_dns")
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        assert wait_for(lambda: sum(spread(call, 1)[0].values()) == 1)
        seen, failed = spread(call, 20)
    assert failed == [] and len(seen) == 1


def test_a_name_that_never_resolves_is_unavailable_naming_the_host(dns_backends, dns, grelay_factory):
    _, bport = dns_backends
    port = free_port()
    g = grelay_factory(dns_config(port, dns, "nowhere.test", bport), port)
    with grpc.insecure_channel(g.addr) as ch:
        def failure():
            try:
                ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
            except grpc.RpcError as e:
                return e
        e = wait_for(lambda: (lambda x: x if x and "did not resolve" in x.details() else None)(failure()))
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert "nowhere.test:%d did not resolve" % bport in e.details()


def test_a_resolver_that_goes_away_leaves_the_last_good_set(dns_backends, dns, grelay_factory):
    (b1, b2, b3), bport = dns_backends
    g = grelay_on(dns, [("backend.test", "127.0.0.21"), ("backend.test", "127.0.0.23")], grelay_factory, bport)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        assert wait_for(lambda: set(spread(call, 6)[0]) == {"d1", "d3"})
        dns.stop()
        assert wait_for(lambda: "keeping the last good addresses" in g.log(), seconds=15)
        seen, failed = spread(call, 20)
    assert failed == [] and set(seen) == {"d1", "d3"}


def test_a_failing_name_is_retried_with_backoff(dns_backends, tmp_path, grelay_factory):
    """A name that does not resolve is looked up again after about 1 s, then
    2 s, 4 s... up to dns_refresh (each +-25%), not every second."""
    _, bport = dns_backends
    log = tmp_path / "queries.log"
    dns = Dnsmasq(tmp_path, [], extra=["--log-queries", "--log-facility=%s" % log])
    try:
        port = free_port()
        cfg = dns_config(port, dns, "nowhere.test", bport)
        cfg["clusters"][0]["dns_refresh"] = "4s"
        g = grelay_factory(cfg, port)
        time.sleep(8)
        queries = log.read_text().count("query[A] nowhere.test ")
        # Lookups at 0, ~1, ~3, ~7 s: at most 5 even with the jitter (one a
        # second would make 8 or 9). c-ares asks twice per lookup (tries: 2)
        # when the server answers REFUSED.
        assert 2 <= queries <= 12, log.read_text()
        dns.set([("nowhere.test", "127.0.0.21")])
        assert wait_for(lambda: "nowhere.test resolves again" in g.log(), seconds=10), g.log()
    finally:
        dns.stop()
