"""Object lifetimes at shutdown: SIGTERM while things are still alive.

grelay must exit 0 with no sanitizer report (harness Grelay.stop checks both)
when it is stopped with:
- a call still open on a pool that DNS retired (review 2026-12-01, F5: the
  retired pool is freed inside its last connection's on_close, under
  pool_shutdown's loop);
- calls waiting in pools' lines, and an upstream connection that never got
  the peer's SETTINGS.
Every call the client made must end with a gRPC status; none may hang.
SIGTERM drains (test_drain.py): these calls outlive the short drain_timeout
and are cut with UNAVAILABLE "grelay is shutting down", then the workers
stop with the retired pool, the lines and the connecting connection still
there.
"""
import queue
import socket

import grpc
import pytest

from harness import Backend, free_port, simple_config
from test_dns import backends_on_one_port, dns, dns_config, spread  # noqa: F401 (dns is a fixture)
from test_failures import wait_for

NAME = "lifetimes.test"
CUT = (grpc.StatusCode.UNAVAILABLE, "grelay is shutting down")
DRAIN = {"drain_timeout": "500ms"}  # the calls here never end on their own


class Bidi:
    """A /test.Echo/Bidi call whose messages the test sends one at a time."""

    def __init__(self, channel, timeout=60):
        self.q = queue.Queue()
        self.call = channel.stream_stream("/test.Echo/Bidi")(iter(self.q.get, None), timeout=timeout)

    def exchange(self, msg):
        self.q.put(msg)
        return next(self.call)  # bounded by the call's deadline

    def backend(self):
        return dict(self.call.initial_metadata())["x-backend"]

    def end_status(self):
        """The code the call ended with (it must end on its own: grelay is gone)."""
        self.q.put(None)
        try:
            rest = list(self.call)
        except grpc.RpcError as e:
            return e.code(), e.details()
        return ("ended with OK after", rest)


@pytest.fixture
def two_backends():
    """Backends at 127.0.0.31 and 127.0.0.32, on one port (DNS gives the address)."""
    yield from backends_on_one_port(2, "l", 31)



def test_sigterm_with_a_stream_open_on_an_endpoint_dns_removed(two_backends, dns, grelay_factory):
    (b1, b2), bport = two_backends
    ip = {b.name: b.addr.split(":")[0] for b in (b1, b2)}
    dns.set([(NAME, ip["l1"]), (NAME, ip["l2"])])
    port = free_port()
    g = grelay_factory(dict(dns_config(port, dns, NAME, bport), **DRAIN), port)  # strict_dns, dns_refresh 200ms
    with grpc.insecure_channel(g.addr) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        assert wait_for(lambda: set(spread(unary, 6)[0]) == {"l1", "l2"}), g.log()

        stream = Bidi(ch)
        try:
            assert stream.exchange(b"before") == b"before"
            gone = next(b for b in (b1, b2) if b.name == stream.backend())  # the endpoint the stream is on
            kept = b2 if gone is b1 else b1
            dns.set([(NAME, ip[kept.name])])
            left = "cluster backend: endpoint %s left the set" % gone.addr
            assert wait_for(lambda: left in g.log(), seconds=15), g.log()
            assert stream.exchange(b"after") == b"after"  # still open, on the retired pool

            g.stop()  # SIGTERM by PID; asserts exit status 0 and no sanitizer report
            assert stream.end_status() == CUT
        finally:
            stream.q.put(None)  # lets grpcio's request thread end whatever happened


@pytest.fixture
def holder():
    b = Backend("holder")
    yield b
    b.stop()


class SilentPeer:
    """A TCP listener on loopback that accepts and never speaks HTTP/2."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []

    def accept(self):
        """The next connection (bounded); returns the first bytes grelay sent."""
        c, _ = self.sock.accept()
        self.conns.append(c)
        c.settimeout(10)
        return c.recv(24, socket.MSG_WAITALL)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent():
    s = SilentPeer()
    yield s
    s.close()


def test_sigterm_with_calls_in_line_and_a_connection_still_connecting(holder, silent, grelay_factory):
    port = free_port()
    limits = {"max_connections": 1, "max_streams_per_connection": 1, "connect_timeout": "10m"}
    routes = [
        {"match": {"prefix": "/test.", "headers": [{"name": "x-to", "exact": "silent"}]}, "cluster": "silent"},
        {"match": {"prefix": "/test."}, "cluster": "backend"},
    ]
    cfg = simple_config(port, [holder.addr], routes=routes, cluster_extra=limits)
    cfg["clusters"].append(dict(limits, name="silent",
                                endpoints=[{"address": silent.addr}]))
    g = grelay_factory(dict(cfg, **DRAIN), port)
    with grpc.insecure_channel(g.addr) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        # The holder's only slot: one call holds it, three wait in its line.
        held = [unary.future(b"h%d" % i, metadata=[("x-hold", "h%d" % i)], timeout=60) for i in range(4)]
        assert wait_for(lambda: holder.events()["calls"] == 1), holder.events()
        # The silent endpoint: one call on a connection that never gets
        # SETTINGS, two waiting behind it.
        queued = [unary.future(b"s%d" % i, metadata=[("x-to", "silent")], timeout=60) for i in range(3)]
        assert silent.accept() == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # and never answers
        # grelay answers this itself. The call goes on the same connection
        # after the others, so grelay has routed all of them by now.
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/nowhere.Service/Probe")(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert holder.events()["calls"] == 1
        assert not any(f.done() for f in held + queued)

        g.stop()  # SIGTERM by PID; asserts exit status 0 and no sanitizer report
        codes = []
        for f in held + queued:
            err = f.exception(timeout=20)  # grpc.FutureTimeoutError if a call hangs
            codes.append((err.code(), err.details()) if isinstance(err, grpc.RpcError) else ("no error", f.result()))
        assert all(c == CUT for c in codes), codes
