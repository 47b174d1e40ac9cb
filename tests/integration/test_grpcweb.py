"""gRPC-Web translation at the byte level, over HTTP/1.1 and HTTP/2, against
a native-only gRPC backend (grpcio)."""
import base64
import json
import socket
import time

import grpc
import h2.events
import pytest

from grpcweb_client import H1, b64_segments, frame, one_request, parse_frames, web_call
from harness import deadline_message, free_port, simple_config
from test_failures import raw_h2, read_until_closed, wait_for

CORS = {"allow_origins": ["http://localhost:3000", "https://*.example.com"], "allow_headers": ["x-custom-req"],
        "expose_headers": ["x-custom-resp"], "max_age": 600}


def web_config(port, endpoints, cors=CORS, route_extra=None, **listener_extra):
    route = {"match": {"prefix": "/"}, "cluster": "backend"}
    route.update(route_extra or {})
    cfg = simple_config(port, endpoints, routes=[route], listener_extra=dict(grpc_web=True, **listener_extra))
    if cors:
        cfg["listeners"][0]["virtual_hosts"][0]["cors"] = cors
    return cfg


@pytest.fixture
def web(backends, grelay_factory):
    port = free_port()
    return grelay_factory(web_config(port, [backends[0].addr]), port)


@pytest.mark.parametrize("text", [False, True])
def test_unary_over_http1(web, text):
    status, h, msgs, trailers = web_call(web.port, "/test.Echo/Unary", b"hello web", text,
                                         [("x-trace", "t-1"), ("x-blob-bin", base64.b64encode(b"\x00\xff").decode())])
    assert status == 200
    assert h["content-type"] == ("application/grpc-web-text" if text else "application/grpc-web+proto")
    assert h["x-trace"] == "t-1"  # custom metadata both ways
    assert h["transfer-encoding"] == "chunked"
    assert msgs == [b"hello web"]
    assert trailers["grpc-status"] == "0"
    assert trailers["x-trace-t"] == "t-1"
    assert base64.b64decode(trailers["x-blob-t-bin"] + "==") == b"\x00\xff"


@pytest.mark.parametrize("content_type,upstream", [("application/grpc-web", "application/grpc"),
                                                   ("application/grpc-web+json", "application/grpc+json")])
def test_content_types_map_to_native_grpc_and_back(web, content_type, upstream):
    status, h, body = one_request(web.port, "/test.Echo/Unary", frame(b"x"), [("content-type", content_type)])
    assert status == 200 and h["content-type"] == content_type
    assert parse_frames(body)[0] == [b"x"]


def test_text_request_split_at_every_offset(web):
    """A chunked request body whose chunk boundary falls at every offset of
    the base64 text, inside quanta and around the padding."""
    body = base64.b64encode(frame(b"split me"))
    for k in range(1, len(body)):
        status, _, msgs, trailers = web_call(web.port, "/test.Echo/Unary", b"split me", True,
                                             chunks=lambda b: [b[:k], b[k:]])
        assert (status, msgs, trailers["grpc-status"]) == (200, [b"split me"], "0"), k


def test_text_request_with_padding_between_messages(web):
    """Client streaming text body: each message base64-encoded (and padded)
    on its own, then concatenated."""
    c = H1(web.port)
    try:
        parts = [base64.b64encode(frame(m)) for m in (b"a", b"bb", b"ccc", b"dddd")]
        assert any(p.endswith(b"=") for p in parts)
        c.request("/test.Echo/ClientStream", b"".join(parts), [("content-type", "application/grpc-web-text")])
        status, h, body = c.read_response()
    finally:
        c.close()
    msgs, trailers = parse_frames(b64_segments(body))
    assert json.loads(msgs[0]) == {"messages": 4, "bytes": 10}
    assert trailers["grpc-status"] == "0"


def test_trailers_only_error_puts_the_status_in_the_headers(web):
    status, h, body = one_request(web.port, "/test.Echo/Unary", base64.b64encode(frame(b"x")),
                                  [("content-type", "application/grpc-web-text"), ("x-fail-on", "b1")])
    assert status == 200
    assert h["grpc-status"] == "14" and h["grpc-message"] == "b1 is failing on purpose"
    assert h["content-type"] == "application/grpc-web-text"
    assert body == b""


def test_error_after_headers_comes_in_the_trailer_frame(web):
    message = "caf\u00e9 100%"
    status, h, msgs, trailers = web_call(web.port, "/test.Echo/Unary", message.encode(), True,
                                         [("x-fail-code", "NOT_FOUND")])
    assert msgs == [] and trailers["grpc-status"] == "5"
    assert trailers["grpc-message"] == "caf%C3%A9 100%25"


