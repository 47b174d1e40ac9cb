"""The HTTP/1.1 (gRPC-Web) front end is strict about framing: each classic
request-smuggling probe gets 400 (505 for a version it does not serve) and
the connection is closed, while valid gRPC-Web calls keep working. Also
Expect: 100-continue, and the fields a Connection header lists."""
import socket
import time

import pytest

from grpcweb_client import H1, frame, parse_frames, web_call
from harness import free_port, simple_config

PATH = "/test.Echo/Unary"
BODY = frame(b"smuggle")
START = b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: grelay.test\r\ncontent-type: application/grpc-web+proto\r\n"
CL = b"Content-Length: %d\r\n" % len(BODY)


def chunked(body=BODY):
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


# name -> (request bytes, status grelay answers). Every one of them is
# accepted by Debian's http-parser 2.9 alone, or read differently by it
# and by other parsers; see docs/limits.md for the table.
PROBES = {
    "cl_te": (START + CL + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(), 400),
    "te_cl": (START + b"Transfer-Encoding: chunked\r\n" + CL + b"\r\n" + chunked(), 400),
    "two_cl_differ": (START + CL + b"Content-Length: 3\r\n\r\n" + BODY, 400),
    "two_cl_equal": (START + CL + CL + b"\r\n" + BODY, 400),
    "cl_list": (START + b"Content-Length: %d, %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY, 400),
    "cl_plus": (START + b"Content-Length: +%d\r\n\r\n" % len(BODY) + BODY, 400),
    "te_xchunked": (START + b"Transfer-Encoding: xchunked\r\n\r\n" + chunked(), 400),
    "te_gzip_chunked": (START + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked(), 400),
    "te_twice": (START + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(), 400),
    "te_space_before_colon": (START + b"Transfer-Encoding : chunked\r\n\r\n" + chunked(), 400),
    "cl_space_before_colon": (START + b"Content-Length : %d\r\n\r\n" % len(BODY) + BODY, 400),
    "te_obs_fold": (START + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + chunked(), 400),
    "obs_fold": (START + b"X-A: b\r\n c\r\n" + CL + b"\r\n" + BODY, 400),
    "space_before_first_field": (b"POST " + PATH.encode() + b" HTTP/1.1\r\n Host: grelay.test\r\n" + CL + b"\r\n"
                                 + BODY, 400),
    "bare_lf": (START.replace(b"\r\n", b"\n") + CL.replace(b"\r\n", b"\n") + b"\n" + BODY, 400),
    "bare_lf_one_line": (START + b"X-A: b\n" + CL + b"\r\n" + BODY, 400),
    "bare_cr": (START + b"X-A: b\rc\r\n" + CL + b"\r\n" + BODY, 400),
    "nul_in_value": (START + b"X-A: b\x00c\r\n" + CL + b"\r\n" + BODY, 400),
    "ctl_in_value": (START + b"X-A: b\x01c\r\n" + CL + b"\r\n" + BODY, 400),
    "space_in_name": (START + b"X A: b\r\n" + CL + b"\r\n" + BODY, 400),
    "two_spaces_request_line": (START.replace(b"POST ", b"POST  ", 1) + CL + b"\r\n" + BODY, 400),
    "space_after_version": (START.replace(b"HTTP/1.1", b"HTTP/1.1 ", 1) + CL + b"\r\n" + BODY, 400),
    "absolute_form": (START.replace(b"POST /", b"POST http://grelay.test/", 1) + CL + b"\r\n" + BODY, 400),
    "http10_chunked": (START.replace(b"HTTP/1.1", b"HTTP/1.0", 1) + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(),
                       400),
    "http12": (START.replace(b"HTTP/1.1", b"HTTP/1.2", 1) + CL + b"\r\n" + BODY, 505),
    "two_hosts": (START + b"Host: other.test\r\n" + CL + b"\r\n" + BODY, 400),
    "chunk_size_junk": (START + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY + b"\r\n0\r\n\r\n", 400),
    "chunk_size_space": (START + b"Transfer-Encoding: chunked\r\n\r\n%x \r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
                         400),
    "chunk_size_overflow": (START + b"Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\n" + BODY, 400),
    "chunk_without_crlf": (START + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(BODY) + BODY + b"XX0\r\n\r\n",
                           400),
    "trailer_obs_fold": (START + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(BODY) + BODY +
                         b"\r\n0\r\nX-T: a\r\n b\r\n\r\n", 400),
}


@pytest.fixture
def web(backends, grelay_factory):
    port = free_port()
    cfg = simple_config(port, [backends[0].addr], routes=[{"match": {"prefix": "/"}, "cluster": "backend"}],
                        listener_extra={"grpc_web": True})
    return grelay_factory(cfg, port)


def send_and_read_to_close(port, raw, seconds=5):
    """Sends raw on a fresh connection; everything grelay answers until it
    closes. Fails (socket.timeout) if grelay keeps the connection open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    try:
        s.sendall(raw)
        out = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                return out
            out += data
        raise AssertionError("grelay did not close the connection; got %r" % out[:200])
    finally:
        s.close()


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_is_refused_and_closed(web, name):
    raw, status = PROBES[name]
    out = send_and_read_to_close(web.port, raw)
    head, body = out.split(b"\r\n\r\n", 1)
    head = head.decode("latin-1").lower()
    assert head.startswith("http/1.1 %d " % status), (name, out[:300])
    assert "\r\nconnection: close" in head
    # One answer, and nothing after it: no part of the request went on.
    assert len(body) == int(head.split("content-length: ")[1].split("\r\n")[0]), out


def test_valid_calls_still_work_between_probes(web):
    for name in sorted(PROBES)[:6]:
        send_and_read_to_close(web.port, PROBES[name][0])
        status, h, msgs, trailers = web_call(web.port, PATH, b"still fine", headers=[("x-trace", name)])
        assert (status, msgs, trailers["grpc-status"], h["x-trace"]) == (200, [b"still fine"], "0", name)


@pytest.mark.parametrize("raw", [
    START + b"Transfer-Encoding:\tCHUNKED\r\n\r\n" + chunked(),  # tab is OWS; coding names ignore case
    START + b"Content-Length: 00%d \r\n\r\n" % len(BODY) + BODY,  # leading zeros, trailing OWS
    START + b"Transfer-Encoding: chunked\r\n\r\n%x;ext=1\r\n" % len(BODY) + BODY + b"\r\n0\r\nX-T: a\r\n\r\n",
    b"\r\n" + START + CL + b"\r\n" + BODY,  # an empty line before the request (RFC 9112 2.2)
])
def test_lawful_variants_are_served(web, raw):
    c = H1(web.port)
    try:
        c.send(raw)
        status, h, body = c.read_response()
    finally:
        c.close()
    msgs, trailers = parse_frames(body)
    assert (status, msgs, trailers["grpc-status"]) == (200, [b"smuggle"], "0")


def test_pipelined_probe_after_a_good_request(web):
    """The check restarts at each request of a keep-alive connection: a good
    request then a smuggling one in the same segment: 200, then 400, closed."""
    good = START + CL + b"\r\n" + BODY
    out = send_and_read_to_close(web.port, good + PROBES["te_space_before_colon"][0])
    assert out.startswith(b"HTTP/1.1 200 ")
    assert b"\r\n\r\nHTTP/1.1 400 " in out or b"0\r\n\r\nHTTP/1.1 400 " in out


def test_expect_100_continue(web):
    c = H1(web.port)
    try:
        c.send(START + b"Expect: 100-continue\r\n" + CL + b"\r\n")
        status, _ = c.read_head()
        assert status == 100  # before the body was sent
        c.send(BODY)
        status, h, body = c.read_response()
        msgs, trailers = parse_frames(body)
        assert (status, msgs, trailers["grpc-status"]) == (200, [b"smuggle"], "0")
        assert "expect" not in h
        # The connection goes on.
        c.request(PATH, frame(b"again"), [("content-type", "application/grpc-web+proto")])
        status, _, body = c.read_response()
        assert (status, parse_frames(body)[0]) == (200, [b"again"])
    finally:
        c.close()


def test_expect_100_continue_answered_locally_gets_no_100(web):
    """A request grelay answers itself (no gRPC-Web content type: 415) gets
    the answer at once and no 100; the body it never asked for is not read."""
    raw = START.replace(b"application/grpc-web+proto", b"text/plain") + b"Expect: 100-continue\r\n" + CL + b"\r\n"
    out = send_and_read_to_close(web.port, raw)
    assert out.startswith(b"HTTP/1.1 415 ")
    assert b"100 Continue" not in out


def test_other_expectation_gets_417(web):
    out = send_and_read_to_close(web.port, START + b"Expect: something-else\r\n" + CL + b"\r\n" + BODY)
    assert out.startswith(b"HTTP/1.1 417 ")
    assert b"\r\nconnection: close\r\n" in out.lower()


def test_connection_list_is_bounded(web):
    listed = ", ".join("x-f%d" % i for i in range(200))  # past 1 KiB
    out = send_and_read_to_close(web.port, START + b"Connection: " + listed.encode() + b"\r\n" + CL + b"\r\n" + BODY)
    assert out.startswith(b"HTTP/1.1 400 ")


def test_connection_listed_fields_are_not_forwarded(web):
    """The echo backend returns every x-* field it receives as response
    metadata: the ones the Connection header lists never reach it."""
    status, h, msgs, trailers = web_call(web.port, PATH, b"hop", headers=[
        ("x-secret", "s1"), ("x-keep", "k1"), ("x-other", "o1"), ("connection", "keep-alive, X-Secret"),
        ("connection", "x-other")])
    assert (status, msgs, trailers["grpc-status"]) == (200, [b"hop"], "0")
    assert h["x-keep"] == "k1" and trailers["x-keep-t"] == "k1"
    assert "x-secret" not in h and "x-secret-t" not in trailers
    assert "x-other" not in h and "x-other-t" not in trailers
