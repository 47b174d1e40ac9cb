"""grelay checks the responses of its backends itself (include/grelay/h2_check.h):
the upstream nghttp2 session runs without HTTP messaging. A raw HTTP/2
backend here answers each call as its path says, with frames and HPACK bytes
written by hand (python h2 will not send a malformed response). Each
malformed answer must reach the client as a clean gRPC error, and the backend
sees its stream reset with PROTOCOL_ERROR, exactly as nghttp2 1.52's own
checks answered (the same cases pass against a grelay built before, but for
its log line); a CR or LF in a field never reaches an HTTP/1.1 client."""
import select
import struct
import time

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from grpcweb_client import H1, frame as web_frame, parse_frames
from h2client import H2Listener
from harness import Grelay, free_port, simple_config

END_STREAM, END_HEADERS = 0x1, 0x4
PROTOCOL_ERROR = 1


def lit(name, value):
    """A literal field without indexing (RFC 7541 6.2.2), no Huffman: the
    backend's HPACK encoder keeps no state grelay could disagree with."""
    name, value = (x.encode() if isinstance(x, str) else x for x in (name, value))
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def headers(sid, block, end_stream=False):
    return frame(0x1, END_HEADERS | (END_STREAM if end_stream else 0), sid, block)


def data(sid, payload, end_stream=False):
    return frame(0x0, END_STREAM if end_stream else 0, sid, payload)


MSG = b"\x00\x00\x00\x00\x02ok"  # a gRPC message of 2 bytes
HEAD = lit(":status", "200") + lit("content-type", "application/grpc")
OK_TRAILERS = lit("grpc-status", "0")


def answer(head_block, trailers=OK_TRAILERS, body=MSG, pre=b""):
    """pre, the response headers, body as one DATA frame, trailers with END_STREAM."""
    return lambda sid: (pre + headers(sid, head_block) + (data(sid, body) if body else b"") +
                        headers(sid, trailers, end_stream=True))


# Malformed answers: each must fail the call and reset the upstream stream.
MALFORMED = {
    "upper_case_name": answer(HEAD + lit("X-Upper", "1")),
    "bad_char_in_pseudo_name": answer(lit(":st tus", "200") + lit("content-type", "application/grpc")),
    "pseudo_after_regular": answer(lit("content-type", "application/grpc") + lit(":status", "200")),
    "no_status": answer(lit("content-type", "application/grpc")),
    "status_two_digits": answer(lit(":status", "20") + lit("content-type", "application/grpc")),
    "status_with_space": answer(lit(":status", "200 ") + lit("content-type", "application/grpc")),
    "status_twice": answer(lit(":status", "200") + HEAD),
    "request_pseudo_in_response": answer(lit(":status", "200") + lit(":path", "/") +
                                         lit("content-type", "application/grpc")),
    "pseudo_in_trailers": answer(HEAD, trailers=lit(":status", "200") + OK_TRAILERS),
    "connection": answer(HEAD + lit("connection", "close")),
    "keep_alive": answer(HEAD + lit("keep-alive", "timeout=5")),
    "proxy_connection": answer(HEAD + lit("proxy-connection", "close")),
    "transfer_encoding": answer(HEAD + lit("transfer-encoding", "chunked")),
    "upgrade": answer(HEAD + lit("upgrade", "h2c")),
    "te_not_trailers": answer(HEAD + lit("te", "gzip")),
    "content_length_exceeded": answer(HEAD + lit("content-length", "3")),
    "content_length_short": answer(HEAD + lit("content-length", "100")),
    "content_length_twice": answer(HEAD + lit("content-length", "7") + lit("content-length", "7")),
    "content_length_not_a_number": answer(HEAD + lit("content-length", "7a")),
    "trailers_without_end_stream": lambda sid: (headers(sid, HEAD) + data(sid, MSG) + headers(sid, OK_TRAILERS)),
    "data_after_1xx": lambda sid: headers(sid, lit(":status", "100")) + data(sid, MSG),
    "end_stream_on_1xx": lambda sid: headers(sid, lit(":status", "103"), end_stream=True),
    "status_101": answer(lit(":status", "101")),
    # Invalid characters: nghttp2 1.52 (no on_invalid_header_callback) resets
    # the stream for a regular field too, not only a pseudo header.
    "cr_lf_in_value": answer(HEAD + lit("x-split", "a\r\nset-cookie: evil=1")),
    "lf_in_trailer_value": answer(HEAD, trailers=OK_TRAILERS + lit("x-trailer", "b\nc")),
    "nul_in_value": answer(HEAD + lit("x-nul", b"a\x00b")),
    "del_in_value": answer(HEAD + lit("x-del", b"a\x7fb")),
    "space_first_in_value": answer(HEAD + lit("x-edge", " padded")),
    "tab_last_in_value": answer(HEAD + lit("x-edge", "v\t")),
    "space_in_name": answer(HEAD + lit("x bad-name", "1")),
    "colon_in_name": answer(HEAD + lit("x:y", "1")),
}