def test_server_stream_reaches_the_client_incrementally(backends, web):
    """The first message arrives while the backend still holds the stream open."""
    c = H1(web.port)
    try:
        req = json.dumps({"count": 3, "size": 8, "hold": True, "id": "web-incr"}).encode()
        c.request("/test.Echo/ServerStream", base64.b64encode(frame(req)),
                  [("content-type", "application/grpc-web-text")])
        status, h = c.read_head()
        assert status == 200
        first = b""
        while len(b64_segments(first)) < 13:
            first += c.read_chunk()
        assert b64_segments(first)[:13] == frame(b"00000000")
    finally:
        c.close()  # the browser goes away: the backend's stream is cancelled
    assert wait_for(lambda: "web-incr" in backends[0].events()["cancelled"])


def test_deadline_from_the_browser_is_enforced(web, backends):
    """The grpcio backend keeps the grpc-timeout grelay sends it, so its
    DEADLINE_EXCEEDED and grelay's race at the deadline (a review measured
    the backend's first in 2 of 40): either is the deadline reaching the
    gRPC-Web client. grelay's own, against a backend that keeps none, is
    test_deadlines.py's test_held_unary_gets_deadline_exceeded_from_grelay."""
    status, h, body = one_request(web.port, "/test.Echo/Unary", base64.b64encode(frame(b"x")),
                                  [("content-type", "application/grpc-web-text"), ("grpc-timeout", "300m"), ("x-hold", "web-dl")])
    assert h["grpc-status"] == "4", h
    assert deadline_message(h["grpc-message"]), h
    assert 0 < backends[0].events()["held"]["web-dl"] <= 0.3  # the client's deadline, passed on


def test_grelay_enforces_the_browsers_deadline_on_a_backend_that_keeps_none(raw_backend, grelay_factory):
    """h2_raw_server's Hold never answers, whatever grpc-timeout says: only
    grelay can end the gRPC-Web call, with its own status."""
    port = free_port()
    grelay_factory(web_config(port, [raw_backend.addr]), port)
    status, h, body = one_request(port, "/raw.Svc/Hold", base64.b64encode(frame(b"x")),
                                  [("content-type", "application/grpc-web-text"), ("grpc-timeout", "300m")])
    assert status == 200 and h["grpc-status"] == "4", h
    assert "deadline exceeded at grelay" in h["grpc-message"], h


def test_deadline_cuts_a_server_stream_with_a_trailer_frame(web):
    c = H1(web.port)
    try:
        req = json.dumps({"count": 3, "size": 8, "hold": True, "id": "web-dl-stream"}).encode()
        c.request("/test.Echo/ServerStream", frame(req), [("content-type", "application/grpc-web"),
                                                         ("grpc-timeout", "400m")])
        status, h, body = c.read_response()
    finally:
        c.close()
    msgs, trailers = parse_frames(body)
    assert msgs == [b"00000000"] and trailers["grpc-status"] == "4"


def test_large_response_in_text_mode(web):
    payload = bytes(range(256)) * 4096  # 1 MiB
    status, _, msgs, trailers = web_call(web.port, "/test.Echo/Unary", payload, True)
    assert msgs == [payload] and trailers["grpc-status"] == "0"


def test_several_requests_on_one_keep_alive_connection(web):
    c = H1(web.port)
    try:
        for i in range(5):
            c.request("/test.Echo/Unary", frame(b"n%d" % i), [("content-type", "application/grpc-web")])
            status, h, body = c.read_response()
            assert status == 200 and "connection" not in h
            assert parse_frames(body)[0] == [b"n%d" % i]
        c.request("/test.Echo/Unary", frame(b"last"), [("content-type", "application/grpc-web"),
                                                      ("connection", "close")])
        status, h, body = c.read_response()
        assert h["connection"] == "close" and parse_frames(body)[0] == [b"last"]
        assert c.sock.recv(100) == b""  # grelay closed it
    finally:
        c.close()


def test_pipelined_requests_are_answered_in_order(web):
    c = H1(web.port)
    try:
        raw = b""
        for i in range(3):
            body = frame(b"p%d" % i)
            raw += (b"POST /test.Echo/Unary HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web\r\n"
                    b"content-length: %d\r\n\r\n" % len(body)) + body
        c.send(raw)
        for i in range(3):
            status, h, body = c.read_response()
            assert parse_frames(body)[0] == [b"p%d" % i]
    finally:
        c.close()


def test_grpc_web_over_http2(web):
    s, c = raw_h2(web.port)
    try:
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                           (":path", "/test.Echo/Unary"), ("content-type", "application/grpc-web-text"),
                           ("origin", "https://app.example.com")])
        c.send_data(1, base64.b64encode(frame(b"over h2")), end_stream=True)
        s.sendall(c.data_to_send())
        out = read_until_closed(s, c, 1)
    finally:
        s.close()
    assert out["headers"][b"content-type"] == b"application/grpc-web-text"
    assert out["headers"][b"access-control-allow-origin"] == b"https://app.example.com"
    assert out["trailers"] is None  # no HTTP/2 trailers: the status is in the body
    msgs, trailers = parse_frames(b64_segments(out["data"]))
    assert msgs == [b"over h2"] and trailers["grpc-status"] == "0"


