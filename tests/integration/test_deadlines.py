"""grpc-timeout: enforced at grelay, capped or defaulted by the route, and
propagated upstream as the time actually left."""
import json
import time

import grpc
import pytest

from harness import deadline_message, free_port, simple_config
from test_failures import grpc_headers, raw_h2, read_until_closed, wait_for


def parse_timeout(v):
    units = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
    return int(v[:-1]) * units[v[-1]]


def raw_call(port, path, headers=(), body=b"\x00\x00\x00\x00\x02hi", seconds=10):
    s, c = raw_h2(port)
    try:
        c.send_headers(1, grpc_headers(path, headers))
        c.send_data(1, body, end_stream=True)
        s.sendall(c.data_to_send())
        return read_until_closed(s, c, 1, seconds)
    finally:
        s.close()


def status_of(out):
    """grpc-status and grpc-message, from trailers or a trailers-only answer."""
    src = out["trailers"] or out["headers"] or {}
    return src.get(b"grpc-status"), src.get(b"grpc-message", b"").decode()


def route_to(cluster="backend", **route):
    r = {"match": {"prefix": "/"}, "cluster": cluster}
    r.update(route)
    return [r]


def test_held_unary_gets_deadline_exceeded_from_grelay(raw_backend, grelay_factory):
    """A backend that keeps no deadline (it never answers): grelay ends the
    call itself, trailers-only, and resets the backend's stream with CANCEL
    (8), which the backend reports on the next call."""
    port = free_port()
    grelay_factory(simple_config(port, [raw_backend.addr], routes=route_to()), port)
    out = raw_call(port, "/raw.Svc/Hold", [("grpc-timeout", "300m")])
    assert out["trailers"] is None  # trailers-only: nothing had been sent
    code, msg = status_of(out)
    assert code == b"4", out
    assert "deadline exceeded at grelay" in msg
    assert wait_for(lambda: raw_call(port, "/raw.Svc/Ok")["trailers"][b"x-resets"] == b"8")


def test_held_unary_against_a_grpc_server_that_keeps_the_deadline(backends, grelay_factory):
    """A gRPC server keeps the grpc-timeout grelay sends it (what was left of
    the client's 300 ms), so at the deadline its DEADLINE_EXCEEDED and
    grelay's race (grpc-core may fire a fraction of a millisecond early):
    the client gets DEADLINE_EXCEEDED from one of them."""
    port = free_port()
    grelay_factory(simple_config(port, [backends[0].addr]), port)
    out = raw_call(port, "/test.Echo/Unary", [("grpc-timeout", "300m"), ("x-hold", "dl-unary")])
    code, msg = status_of(out)
    assert code == b"4", out
    assert deadline_message(msg), out
    assert 0 < backends[0].events()["held"]["dl-unary"] <= 0.3


def test_deadline_cuts_a_server_stream_after_its_first_message(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [backends[0].addr]), port)
    req = json.dumps({"count": 3, "size": 8, "hold": True, "id": "dl-stream"}).encode()
    body = b"\x00" + len(req).to_bytes(4, "big") + req
    out = raw_call(port, "/test.Echo/ServerStream", [("grpc-timeout", "500m")], body)
    assert out["headers"][b":status"] == b"200"
    assert out["data"].startswith(b"\x00\x00\x00\x00\x0800000000")  # the first message got through
    assert out["trailers"] is not None, out
    assert status_of(out)[0] == b"4"
    assert wait_for(lambda: "dl-stream" in backends[0].events()["cancelled"])


def test_backend_sees_a_positive_deadline_no_larger_than_the_clients(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [backends[0].addr]), port)
    with grpc.insecure_channel(g.addr) as ch:
        start = time.monotonic()
        _, call = ch.unary_unary("/test.Echo/Unary").with_call(b"x", timeout=5)
        spent = time.monotonic() - start
    remaining = float(dict(call.initial_metadata())["x-time-remaining"])
    # "The client's" is what it sends: grpcio's C-core rounds a timeout of 5 s
    # up when it encodes it (measured: "5S" on a fresh channel, then "5010m"),
    # so the backend may see up to 5.01 s; more would be grelay adding time.
    assert 0 < remaining <= 5.01
    assert remaining >= 5.0 - spent - 1.0  # not cut by more than the time the call took, plus slack