# Answers that pass.
GOOD = {
    "plain": answer(HEAD),
    "inner_space_tab_and_high_bytes": answer(HEAD + lit("x-fine", b"a b\tc \xc3\xa9")),
    "content_length_exact": answer(HEAD + lit("content-length", str(len(MSG)))),
    "te_trailers": answer(HEAD + lit("te", "Trailers")),
}
GOOD["after_two_1xx"] = lambda sid: answer(HEAD, pre=headers(sid, lit(":status", "100")) +
                                            headers(sid, lit(":status", "103")))(sid)


class RawBackend(H2Listener):
    """A raw HTTP/2 server: python h2 reads the requests (and answers SETTINGS
    and PINGs); each request's answer is MALFORMED[case] or GOOD[case], the
    case being the last segment of its :path. Records the codes of the
    streams grelay reset."""

    def __init__(self):
        super().__init__()
        self.resets = {}  # case -> error codes of grelay's RST_STREAMs
        self.start()

    def serve(self, sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        cases = {}  # stream id -> case
        try:
            while not self.stopping:
                readable, _, _ = select.select([sock], [], [], 0.5)
                if not readable:
                    continue
                buf = sock.recv(65536)
                if not buf:
                    return
                for ev in conn.receive_data(buf):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers)[b":path"].decode()
                        cases[ev.stream_id] = path.rsplit("/", 1)[1]
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        sock.sendall(conn.data_to_send())
                        case = cases[ev.stream_id]
                        sock.sendall({**MALFORMED, **GOOD}[case](ev.stream_id))
                    elif isinstance(ev, h2.events.StreamReset):
                        with self.lock:
                            self.resets.setdefault(cases.get(ev.stream_id), []).append(ev.error_code)
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            sock.close()

    def wait_reset(self, case, seconds=5):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if case in self.resets:
                    return self.resets[case]
            time.sleep(0.02)
        return None


@pytest.fixture(scope="module")
def setup():
    b = RawBackend()
    port = free_port()
    routes = [{"match": {"prefix": "/test."}, "cluster": "backend"}]
    g = Grelay(simple_config(port, [b.addr], routes=routes, listener_extra={"grpc_web": True}), port)
    try:
        with grpc.insecure_channel(g.addr) as ch:
            yield g, b, ch
    finally:
        b.stop()
        g.stop()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_response_fails_the_call_cleanly(setup, case):
    g, b, ch = setup
    with pytest.raises(grpc.RpcError) as e:
        ch.unary_unary("/test.Bad/" + case)(b"x", timeout=10)
    # What nghttp2's own checks answered (the stream reset with PROTOCOL_ERROR).
    assert e.value.code() == grpc.StatusCode.INTERNAL, e.value
    assert e.value.details() == "upstream reset the stream: PROTOCOL_ERROR"
    assert b.wait_reset(case) == [PROTOCOL_ERROR]
    assert "malformed response" in g.log()


@pytest.mark.parametrize("case", sorted(GOOD))
def test_a_well_formed_response_passes(setup, case):
    g, b, ch = setup
    reply, call = ch.unary_unary("/test.Good/" + case).with_call(b"x", timeout=10)
    assert reply == b"ok"
    if case == "inner_space_tab_and_high_bytes":
        assert dict(call.initial_metadata()).get("x-fine") == "a b\tc \xc3\xa9".encode("latin-1").decode("utf-8")
    assert b.wait_reset(case, seconds=0) is None


def test_no_cr_or_lf_reaches_an_http1_client(setup):
    """gRPC-Web over HTTP/1.1: a value with CR LF forwarded as it came would
    write a header line of the backend's choosing (response splitting)."""
    g, b, ch = setup
    c = H1(g.port)
    try:
        c.request("/test.Bad/cr_lf_in_value", web_frame(b"x"), [("content-type", "application/grpc-web+proto")])
        status, hdrs, raw = c.read_response()
    finally:
        c.close()
    assert status == 200, (status, hdrs)  # gRPC-Web answers the error trailers-only, in its headers
    assert hdrs.get("grpc-status") == "13", hdrs
    assert "set-cookie" not in hdrs and "x-split" not in hdrs, hdrs
    assert parse_frames(raw) == ([], None)
    assert b"evil" not in raw
