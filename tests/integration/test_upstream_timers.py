"""Upstream connections bounded in time: idle connections closed and
reopened, black-holed ones found by PING, gRPC servers' ping policy kept,
calls that wait too long in the line, and a backend's advertised
SETTINGS_MAX_HEADER_LIST_SIZE respected (docs/limits.md, Upstream connections)."""
import json
import os
import re
import signal
import subprocess
import time

import grpc
import pytest

from harness import PY, Backend, free_port, simple_config, stop, wait_port

# A default-configured grpcio server with options from the command line
# (grpc.max_concurrent_streams, grpc.max_metadata_size): its ping policy is
# grpcio's own. /test.Echo/Unary echoes (x-sleep-ms: holds that long first)
# and records the connection (peer) it came on; /test.Echo/Quiet streams
# two messages with x-quiet-ms of silence between; /test.Control/Peers says
# which connections calls came on.
SERVER = r"""
import json, sys, threading, time
from concurrent import futures
import grpc
peers, lock = [], threading.Lock()
def note(ctx):
    with lock:
        if ctx.peer() not in peers:
            peers.append(ctx.peer())
def unary(req, ctx):
    note(ctx)
    md = dict(ctx.invocation_metadata())
    time.sleep(int(md.get("x-sleep-ms", "0")) / 1000.0)
    return req
def quiet(req, ctx):
    note(ctx)
    md = dict(ctx.invocation_metadata())
    yield b"first"
    time.sleep(int(md.get("x-quiet-ms", "0")) / 1000.0)
    yield b"second"
def control(req, ctx):
    with lock:
        return json.dumps(peers).encode()
opts = [(k, int(v)) for k, v in (a.split("=") for a in sys.argv[2:])]
s = grpc.server(futures.ThreadPoolExecutor(16), options=opts)
s.add_generic_rpc_handlers((
    grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Quiet": grpc.unary_stream_rpc_method_handler(quiet)}),
    grpc.method_handlers_generic_handler("test.Control", {
        "Peers": grpc.unary_unary_rpc_method_handler(control)})))
if s.add_insecure_port(sys.argv[1]) == 0:
    sys.exit(1)
s.start()
print("ready", flush=True)
s.wait_for_termination()
"""


class Server:
    def __init__(self, *options):
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.proc = subprocess.Popen([PY, "-c", SERVER, self.addr] + list(options), stdout=subprocess.PIPE)
        assert self.proc.stdout.readline().strip() == b"ready"

    def peers(self):
        with grpc.insecure_channel(self.addr) as ch:
            return json.loads(ch.unary_unary("/test.Control/Peers")(b"", timeout=5))

    def stop(self):
        stop(self.proc)


@pytest.fixture
def server_factory():
    started = []

    def start(*options):
        s = Server(*options)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def config(port, endpoints, **cluster):
    c = simple_config(port, endpoints, cluster_extra=cluster)
    c["log_level"] = "debug"
    return c


def test_idle_upstream_connection_is_closed_then_reopened(server_factory, grelay_factory):
    srv = server_factory()
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], idle_timeout="300ms"), port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        assert call(b"one", timeout=10) == b"one"
        for _ in range(100):  # bounded: 5 s
            if "no call for 300ms: closing the connection" in g.log():
                break
            time.sleep(0.05)
        assert "no call for 300ms: closing the connection" in g.log()
        assert call(b"two", timeout=10) == b"two"  # a new connection, opened for it
    assert len(srv.peers()) == 2


def test_busy_upstream_connection_is_not_closed_as_idle(server_factory, grelay_factory):
    srv = server_factory()
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], idle_timeout="300ms"), port)
    with grpc.insecure_channel(g.addr) as ch:
        # One call lasting three idle timeouts: the connection has a stream.
        assert ch.unary_unary("/test.Echo/Unary")(b"slow", metadata=[("x-sleep-ms", "1000")], timeout=10) == b"slow"
    assert len(srv.peers()) == 1
    assert "no call for 300ms" not in g.log().split("slow")[0]


