"""grelay checks client requests itself (include/grelay/h2_check.h, the
request side): the client nghttp2 session runs without HTTP messaging. The
unit suite test_h2_check_req compares every rule with nghttp2's own, case by
case; this test checks the wiring through the real binary: a malformed
request, sent with hand-built frames on a raw socket (no HTTP/2 library sends
one), gets RST_STREAM PROTOCOL_ERROR as nghttp2 would have answered it, never
reaches the backend (a real grpcio server, which counts its calls), costs
the connection nothing more, and the next call on the same connection is
served. A body that breaks its content-length mid-call is cut, and the call
upstream cancelled."""
import struct

import pytest

from harness import Backend, free_port, simple_config
from test_h2_abuse import (DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PROTOCOL_ERROR, RST_STREAM, Raw, frame)

GOOD = [(":method", "POST"), (":scheme", "http"), (":path", "/test.Echo/Unary"), (":authority", "x"),
        ("content-type", "application/grpc"), ("te", "trailers")]
MSG = b"\0\0\0\0\5hello"


def without(name):
    return [f for f in GOOD if f[0] != name]


# (what, the request's header list)
HEADS = [
    ("an upper-case name", GOOD + [("X-Upper", "1")]),
    ("a connection-specific field", GOOD + [("connection", "close")]),
    ("te other than trailers", [f for f in GOOD if f[0] != "te"] + [("te", "gzip")]),
    ("no :scheme", without(":scheme")),
    ("no :path", without(":path")),
    ("no :authority or host", without(":authority")),
    ("a pseudo header after a regular field", without(":method") + [(":method", "POST")]),
    ("a second :path", GOOD[:3] + [(":path", "/x")] + GOOD[3:]),
    ("an unknown pseudo header", [(":protocol", "websocket")] + GOOD),
    ("a LF in a value", GOOD + [("x-a", "a\nb")]),
    ("edge whitespace in a value", GOOD + [("x-a", "a ")]),
    ("a space in :path", [(":path", "/a b") if f[0] == ":path" else f for f in GOOD]),
    ("a bad content-length", GOOD + [("content-length", "12x")]),
]


@pytest.fixture
def target(grelay_factory):
    b = Backend("b")
    try:
        port = free_port()
        yield grelay_factory(simple_config(port, [b.addr], workers=1), port), b
    finally:
        b.stop()


def answer(r, sid, seconds=5):
    """What came back on stream sid: ('reset', code), ('answered', grpc-status
    trailer block seen) or ('goaway', code); None if nothing did."""
    for f in r.frames(seconds):
        if f is None:
            return ("closed", None)
        ftype, flags, fsid, payload = f
        if ftype == GOAWAY:
            return ("goaway", struct.unpack(">I", payload[4:8])[0])
        if fsid != sid:
            continue
        if ftype == RST_STREAM:
            return ("reset", struct.unpack(">I", payload)[0])
        if ftype == HEADERS and flags & END_STREAM:
            return ("answered", r.dec.decode(payload))
        if ftype == HEADERS:
            r.dec.decode(payload)
    return None


def raw(g):
    import hpack
    r = Raw(g.addr)
    r.dec = hpack.Decoder()
    return r


def good_call(r, sid):
    r.send(frame(HEADERS, END_HEADERS, sid, r.enc.encode(GOOD)) + frame(DATA, END_STREAM, sid, MSG))
    got = answer(r, sid)
    assert got is not None and got[0] == "answered", got
    assert ("grpc-status", "0") in got[1], got


@pytest.mark.parametrize("what,head", HEADS, ids=[h[0] for h in HEADS])
def test_a_malformed_request_head_is_reset_and_never_goes_upstream(target, what, head):
    g, b = target
    r = raw(g)
    try:
        r.send(frame(HEADERS, END_HEADERS, 1, r.enc.encode(head)) + frame(DATA, END_STREAM, 1, MSG))
        assert answer(r, 1) == ("reset", PROTOCOL_ERROR), what
        good_call(r, 3)  # the same connection serves the next call
    finally:
        r.close()
    assert b.events()["calls"] == 1, "only the good call reached the backend"


@pytest.mark.parametrize("what,cl,bodies,trailers", [
    ("DATA past the content-length", "5", [MSG], None),
    ("END_STREAM short of the content-length", "20", [MSG], None),
    ("trailers without END_STREAM", None, [MSG], [("x-t", "1")]),
    ("a pseudo header in trailers", None, [MSG], [(":path", "/x")]),
])
def test_a_body_or_trailers_that_break_the_rules_cut_the_call(target, what, cl, bodies, trailers):
    g, b = target
    r = raw(g)
    try:
        head = GOOD + ([("content-length", cl)] if cl else [])
        out = frame(HEADERS, END_HEADERS, 1, r.enc.encode(head))
        for i, body in enumerate(bodies):
            last = i + 1 == len(bodies) and trailers is None
            out += frame(DATA, END_STREAM if last else 0, 1, body)
        if trailers is not None:
            end = END_STREAM if trailers[0][0].startswith(":") else 0
            out += frame(HEADERS, END_HEADERS | end, 1, r.enc.encode(trailers))
        r.send(out)
        assert answer(r, 1) == ("reset", PROTOCOL_ERROR), what
        good_call(r, 3)
    finally:
        r.close()


def test_a_good_content_length_and_host_only_are_served(target):
    g, b = target
    r = raw(g)
    try:
        head = without(":authority") + [("host", "x"), ("content-length", str(len(MSG)))]
        r.send(frame(HEADERS, END_HEADERS, 1, r.enc.encode(head)) + frame(DATA, END_STREAM, 1, MSG))
        got = answer(r, 1)
        assert got is not None and got[0] == "answered" and ("grpc-status", "0") in got[1], got
    finally:
        r.close()
    assert b.events()["calls"] == 1
