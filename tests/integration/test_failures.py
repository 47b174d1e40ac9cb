"""What the client sees when things go wrong, and what the backend sees when
the client goes away."""
import json
import socket
import time

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from h2client import grpc_headers, raw_h2, read_until_closed
from harness import Backend, free_port, simple_config


def wait_for(pred, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    return pred()


def test_client_cancel_reaches_the_backend(backends, channel):
    call = channel.unary_stream("/test.Echo/ServerStream")
    it = call(json.dumps({"count": 5, "size": 8, "hold": True, "id": "cancel-1"}).encode(), timeout=30)
    first = next(it)
    assert first.startswith(b"00000000")
    name = dict(it.initial_metadata())["x-backend"]
    it.cancel()
    backend = next(b for b in backends if b.name == name)
    assert wait_for(lambda: "cancel-1" in backend.events()["cancelled"]), backend.events()


def test_no_route_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/other.Service/Method")(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "no route" in e.value.details()
    assert "/other.Service/Method" in e.value.details()


def test_no_reachable_backend_is_unavailable_with_the_reason(grelay_factory):
    port = free_port()
    dead = "127.0.0.1:%d" % free_port()  # nothing listens there
    g = grelay_factory(simple_config(port, [dead]), port)
    with grpc.insecure_channel(g.addr) as ch:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert dead in e.value.details()
            assert "refused" in e.value.details().lower()


def test_backend_killed_mid_stream_gives_unavailable(grelay_factory):
    b = Backend("doomed")
    port = free_port()
    g = grelay_factory(simple_config(port, [b.addr]), port)
    with grpc.insecure_channel(g.addr) as ch:
        it = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 2, "size": 8, "hold": True, "id": "doomed"}).encode(), timeout=30)
        next(it)
        b.proc.kill()
        b.proc.wait(10)
        with pytest.raises(grpc.RpcError) as e:
            list(it)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert b.addr in e.value.details()


def test_oversized_request_headers_get_resource_exhausted(proxy):
    s, c = raw_h2(proxy.port)
    try:
        c.send_headers(1, grpc_headers("/test.Echo/Unary", [("x-huge", "v" * 70000)]), end_stream=True)
        s.sendall(c.data_to_send())
        out = read_until_closed(s, c, 1)
        assert out["headers"] is not None, out
        assert out["headers"][b"grpc-status"] == b"8"
        assert b"exceed" in out["headers"][b"grpc-message"]
        # The connection still serves calls.
        c.send_headers(3, grpc_headers("/test.Echo/Unary"))
        c.send_data(3, b"\x00\x00\x00\x00\x02hi", end_stream=True)
        s.sendall(c.data_to_send())
        out = read_until_closed(s, c, 3)
        assert out["data"] == b"\x00\x00\x00\x00\x02hi"
        assert out["trailers"][b"grpc-status"] == b"0"
    finally:
        s.close()


def test_a_client_that_stops_reading_stalls_the_backend(grelay_factory):
    """Flow control end to end: the backend can send only what the windows
    and grelay's bounded buffers hold, not the 256 MiB it would like to."""
    b = Backend("flooder")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr]), port)
        s, c = raw_h2(port)
        c.send_headers(1, grpc_headers("/test.Echo/Flood"))
        c.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)
        s.sendall(c.data_to_send())
        got = 0
        while got < 100000:  # read a little, acknowledging it, then stop
            data = s.recv(65536)
            assert data
            got += len(data)
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            s.sendall(c.data_to_send())
        rss_before = g.rss_kib()
        # Unbounded buffering would let the backend finish 4096 messages in
        # well under this time on loopback.
        time.sleep(2)
        sent = b.events()["flood_sent"]
        assert sent < 64, "backend sent %d x 64 KiB to a client that reads nothing" % sent
        assert g.rss_kib() - rss_before < 16 * 1024
        s.close()
    finally:
        b.stop()


def test_malformed_frames_close_only_that_connection(proxy):
    bad = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    bad.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\xff\x00\x00\x00\x00\x00garbage!")
    bad.settimeout(10)
    try:
        while bad.recv(65536):
            pass
    except ConnectionResetError:
        pass
    bad.close()
    with grpc.insecure_channel(proxy.addr) as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"still fine", timeout=10) == b"still fine"


@pytest.fixture
def raw_backend_proxy(raw_backend, grelay_factory):
    port = free_port()
    return grelay_factory(simple_config(port, [raw_backend.addr], routes=[{"match": {"prefix": "/"}, "cluster": "backend"}]),
                          port)


@pytest.mark.parametrize("what,code", [("RstRefused", "UNAVAILABLE"), ("RstCancel", "CANCELLED"),
                                       ("RstProtocol", "INTERNAL")])
def test_upstream_reset_before_response_becomes_a_status(raw_backend_proxy, what, code):
    with grpc.insecure_channel(raw_backend_proxy.addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/raw.Svc/" + what)(b"x", timeout=10)
    assert e.value.code() == grpc.StatusCode[code]
    assert "upstream reset the stream" in e.value.details()


def test_upstream_reset_after_data_delivers_the_data_then_a_status(raw_backend_proxy):
    with grpc.insecure_channel(raw_backend_proxy.addr) as ch:
        it = ch.unary_stream("/raw.Svc/RstAfterData")(b"x", timeout=10)
        assert next(it) == b"hello"
        with pytest.raises(grpc.RpcError) as e:
            next(it)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "upstream reset the stream" in e.value.details()


def test_raw_backend_proper_answer_passes(raw_backend_proxy):
    with grpc.insecure_channel(raw_backend_proxy.addr) as ch:
        assert ch.unary_unary("/raw.Svc/Ok")(b"fine", timeout=10) == b"fine"


def test_client_disconnect_cancels_all_its_upstream_streams(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [backends[1].addr]), port)
    s, c = raw_h2(port)
    ids = [1, 3, 5]
    for sid in ids:
        req = json.dumps({"count": 2, "size": 8, "hold": True, "id": "gone-%d" % sid}).encode()
        c.send_headers(sid, grpc_headers("/test.Echo/ServerStream"))
        c.send_data(sid, b"\x00" + len(req).to_bytes(4, "big") + req, end_stream=True)
    s.sendall(c.data_to_send())
    first = set()
    deadline = time.monotonic() + 10
    while len(first) < len(ids) and time.monotonic() < deadline:
        for ev in c.receive_data(s.recv(65536)):
            if isinstance(ev, h2.events.DataReceived):
                first.add(ev.stream_id)
    assert first == set(ids)  # all three are streaming
    s.close()  # the client vanishes
    want = {"gone-%d" % sid for sid in ids}
    assert wait_for(lambda: want <= set(backends[1].events()["cancelled"])), backends[1].events()["cancelled"]