def test_native_grpc_shares_the_port(web):
    with grpc.insecure_channel(web.addr) as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"native", timeout=10) == b"native"


# ---- CORS ----

def preflight(port, origin, path="/test.Echo/Unary"):
    return one_request(port, path, b"", [("origin", origin), ("access-control-request-method", "POST"),
                                         ("access-control-request-headers", "content-type,x-grpc-web,x-custom-req")],
                       method="OPTIONS")


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://app.example.com"])
def test_preflight_grants_allowed_origins(web, origin):
    status, h, body = preflight(web.port, origin)
    assert status == 200
    assert h["access-control-allow-origin"] == origin
    assert "POST" in h["access-control-allow-methods"]
    allowed = h["access-control-allow-headers"].split(",")
    for name in ("x-grpc-web", "x-user-agent", "grpc-timeout", "content-type", "x-custom-req"):
        assert name in allowed
    assert h["access-control-max-age"] == "600"


@pytest.mark.parametrize("origin", ["http://evil.test", "https://example.com", "https://a.b.example.com.evil",
                                    "http://localhost:3001"])
def test_preflight_refuses_other_origins(web, origin):
    status, h, body = preflight(web.port, origin)
    assert status == 403
    assert not any(k.startswith("access-control-") for k in h)


def test_actual_response_grants_and_exposes(web):
    _, h, _, _ = web_call(web.port, "/test.Echo/Unary", b"x", headers=[("origin", "https://app.example.com")])
    assert h["access-control-allow-origin"] == "https://app.example.com"
    exposed = h["access-control-expose-headers"].split(",")
    assert {"grpc-status", "grpc-message", "x-custom-resp"} <= set(exposed)
    _, h, _, _ = web_call(web.port, "/test.Echo/Unary", b"x", headers=[("origin", "http://evil.test")])
    assert not any(k.startswith("access-control-") for k in h)


def test_error_answers_carry_cors_too(web):
    status, h, body = one_request(web.port, "/nowhere.Svc/M", frame(b""),
                                  [("content-type", "application/grpc-web"), ("origin", "http://localhost:3000")])
    assert h["grpc-status"] == "12"
    assert h["access-control-allow-origin"] == "http://localhost:3000"


def test_route_cors_overrides_the_virtual_hosts(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(web_config(port, [backends[0].addr],
                                  route_extra={"cors": {"allow_origins": ["https://only.test"]}}), port)
    assert preflight(port, "https://only.test")[0] == 200
    assert preflight(port, "http://localhost:3000")[0] == 403


# ---- bad input ----

def test_broken_base64_is_a_clear_error(web):
    status, h, body = one_request(web.port, "/test.Echo/Unary", b"AAAA!!!!",
                                  [("content-type", "application/grpc-web-text")])
    assert h["grpc-status"] == "13" and "base64" in h["grpc-message"]


def test_frame_length_beyond_the_limit(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(web_config(port, [backends[0].addr], grpc_web_max_request="64KiB"), port)
    c = H1(port)
    try:
        # declares a 1 MiB message, sends a few bytes of it
        c.request("/test.Echo/Unary", b"\x00\x00\x10\x00\x00" + b"x" * 10, [("content-type", "application/grpc-web")])
        status, h, body = c.read_response()
    finally:
        c.close()
    assert h["grpc-status"] == "8" and "65536" in h["grpc-message"]


def test_body_larger_than_allowed(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(web_config(port, [backends[0].addr], grpc_web_max_request="64KiB"), port)
    c = H1(port)
    try:
        body = b"".join(frame(b"y" * 30000) for _ in range(4))  # every message fits, the body does not
        c.request("/test.Echo/ClientStream", body, [("content-type", "application/grpc-web")])
        status, h, _ = c.read_response()
    finally:
        c.close()
    assert h["grpc-status"] == "8"


def test_malformed_http1_request_gets_400_and_a_close(web):
    c = H1(web.port)
    try:
        c.send(b"POST /test.Echo/Unary HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n")
        status, h, body = c.read_response()
        assert status == 400 and h["connection"] == "close"
        assert b"malformed HTTP/1.1 request" in body
        assert c.sock.recv(100) == b""
    finally:
        c.close()
    assert web_call(web.port, "/test.Echo/Unary", b"still serving")[2] == [b"still serving"]


def test_plain_http1_is_not_grpc(web):
    status, h, body = one_request(web.port, "/test.Echo/Unary", frame(b"x"),
                                  [("content-type", "application/grpc")])
    assert status == 415 and b"gRPC-Web" in body


def test_without_grpc_web_a_listener_speaks_only_http2(backends, grelay_factory):
    port = free_port()
    grelay_factory(simple_config(port, [backends[0].addr]), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"POST /test.Echo/Unary HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        assert not data.startswith(b"HTTP/1.1 200")
    finally:
        s.close()