def test_black_holed_backend_is_found_by_ping_and_its_call_retried(grelay_factory):
    """A call in flight on a backend that freezes (SIGSTOP: the kernel still
    takes the bytes, nothing answers) is retried on the other endpoint within
    keepalive interval + timeout, and the next calls go to the healthy one."""
    frozen, healthy = Backend("frozen"), Backend("healthy")
    try:
        port = free_port()
        cfg = config(port, [frozen.addr, healthy.addr], keepalive={"interval": "1s", "timeout": "300ms"},
                     connect_timeout="1s")
        cfg["listeners"][0]["virtual_hosts"][0]["routes"] = [{
            "match": {"prefix": "/test."}, "cluster": "backend",
            "retry_policy": {"retry_on": ["unavailable"], "num_retries": 1}}]
        g = grelay_factory(cfg, port)
        with grpc.insecure_channel(g.addr) as ch:
            call = ch.unary_unary("/test.Echo/Unary")
            md = [("x-hold-on", "frozen")]  # held on `frozen`, answered at once on `healthy`
            held = None
            for i in range(4):  # round robin: one of two lands on `frozen`
                f = call.future(b"call %d" % i, metadata=md, timeout=30)
                try:
                    f.result(timeout=0.4)
                except grpc.FutureTimeoutError:
                    held = f
                    break
            assert held is not None, "no call was held on the frozen backend"
            os.kill(frozen.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                result, c = None, None
                # Without PINGs this would hang until its 30 s deadline.
                try:
                    result = held.result(timeout=10)
                except grpc.FutureTimeoutError:
                    raise AssertionError(g.log()[-3000:])
                waited = time.monotonic() - t0
                assert result.startswith(b"call ")
                assert dict(held.initial_metadata())["x-backend"] == "healthy"
                assert waited < 5, waited  # interval + timeout is 1.3 s; 5 s is a loose bound
                log = g.log()
                assert "no answer to a PING within 300ms" in log
                for i in range(4):  # the frozen endpoint is avoided now
                    r, c = call.with_call(b"next %d" % i, timeout=10)
                    assert dict(c.initial_metadata())["x-backend"] == "healthy"
            finally:
                os.kill(frozen.proc.pid, signal.SIGCONT)
    finally:
        frozen.stop()
        healthy.stop()


def test_black_holed_call_without_retry_policy_fails_unavailable(grelay_factory):
    frozen = Backend("frozen")
    try:
        port = free_port()
        g = grelay_factory(config(port, [frozen.addr], keepalive={"interval": "1s", "timeout": "300ms"}), port)
        with grpc.insecure_channel(g.addr) as ch:
            f = ch.unary_unary("/test.Echo/Unary").future(b"x", metadata=[("x-hold", "bh")], timeout=30)
            time.sleep(0.3)
            assert not f.done()
            os.kill(frozen.proc.pid, signal.SIGSTOP)
            try:
                with pytest.raises(grpc.RpcError) as e:
                    f.result(timeout=10)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "connection lost: no answer to a PING within 300ms" in e.value.details()
            finally:
                os.kill(frozen.proc.pid, signal.SIGCONT)
    finally:
        frozen.stop()


def quiet_stream(g, quiet_ms):
    with grpc.insecure_channel(g.addr) as ch:
        stream = ch.unary_stream("/test.Echo/Quiet")(b"", metadata=[("x-quiet-ms", str(quiet_ms))], timeout=30)
        return list(stream)


def test_quiet_stream_is_not_killed_by_the_servers_ping_policy(server_factory, grelay_factory):
    """A server stream quiet for 15 keepalive intervals, to a default grpcio
    server: grelay PINGs once, then holds its PINGs back (the server sent
    no HEADERS or DATA since), and the stream lives."""
    srv = server_factory()
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], keepalive={"interval": "200ms", "timeout": "2s"}), port)
    assert quiet_stream(g, 3000) == [b"first", b"second"]
    log = g.log()
    assert "too_many_pings" not in log
    assert 1 <= log.count(": PING\n") <= 2  # one free, one early: then held back
    assert "next PING held back" in log


