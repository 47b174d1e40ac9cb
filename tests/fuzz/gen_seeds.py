#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_h1 and fuzz_h2_session
(tests/fuzz/corpus/h1/ and tests/fuzz/corpus/h2_session/).

Every seed starts with the driver's 5 header bytes (tests/fuzz/driver.h):
failmalloc countdown (2 bytes, little endian), split pattern, backend
behaviour nibbles, flags. What follows is what the client sends (for HTTP/2:
after the connection preface, which the driver sends).

Usage: tests/fuzz/gen_seeds.py   (from anywhere; rewrites the seed files)
"""
import base64
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# Backend behaviours (enum up_kind in driver.c).
NORMAL, BIG, STATUS, BIDI = 0, 4, 5, 6
REFUSE, RESET, UNAVAIL, HTTP503, CLOSE, GOAWAY, HANG, RST_DATA = 8, 9, 10, 11, 12, 13, 14, 15
# Flags.
WAIT, UP_FIRST, SMALL_LIMIT = 1, 2, 4


def header(fm=0, sticky=False, split=0, kinds=(NORMAL, NORMAL), flags=0):
    v = (fm & 0x7FFF) | (0x8000 if sticky else 0)
    return struct.pack("<HBBB", v, split, kinds[0] | kinds[1] << 4, flags)


def grpc_msg(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


# ---- HTTP/2 ----

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY_F, WINDOW_UPDATE = 0, 1, 2, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 1, 1, 4


def hpack_int(v, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if v < limit:
        return bytes([first | v])
    out = [first | limit]
    v -= limit
    while v >= 128:
        out.append(v % 128 + 128)
        v //= 128
    out.append(v)
    return bytes(out)


def hpack(headers):
    """Literal header fields without indexing, new names, no Huffman."""
    out = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v
    return out


def settings(*pairs, ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def req_headers(sid, path="/demo.Greeter/SayHello", ct="application/grpc", extra=(), end_stream=False,
                method="POST"):
    hs = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost:8080")]
    if ct:
        hs.append(("content-type", ct))
    hs += [("te", "trailers")] + list(extra)
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, hpack(hs))


def data(sid, payload, end_stream=False):
    return frame(DATA, END_STREAM if end_stream else 0, sid, payload)


def unary(sid, msg=b"hello", **kw):
    return req_headers(sid, **kw) + data(sid, grpc_msg(msg), end_stream=True)


H2_START = settings() + settings(ack=True)


def h2_seeds():
    s = {}
    s["unary"] = header() + H2_START + unary(1)
    s["unary_split"] = header(split=0x05) + H2_START + unary(1)
    s["unary_timeout"] = header() + H2_START + unary(1, extra=[("grpc-timeout", "5S"), ("x-user-id", "7")])
    s["two_unary_prefix_route"] = header() + H2_START + unary(1) + unary(3, path="/other.Svc/Call", msg=b"x" * 40)
    # Bidi-like: the backend answers at once and echoes every message; the
    # client's messages arrive in pieces, stream 3 runs beside it.
    s["bidi"] = (header(split=0x40 | 0x1F, kinds=(BIDI, BIDI)) + H2_START + req_headers(1, path="/demo.Greeter/Chat")
                 + data(1, grpc_msg(b"one")) + req_headers(3, path="/demo.Greeter/Chat")
                 + data(1, grpc_msg(b"two")) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 65536))
                 + data(3, grpc_msg(b"three"), end_stream=True) + data(1, grpc_msg(b"four"), end_stream=True))
    s["rst_stream"] = (header() + H2_START + req_headers(1) + data(1, grpc_msg(b"abc"))
                       + frame(RST_STREAM, 0, 1, struct.pack(">I", 8)) + unary(3))
    s["request_trailers"] = (header() + H2_START + req_headers(1) + data(1, grpc_msg(b"t"))
                             + frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack([("x-trailer", "yes")])))
    s["grpcweb_over_h2"] = header() + H2_START + unary(1, ct="application/grpc-web+proto",
                                                       extra=[("origin", "http://localhost:3000"),
                                                              ("x-grpc-web", "1")])
    s["preflight_h2"] = header() + H2_START + req_headers(
        1, method="OPTIONS", ct=None, end_stream=True,
        extra=[("origin", "http://localhost:3000"), ("access-control-request-method", "POST"),
               ("access-control-request-headers", "content-type,x-grpc-web")])
    # Small client window: grelay must wait for WINDOW_UPDATE to send the
    # backend's 5000-byte answer.
    s["flow_control"] = (header(kinds=(BIG, BIG)) + settings((4, 1000)) + settings(ack=True)
                         + frame(PING, 0, 0, b"12345678") + frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 16))
                         + unary(1) + unary(3)
                         + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 8000))
                         + frame(WINDOW_UPDATE, 0, 3, struct.pack(">I", 8000))
                         + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 16000)))
    s["up_refused_then_ok"] = header(kinds=(REFUSE, NORMAL)) + H2_START + unary(1)
    s["up_unavailable_retry"] = header(kinds=(UNAVAIL, NORMAL), flags=WAIT) + H2_START + unary(1)
    s["up_reset"] = header(kinds=(RESET, NORMAL)) + H2_START + unary(1)
    s["up_close"] = header(kinds=(CLOSE, NORMAL), flags=WAIT) + H2_START + unary(1)
    s["up_goaway"] = header(kinds=(GOAWAY, NORMAL)) + H2_START + unary(1)
    s["up_http503"] = header(kinds=(HTTP503, HTTP503)) + H2_START + unary(1, path="/other.Svc/Call")
    s["up_status"] = header(kinds=(STATUS, RST_DATA)) + H2_START + unary(1) + unary(3)
    s["deadline"] = header(kinds=(HANG, HANG), flags=WAIT) + H2_START + unary(1, extra=[("grpc-timeout", "1m")])
    s["up_leaves_first"] = header(kinds=(HANG, NORMAL), flags=UP_FIRST | WAIT) + H2_START + unary(1)
    s["small_upstream_limit"] = (header(flags=SMALL_LIMIT) + H2_START + unary(1) + unary(3) + unary(5)
                                 + unary(7) + unary(9) + unary(11))
    s["failmalloc_oneshot"] = header(fm=40) + H2_START + unary(1)
    s["failmalloc_sticky"] = header(fm=30, sticky=True) + H2_START + unary(1) + unary(3)
    return s


# ---- HTTP/1.1 ----

def h1_request(path="/demo.Greeter/SayHello", body=b"", ct="application/grpc-web+proto", extra=(),
               method="POST", chunked=False, version="1.1"):
    lines = [f"{method} {path} HTTP/{version}", "Host: localhost:8080"]
    if ct:
        lines.append(f"Content-Type: {ct}")
    lines += ["X-Grpc-Web: 1", "Origin: http://localhost:3000"] + list(extra)
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        half = len(body) // 2
        parts = [body[:half], body[half:]]
        enc = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts if p) + b"0\r\n\r\n"
    else:
        if method != "GET" and method != "OPTIONS" or body:
            lines.append(f"Content-Length: {len(body)}")
        enc = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + enc


def h1_seeds():
    s = {}
    msg = grpc_msg(b"hello")
    s["grpcweb_post"] = header() + h1_request(body=msg)
    s["grpcweb_post_split"] = header(split=0x80 | 0x03) + h1_request(body=msg)
    s["keepalive_two"] = header() + h1_request(body=msg) + h1_request(path="/other.Svc/Call", body=grpc_msg(b"2"))
    s["chunked"] = header() + h1_request(body=grpc_msg(b"chunked body"), chunked=True)
    s["grpcweb_text"] = header() + h1_request(body=base64.b64encode(msg), ct="application/grpc-web-text",
                                              extra=["Accept: application/grpc-web-text"])
    s["preflight"] = header() + h1_request(method="OPTIONS", ct=None,
                                           extra=["Access-Control-Request-Method: POST",
                                                  "Access-Control-Request-Headers: content-type,x-grpc-web"])
    s["not_grpcweb"] = header() + b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    s["malformed"] = header() + b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: zz\r\n\r\n"
    s["conn_close_http10"] = header() + h1_request(body=msg, version="1.0", extra=["Connection: close"])
    s["big_response"] = header(kinds=(BIG, BIG)) + h1_request(body=msg)
    s["timeout_header"] = header(kinds=(HANG, HANG), flags=WAIT) + h1_request(body=msg, extra=["grpc-timeout: 1m"])
    s["up_refused_then_ok"] = header(kinds=(REFUSE, NORMAL)) + h1_request(body=msg)
    s["up_unavailable_retry"] = header(kinds=(UNAVAIL, NORMAL), flags=WAIT) + h1_request(body=msg)
    s["up_close"] = header(kinds=(CLOSE, NORMAL), flags=WAIT) + h1_request(body=msg)
    s["up_http503"] = header(kinds=(HTTP503, HTTP503)) + h1_request(path="/other.Svc/Call", body=msg)
    s["up_bidi_rst"] = header(kinds=(RST_DATA, BIDI)) + h1_request(body=msg) + h1_request(body=msg)
    s["failmalloc_oneshot"] = header(fm=21) + h1_request(body=msg)
    s["failmalloc_sticky"] = header(fm=40, sticky=True) + h1_request(body=msg) + h1_request(body=msg)
    s.update(h1_probe_seeds(msg))
    return s


def h1_probe_seeds(msg):
    """Request-smuggling probes (tests/integration/test_h1_strict.py has the
    full list), each followed by a good request that must not be read, and
    the Expect and Connection handling."""
    good = h1_request(body=msg)
    start = h1_request(body=msg).split(b"Content-Length")[0]
    cl = b"Content-Length: %d\r\n" % len(msg)
    chunk = b"%x\r\n" % len(msg) + msg + b"\r\n0\r\n\r\n"
    probes = {
        "cl_te": start + cl + b"Transfer-Encoding: chunked\r\n\r\n" + chunk,
        "two_cl": start + cl + cl + b"\r\n" + msg,
        "te_space_colon": start + b"Transfer-Encoding : chunked\r\n\r\n" + chunk,
        "te_gzip_chunked": start + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunk,
        "obs_fold": start + b"X-A: b\r\n c\r\n" + cl + b"\r\n" + msg,
        "bare_lf": start.replace(b"\r\n", b"\n") + cl.replace(b"\r\n", b"\n") + b"\n" + msg,
        "nul_value": start + b"X-A: b\x00c\r\n" + cl + b"\r\n" + msg,
        "chunk_no_crlf": start + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(msg) + msg + b"XX0\r\n\r\n",
        "chunk_ext_trailer": start + b"Transfer-Encoding: chunked\r\n\r\n%x;e=1\r\n" % len(msg) + msg +
        b"\r\n0\r\nX-T: 1\r\n\r\n",
        "http10_chunked": start.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Transfer-Encoding: chunked\r\n\r\n" + chunk,
        "reqline_2sp": start.replace(b"POST ", b"POST  ", 1) + cl + b"\r\n" + msg,
    }
    s = {"probe_" + k: header() + v + good for k, v in probes.items()}
    s["expect_continue"] = header(split=0x80 | 0x05) + start + b"Expect: 100-continue\r\n" + cl + b"\r\n" + msg + good
    s["expect_other"] = header() + start + b"Expect: nope\r\n" + cl + b"\r\n" + msg
    s["connection_listed"] = header() + h1_request(body=msg, extra=["X-Secret: 1", "Connection: x-secret, te"])
    return s


def write(name, seeds):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for k, v in seeds.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)


if __name__ == "__main__":
    write("h2_session", h2_seeds())
    write("h1", h1_seeds())
