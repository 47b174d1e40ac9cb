"""Review experiments (helper E): reset accounting of malformed requests,
and a malformed field inside a CONTINUATION keeping HPACK in step."""
import struct

from test_h2_abuse import (CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, GOAWAY, HEADERS,
                           PROTOCOL_ERROR, RST_STREAM, frame)
from test_request_validation import GOOD, MSG, answer, good_call, raw, target  # noqa: F401

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


def test_malformed_requests_below_the_budget_are_charged_once(target):
    """180 malformed heads in one write: 180 resets, no GOAWAY (budget 200:
    a double charge would end the connection at ~100)."""
    g, b = target
    r = raw(g)
    try:
        r.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, r.enc.encode(BAD)) for i in range(180)))
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
        r.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, r.enc.encode(BAD)) for i in range(300)))
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
    import time
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
    not start upstream (charge_reset clears start_due). A bare listener
    counts connections."""
    import socket
    import threading
    import time
    from harness import free_port, simple_config
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    lsock.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(lsock.accept()[0])
            except socket.timeout:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, ["127.0.0.1:%d" % lsock.getsockname()[1]], workers=1), port)
        r = raw(g)
        head = GOOD + [("content-length", "5")]
        r.send(frame(HEADERS, END_HEADERS, 1, r.enc.encode(head)) + frame(DATA, 0, 1, MSG))
        assert answer(r, 1) == ("reset", PROTOCOL_ERROR)
        time.sleep(0.3)
        assert not accepted, "a call reset within its read went upstream"
        r.close()
    finally:
        stop.set()
        t.join(2)
        for c in accepted:
            c.close()
        lsock.close()


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