def test_pinging_every_interval_would_get_too_many_pings(server_factory, grelay_factory):
    """The same stream with the hold-back turned off (a test-only switch):
    grpcio answers the third early PING with GOAWAY ENHANCE_YOUR_CALM
    too_many_pings and closes the connection, which kills the stream. This
    is the trap the policy above avoids."""
    srv = server_factory()
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], keepalive={"interval": "200ms", "timeout": "2s"}), port,
                       env={"GRELAY_TEST_PING_MIN_INTERVAL_MS": "0"})
    with pytest.raises(grpc.RpcError) as e:
        quiet_stream(g, 3000)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "ENHANCE_YOUR_CALM: too_many_pings" in g.log()


def test_a_call_waiting_too_long_for_a_stream_slot_fails_unavailable(server_factory, grelay_factory):
    srv = server_factory("grpc.max_concurrent_streams=1")
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], max_connections=1, max_pending_time="300ms"), port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        assert call(b"warm", timeout=10) == b"warm"  # the server's SETTINGS (1 stream) are known
        slow = call.future(b"slow", metadata=[("x-sleep-ms", "2000")], timeout=30)
        time.sleep(0.2)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            call(b"waits")  # no deadline: only max_pending_time ends its wait
        waited = time.monotonic() - t0
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no stream slot within max_pending_time (300ms)" in e.value.details()
        assert waited < 1.8, waited  # before the slow call let go of the slot
        assert slow.result(timeout=10) == b"slow"
        assert call(b"after", timeout=10) == b"after"
    assert len(srv.peers()) == 1


def test_headers_over_the_backends_limit_are_answered_locally(server_factory, grelay_factory):
    """The backend advertises SETTINGS_MAX_HEADER_LIST_SIZE 2048: a call with
    4 KiB of metadata gets RESOURCE_EXHAUSTED from grelay and never reaches
    it, and the connection other calls share stays up."""
    srv = server_factory("grpc.max_metadata_size=2048")
    port = free_port()
    g = grelay_factory(config(port, [srv.addr]), port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        assert call(b"before", timeout=10) == b"before"
        for i in range(5):
            with pytest.raises(grpc.RpcError) as e:
                call(b"big", metadata=[("x-big", "a" * 4096)], timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "SETTINGS_MAX_HEADER_LIST_SIZE" in e.value.details()
            assert call(b"ok %d" % i, timeout=10) == b"ok %d" % i
        # Just under the limit still goes through.
        assert call(b"fits", metadata=[("x-small", "a" * 1000)], timeout=10) == b"fits"
    assert len(srv.peers()) == 1  # one upstream connection carried every call


def test_a_connection_without_calls_is_not_pinged_but_checked_on_reuse(server_factory, grelay_factory):
    """gRPC servers strike PINGs on a connection with no stream: grelay sends
    none while it is idle, and the first call after the quiet spell brings
    one (after its HEADERS), as nghttpx's connchk does before reuse."""
    srv = server_factory()
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], keepalive={"interval": "200ms", "timeout": "2s"}), port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        assert call(b"one", timeout=10) == b"one"
        time.sleep(1.5)  # 7 intervals without a call
        assert ": PING\n" not in g.log()
        assert call(b"two", metadata=[("x-sleep-ms", "500")], timeout=10) == b"two"
        assert g.log().count(": PING\n") >= 1
    assert "too_many_pings" not in g.log()
    assert len(srv.peers()) == 1


# Accepts, sends SETTINGS with the largest windows HTTP/2 allows (so a
# client may send without waiting), then never reads again: its kernel
# buffers fill, and then the proxy's.
NO_READ_SERVER = r"""
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, int(port)))
srv.listen(16)
print("ready", flush=True)
held = []
while True:
    s, _ = srv.accept()
    big = (1 << 31) - 1
    settings = struct.pack(">HI", 4, big)  # SETTINGS_INITIAL_WINDOW_SIZE
    s.sendall(struct.pack(">I", len(settings))[1:] + bytes([4, 0]) + struct.pack(">I", 0) + settings +
              struct.pack(">I", 4)[1:] + bytes([8, 0]) + struct.pack(">II", 0, big - 65535))  # WINDOW_UPDATE
    held.append(s)  # never recv()
"""


def upload(n, size):
    for i in range(n):
        yield b"u" * size


