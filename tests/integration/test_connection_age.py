"""Listener max_connection_age and max_connection_age_grace (issue 13,
Connection age; docs/lifecycle.md).

A client connection older than the age (±10% jitter) gets the drain's
two-phase GOAWAY (2^31-1 and a PING, then the final GOAWAY), so the client
moves new calls to a new connection without a failed call; calls still open
after the grace end with UNAVAILABLE. HTTP/1.1 gets `Connection: close` (an
idle one is closed).
"""
import time

import grpc

from grpcweb_client import H1, frame
from harness import free_port, simple_config
from test_failures import wait_for

AGED = "grelay closed the connection at max_connection_age"


def age_config(port, backends, age, grace, **listener):
    cfg = simple_config(port, [b.addr for b in backends],
                        listener_extra=dict(listener, max_connection_age=age, max_connection_age_grace=grace))
    cfg["log_level"] = "debug"
    return cfg


def test_one_channel_across_several_ages_sees_no_failure(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(age_config(port, backends[:1], "600ms", "5s"), port)
    results, failures = [], []
    with grpc.insecure_channel(g.addr) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        deadline = time.monotonic() + 4
        for i in range(2000):  # bounded; ~4 s of calls, several ages
            if time.monotonic() > deadline:
                break
            # Some calls are in flight when a GOAWAY comes: they finish.
            futs = [unary.future(b"%d-%d" % (i, j), metadata=[("x-delay-ms", "150")] if j < 2 else (), timeout=10)
                    for j in range(4)]
            for j, f in enumerate(futs):
                try:
                    results.append(f.result() == b"%d-%d" % (i, j))
                except grpc.RpcError as e:
                    failures.append((e.code(), e.details()))
    assert failures == [], failures
    assert results and all(results)
    log = g.log()
    ages = log.count("max_connection_age: GOAWAY 2^31-1 and PING")
    assert ages >= 3, log[-3000:]  # ~4 s at 600ms ±10%: the channel reconnected each time
    assert log.count("final GOAWAY") >= ages - 1, log[-3000:]


def test_a_call_past_the_grace_is_cut(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(age_config(port, backends[:1], "400ms", "1s"), port)
    with grpc.insecure_channel(g.addr) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        t0 = time.monotonic()
        held = unary.future(b"", metadata=[("x-hold", "aged")], timeout=30)
        assert wait_for(lambda: "max_connection_age: GOAWAY" in g.log(), seconds=5), g.log()[-3000:]
        # The held call's connection is draining; a new call goes to a new one.
        assert unary(b"fresh", timeout=5) == b"fresh"
        time.sleep(max(0.0, t0 + 0.9 - time.monotonic()))
        assert not held.done()  # within the grace (0.44 s + 1 s at the earliest)
        try:
            held.result(timeout=10)
            raise AssertionError("the held call ended well")
        except grpc.RpcError as e:
            assert (e.code(), e.details()) == (grpc.StatusCode.UNAVAILABLE, AGED)


def test_an_idle_http1_connection_past_its_age_is_closed(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(age_config(port, backends[:1], "500ms", "5s", grpc_web=True), port)
    c = H1(port)
    try:
        c.request("/test.Echo/Unary", frame(b"young"), [("content-type", "application/grpc-web+proto")])
        status, headers, _ = c.read_response()
        assert status == 200 and "connection" not in headers
        c.sock.settimeout(5)
        assert c.sock.recv(100) == b""  # closed once past its age (0.45-0.55 s)
    finally:
        c.close()
    assert g.proc.poll() is None


def test_max_requests_per_connection_rotates_a_channel_without_a_failure(backends, grelay_factory):
    """Listener max_requests_per_connection: 3. The third call of each client
    connection starts its drain (the two-phase GOAWAY); one grpcio channel
    making 12 calls moves to a new connection each time and sees no failure."""
    port = free_port()
    cfg = simple_config(port, [backends[0].addr], listener_extra={"max_requests_per_connection": 3})
    cfg["log_level"] = "debug"
    g = grelay_factory(cfg, port)
    with grpc.insecure_channel(g.addr) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        for i in range(12):
            assert unary(b"r%d" % i, timeout=10) == b"r%d" % i
    log = g.log()
    assert log.count("draining: GOAWAY 2^31-1 and PING") >= 3, log[-3000:]


def test_max_requests_per_connection_closes_http1_after_the_last_answer(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [backends[0].addr],
                                     listener_extra={"grpc_web": True, "max_requests_per_connection": 2}), port)
    c = H1(port)
    try:
        for i, closes in ((1, False), (2, True)):
            c.request("/test.Echo/Unary", frame(b"n%d" % i), [("content-type", "application/grpc-web+proto")])
            status, headers, _ = c.read_response()
            assert status == 200 and (headers.get("connection") == "close") == closes, (i, headers)
        c.sock.settimeout(5)
        assert c.sock.recv(100) == b""
    finally:
        c.close()