def test_deadline_shrinks_hop_by_hop(raw_backend, grelay_factory):
    """client -(5S)-> grelay A -> grelay B -> backend, each hop subtracting a
    100 ms offset and the time it spent: what arrives is less at every hop."""
    port_b = free_port()
    grelay_factory(simple_config(port_b, [raw_backend.addr], routes=route_to(grpc_timeout_offset="100ms")), port_b)
    port_a = free_port()
    grelay_factory(simple_config(port_a, ["127.0.0.1:%d" % port_b], routes=route_to(grpc_timeout_offset="100ms")),
                   port_a)
    one_hop = parse_timeout(raw_call(port_b, "/raw.Svc/Ok", [("grpc-timeout", "5S")])["trailers"][
        b"x-seen-grpc-timeout"].decode())
    two_hops = parse_timeout(raw_call(port_a, "/raw.Svc/Ok", [("grpc-timeout", "5S")])["trailers"][
        b"x-seen-grpc-timeout"].decode())
    assert 4.5 < one_hop <= 4.9
    assert 4.0 < two_hops <= 4.8


def test_max_grpc_timeout_caps_the_clients_deadline(raw_backend, grelay_factory):
    port = free_port()
    grelay_factory(simple_config(port, [raw_backend.addr], routes=route_to(max_grpc_timeout="1s")), port)
    seen = raw_call(port, "/raw.Svc/Ok", [("grpc-timeout", "100S")])["trailers"][b"x-seen-grpc-timeout"]
    assert 0.5 < parse_timeout(seen.decode()) <= 1.0
    seen = raw_call(port, "/raw.Svc/Ok", [("grpc-timeout", "200m")])["trailers"][b"x-seen-grpc-timeout"]
    assert 0.1 < parse_timeout(seen.decode()) <= 0.2


def test_route_timeout_is_the_default_deadline(raw_backend, backends, grelay_factory):
    port = free_port()
    grelay_factory(simple_config(port, [raw_backend.addr], routes=route_to(timeout="2s")), port)
    seen = raw_call(port, "/raw.Svc/Ok")["trailers"][b"x-seen-grpc-timeout"]
    assert 1.5 < parse_timeout(seen.decode()) <= 2.0
    port2 = free_port()
    grelay_factory(simple_config(port2, [backends[1].addr], routes=route_to(timeout="300ms")), port2)
    out = raw_call(port2, "/test.Echo/Unary", [("x-hold", "dl-default")])
    assert status_of(out)[0] == b"4"


def test_no_deadline_sends_no_grpc_timeout(raw_backend, grelay_factory):
    port = free_port()
    grelay_factory(simple_config(port, [raw_backend.addr], routes=route_to()), port)
    assert raw_call(port, "/raw.Svc/Ok")["trailers"][b"x-seen-grpc-timeout"] == b"none"


@pytest.mark.parametrize("value", ["", "1", "S", "123456789S", "10x", "-1S", "1.5S", "1s", "1 S"])
def test_malformed_grpc_timeout_is_internal_and_harms_nothing_else(backends, grelay_factory, value):
    port = free_port()
    g = grelay_factory(simple_config(port, [backends[0].addr]), port)
    out = raw_call(port, "/test.Echo/Unary", [("grpc-timeout", value)])
    code, msg = status_of(out)
    assert code == b"13", out
    assert "malformed grpc-timeout" in msg
    with grpc.insecure_channel(g.addr) as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"ok", timeout=10) == b"ok"


def test_waiting_for_a_slot_counts_against_the_deadline(backends, grelay_factory):
    port = free_port()
    extra = {"max_connections": 1, "max_streams_per_connection": 1}
    g = grelay_factory(simple_config(port, [backends[2].addr], cluster_extra=extra), port)
    with grpc.insecure_channel(g.addr) as ch:
        held = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 2, "size": 8, "hold": True, "id": "slot"}).encode(), timeout=30)
        next(held)
        out = raw_call(port, "/test.Echo/Unary", [("grpc-timeout", "300m")])
        assert status_of(out)[0] == b"4"
        held.cancel()


def test_http_error_page_from_upstream_maps_to_a_grpc_status(raw_backend, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [raw_backend.addr], routes=route_to()), port)
    with grpc.insecure_channel(g.addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/raw.Svc/Http503")(b"x", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "upstream answered HTTP 503 (text/html)" in e.value.details()