def test_a_backend_that_does_not_read_loses_its_connection_after_the_write_deadline(grelay_factory):
    """A client uploads to a backend that stopped reading: once grelay's own
    buffer toward it has not moved for keepalive.timeout, the connection is
    lost and the call fails UNAVAILABLE saying so (PINGs are off here, so
    only the write deadline can find it)."""
    bport = free_port()
    proc = subprocess.Popen([PY, "-c", NO_READ_SERVER, "127.0.0.1:%d" % bport], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        port = free_port()
        g = grelay_factory(config(port, ["127.0.0.1:%d" % bport], keepalive={"interval": "0s", "timeout": "500ms"}),
                           port)
        with grpc.insecure_channel(g.addr) as ch:
            with pytest.raises(grpc.RpcError) as e:
                # 64 MiB: more than the kernel buffers on both sides take
                ch.stream_unary("/test.Echo/ClientStream")(upload(1024, 64 * 1024), timeout=20)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
        assert "connection lost: it read none of" in e.value.details()
        assert "for 500ms" in e.value.details()
    finally:
        stop(proc)


def upstream_sockets(bport):
    """`ss -o` lines of grelay's established connections to port bport."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", "dport", "= :%d" % bport],
                         capture_output=True, text=True, timeout=10).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_upstream_sockets_have_tcp_keepalive_from_the_cluster_keepalive(server_factory, grelay_factory):
    """An idle upstream connection (no call: no PING) is still watched by TCP
    keepalive, its first probe due keepalive.interval after the last bytes."""
    srv = server_factory()
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], keepalive={"interval": "40s", "timeout": "3s"}), port)
    with grpc.insecure_channel(g.addr) as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"one", timeout=10) == b"one"
        lines = upstream_sockets(srv.port)
        assert len(lines) == 1, lines
        assert "timer:(keepalive," in lines[0], lines
        secs = float(re.search(r"timer:\(keepalive,([0-9.]+)sec", lines[0]).group(1))
        assert 30 < secs <= 40, lines
    assert "TCP keepalive options" not in g.log()  # every setsockopt (TCP_USER_TIMEOUT too) worked


def test_max_connection_age_spreads_calls_over_new_connections_without_failures(server_factory, grelay_factory):
    """max_connection_age 1s: a client making calls for ~4 s (three at a
    time, and one call that outlives two ages) sees no failure, and the
    backend sees its calls arrive on several connections in turn."""
    srv = server_factory()
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], max_connection_age="1s"), port)
    failures, done = [], 0
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        long_call = call.future(b"long", metadata=[("x-sleep-ms", "2500")], timeout=30)
        t0 = time.monotonic()
        for i in range(400):  # bounded: ~4 s of calls
            if time.monotonic() - t0 > 4:
                break
            futs = [call.future(b"%d.%d" % (i, k), metadata=[("x-sleep-ms", "20")], timeout=10) for k in range(3)]
            for k, f in enumerate(futs):
                try:
                    assert f.result() == b"%d.%d" % (i, k)
                    done += 1
                except grpc.RpcError as e:
                    failures.append((e.code(), e.details()))
        assert long_call.result() == b"long"  # an aged connection lets its calls finish
    assert failures == []
    assert done > 30
    assert len(srv.peers()) >= 3, srv.peers()
    assert "reached max_connection_age" in g.log()


def test_an_aged_connection_busy_with_a_long_call_leaves_room_for_a_new_one(server_factory, grelay_factory):
    """max_connections 1: the one connection ages while a long call holds
    it; the next calls get a new connection at once (a draining connection
    does not count against max_connections) instead of waiting in the line
    until max_pending_time."""
    srv = server_factory()
    port = free_port()
    g = grelay_factory(config(port, [srv.addr], max_connections=1, max_connection_age="300ms",
                              max_pending_time="200ms"), port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        long_call = call.future(b"long", metadata=[("x-sleep-ms", "3000")], timeout=30)
        for _ in range(100):  # bounded: 5 s
            if "reached max_connection_age" in g.log():
                break
            time.sleep(0.05)
        assert "reached max_connection_age (300ms): no new streams, 1 left" in g.log()
        assert [call(b"next %d" % i, timeout=10) for i in range(3)] == [b"next %d" % i for i in range(3)]
        assert not long_call.done()
        assert long_call.result() == b"long"
    assert len(srv.peers()) >= 2
