"""grelay checks client requests itself (include/grelay/h2_check.h, the
request side): the client nghttp2 session runs without HTTP messaging. The
unit suite test_h2_check_req compares every rule with nghttp2's own, case by
case; this test checks the wiring through the real binary: a malformed
request, sent with hand-built frames on a raw socket (no HTTP/2 library sends
one), gets RST_STREAM PROTOCOL_ERROR as nghttp2 would have answered it, never
reaches the backend (a real grpcio server, which counts its calls), costs
the connection nothing more, and the next call on the same connection is
served. A body that breaks its content-length mid-call is cut, and the call
upstream cancelled. Malformed requests are charged once each to the
connection's reset budget (below it the connection lives on, past it it
ends with ENHANCE_YOUR_CALM), a bad field in a CONTINUATION leaves HPACK in
step, and DATA dropped for a reset stream gives the connection window back."""
import struct
import time

import hpack
import pytest

from harness import Backend, CountingListener, free_port, simple_config
from test_h2_abuse import (CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, GOAWAY, HEADERS,
                           PROTOCOL_ERROR, RST_STREAM, Raw, frame)

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


# ---- The reset budget, CONTINUATION, content-length without END_STREAM, the window ----

BAD = GOOD + [("connection", "close")]


def resets(r, n, seconds=10):
    got, goaway = 0, None
    for f in r.frames(seconds):
        if f is None:
            break
        if f[0] == RST_STREAM and struct.unpack(">I", f[3])[0] == PROTOCOL_ERROR:
            got += 1
        if f[0] == GOAWAY:
            goaway = (struct.unpack(">I", f[3][:4])[0], struct.unpack(">I", f[3][4:8])[0])
            break
        if got == n:
            break
    return got, goaway


def send_bad_heads(r, n):
    """n malformed heads (a connection-specific field), streams 1, 3, ..., in one write."""
    r.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, r.enc.encode(BAD)) for i in range(n)))


def test_malformed_requests_below_the_budget_are_charged_once(target):
    """180 malformed heads in one write: 180 resets, no GOAWAY (budget 200:
    a double charge would end the connection at ~100)."""
    g, b = target
    r = raw(g)
    try:
        send_bad_heads(r, 180)
        got, goaway = resets(r, 180)
        assert goaway is None and got == 180, (got, goaway)
        good_call(r, 1 + 2 * 180)
    finally:
        r.close()
    assert b.events()["calls"] == 1


def test_malformed_requests_past_the_budget_end_the_connection(target):
    g, b = target
    r = raw(g)
    try:
        send_bad_heads(r, 300)
        got, goaway = resets(r, 10 ** 6)
        assert goaway is not None and goaway[1] == ENHANCE_YOUR_CALM, (got, goaway)
        assert goaway[0] < 2 * 260, goaway
    finally:
        r.close()
    assert "too many streams reset because of the client" in g.log()
    assert b.events()["calls"] == 0


def test_a_bad_field_in_a_continuation_keeps_hpack_in_step(target):
    """The bad field is in the CONTINUATION, followed by fields added to the
    dynamic table; the next request refers to them by index."""
    g, b = target
    r = raw(g)
    try:
        blk = r.enc.encode(GOOD + [("connection", "close"), ("x-after", "v1"), ("x-after2", "v2")])
        cut = len(r.enc.encode([])) + 10  # anywhere inside the block
        r.send(frame(HEADERS, END_STREAM, 1, blk[:cut]) + frame(CONTINUATION, 0, 1, blk[cut:-3]) +
               frame(CONTINUATION, END_HEADERS, 1, blk[-3:]))
        assert answer(r, 1) == ("reset", PROTOCOL_ERROR)
        nxt = r.enc.encode(GOOD + [("x-after", "v1"), ("x-after2", "v2")])
        assert len(nxt) < 12, "the encoder refers to the table"
        r.send(frame(HEADERS, END_HEADERS, 3, nxt) + frame(DATA, END_STREAM, 3, MSG))
        got = answer(r, 3)
        assert got is not None and got[0] == "answered" and ("grpc-status", "0") in got[1], got
    finally:
        r.close()
    assert b.events()["calls"] == 1


def test_data_past_the_content_length_cancels_the_call_upstream(target):
    """The docstring of test_request_validation.py: 'the call upstream cancelled'."""
    g, b = target
    r = raw(g)
    try:
        head = GOOD + [("content-length", str(len(MSG))), ("x-hold", "cl1")]
        r.send(frame(HEADERS, END_HEADERS, 1, r.enc.encode(head)) + frame(DATA, 0, 1, MSG))
        assert answer(r, 1, 1) is None  # the call is under way
        r.send(frame(DATA, END_STREAM, 1, b"x"))
        assert answer(r, 1) == ("reset", PROTOCOL_ERROR)
    finally:
        r.close()
    for _ in range(50):
        ev = b.events()
        if ev["cancelled"]:
            break
        time.sleep(0.1)
    print(ev)
    assert ev["calls"] == 1 and "cl1" in ev["cancelled"], ev


def test_data_past_the_content_length_without_end_stream_is_reset(target):
    """The DATA rule itself: a body longer than its content-length that has
    not ended (END_STREAM would catch it anyway)."""
    g, b = target
    r = raw(g)
    try:
        head = GOOD + [("content-length", "5"), ("x-hold", "cl2")]
        r.send(frame(HEADERS, END_HEADERS, 1, r.enc.encode(head)) + frame(DATA, 0, 1, MSG))
        assert answer(r, 1) == ("reset", PROTOCOL_ERROR)
        good_call(r, 3)
    finally:
        r.close()


def test_a_body_broken_within_the_read_of_its_head_never_goes_upstream(grelay_factory):
    """Head and a DATA past its content-length in one write: the call must
    not start upstream (malformed() clears start_due). A bare listener
    counts connections."""
    lst = CountingListener()
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [lst.addr], workers=1), port)
        r = raw(g)
        head = GOOD + [("content-length", "5")]
        r.send(frame(HEADERS, END_HEADERS, 1, r.enc.encode(head)) + frame(DATA, 0, 1, MSG))
        assert answer(r, 1) == ("reset", PROTOCOL_ERROR)
        time.sleep(0.3)
        assert not lst.accepted, "a call reset within its read went upstream"
        r.close()
    finally:
        lst.close()


def test_dropped_data_gives_the_connection_window_back(target):
    """80 streams each send 48 KiB past a content-length of 5 (3.8 MiB, the
    connection window being 1 MiB): what grelay drops must be given back, or
    the client overruns the window (GOAWAY FLOW_CONTROL_ERROR)."""
    g, b = target
    r = raw(g)
    try:
        head = GOOD + [("content-length", "5")]
        for i in range(80):
            sid = 1 + 2 * i
            r.send(frame(HEADERS, END_HEADERS, sid, r.enc.encode(head)) +
                   b"".join(frame(DATA, 0, sid, bytes(16384)) for _ in range(3)))
            assert answer(r, sid) == ("reset", PROTOCOL_ERROR), i
        good_call(r, 161)
    finally:
        r.close()
    assert b.events()["calls"] == 1
