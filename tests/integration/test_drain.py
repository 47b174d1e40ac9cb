"""Drain on SIGTERM and SIGINT (issue 13, Drain; docs/lifecycle.md).

grelay turns not ready, keeps accepting for drain_delay, then closes its
listeners and drains every client connection: HTTP/2 gets GOAWAY with
last-stream-id 2^31-1 and a PING, then the final GOAWAY when the PING's ACK
comes; HTTP/1.1 gets `Connection: close`, idle connections are closed. Calls
in flight finish; past drain_timeout (counted from the signal) the rest end
with UNAVAILABLE "grelay is shutting down"; a second signal skips the wait.
grelay exits 0 with no sanitizer report (harness Grelay.stop checks both).
"""
import json
import re
import signal
import socket
import struct
import time

import grpc
import hpack
import pytest

from grpcweb_client import H1, frame, parse_frames
from harness import free_port, simple_config
from test_failures import wait_for

SHUTDOWN = "grelay is shutting down"
MAX_ID = 2**31 - 1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, PING, SETTINGS = 7, 6, 4


class RawH2:
    """An idle HTTP/2 client that answers SETTINGS and PING by hand (python
    h2 stops reading at the first GOAWAY) and records every frame."""

    def __init__(self, port, answer_ping=True):
        self.answer_ping = answer_ping
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(PREFACE + struct.pack(">I", 0)[1:] + bytes([SETTINGS, 0]) + struct.pack(">I", 0))
        self.buf = b""
        self.frames = []  # (type, flags, payload)
        self.on_streams = []  # (type, flags, stream id, payload) of frames on a stream
        self.closed = False

    def pump(self, seconds):
        """Reads (and answers) for at most `seconds`, or until grelay closes."""
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, min(0.1, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            self.buf += data
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                ftype, flags, payload = self.buf[3], self.buf[4], self.buf[9:9 + n]
                sid = struct.unpack(">I", self.buf[5:9])[0] & MAX_ID
                self.buf = self.buf[9 + n:]
                self.frames.append((ftype, flags, payload))
                if sid:
                    self.on_streams.append((ftype, flags, sid, payload))
                if (ftype == SETTINGS or (ftype == PING and self.answer_ping)) and not flags & 1:
                    ack = struct.pack(">I", len(payload) if ftype == PING else 0)[1:] + bytes([ftype, 1]) + bytes(4)
                    self.sock.sendall(ack + (payload if ftype == PING else b""))

    def call(self, sid, path, message, metadata=(), before=b""):
        """Sends one gRPC unary request on stream sid: HEADERS, then DATA with
        END_STREAM; `before` (frames) goes ahead of them in the same write."""
        block = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                        (":authority", "drain.test"), ("content-type", "application/grpc"),
                                        ("te", "trailers")] + list(metadata))
        body = b"\0" + struct.pack(">I", len(message)) + message
        self.sock.sendall(before + struct.pack(">I", len(block))[1:] + bytes([1, 4]) + struct.pack(">I", sid) + block +
                          struct.pack(">I", len(body))[1:] + bytes([0, 1]) + struct.pack(">I", sid) + body)

    def ping_ack(self):
        """The ACK of the last PING grelay sent (not sent: the caller writes it)."""
        payload = [p for t, flags, p in self.frames if t == PING and not flags & 1][-1]
        return struct.pack(">I", 8)[1:] + bytes([PING, 1]) + bytes(4) + payload

    def answer(self, sid):
        """(messages' bytes, trailers dict) received on stream sid."""
        dec, data, fields = hpack.Decoder(), b"", {}
        for t, _, s, p in self.on_streams:
            if t == 1:  # HEADERS (no padding or priority from grelay); decoded in order for the HPACK table
                block = dec.decode(p)
                if s == sid:
                    fields.update((k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes)
                                   else v) for k, v in block)
            elif t == 0 and s == sid:
                data += p
        return data, fields

    def goaways(self):
        """[(last_stream_id, error_code)] in the order they came."""
        return [(struct.unpack(">I", p[:4])[0] & MAX_ID, struct.unpack(">I", p[4:8])[0])
                for t, _, p in self.frames if t == GOAWAY]

    def drain_frames(self):
        """The GOAWAY and PING frames, in order: what a drain sends."""
        return [t for t, flags, _ in self.frames if t == GOAWAY or (t == PING and not flags & 1)]

    def close(self):
        self.sock.close()


def drain_config(port, backends, **top):
    cfg = simple_config(port, [b.addr for b in backends], listener_extra={"hibernate_after": "0s"})
    cfg.update(top)
    return cfg


def stopped_within(g, seconds):
    """grelay's exit code once it exits, waiting at most `seconds`."""
    return g.proc.wait(seconds)


def test_sigterm_lets_calls_finish_and_drains_every_connection(backends, grelay_factory):
    port, sleepy_port = free_port(), free_port()
    cfg = drain_config(port, backends[:1], drain_delay="1s", drain_timeout="8s", log_level="debug")
    sleepy = dict(cfg["listeners"][0], name="sleepy", address="127.0.0.1:%d" % sleepy_port, hibernate_after="200ms")
    cfg["listeners"].append(sleepy)
    g = grelay_factory(cfg, port)
    # Two idle HTTP/2 connections: one hibernates (its listener's
    # hibernate_after is 200ms), one stays awake (hibernate_after 0s).
    # A third never answers PINGs: its final GOAWAY comes after a bound.
    asleep, awake, mute = RawH2(sleepy_port), RawH2(port), RawH2(port, answer_ping=False)
    deadline = time.monotonic() + 10
    while "client connection hibernates" not in g.log() and time.monotonic() < deadline:
        asleep.pump(0.1)
        awake.pump(0.05)
        mute.pump(0.05)
    assert "client connection hibernates" in g.log(), g.log()[-3000:]

    ch = grpc.insecure_channel(g.addr)
    try:
        unary = ch.unary_unary("/test.Echo/Unary")
        calls_before = backends[0].events()["calls"]
        md = [("x-delay-ms", "2000")]
        futs = [unary.future(b"call %d" % i, metadata=md, timeout=30) for i in range(200)]
        req = json.dumps({"count": 7, "size": 8, "interval_ms": 500}).encode()
        stream = ch.unary_stream("/test.Echo/ServerStream")(req, timeout=30)  # needs 3 s
        assert wait_for(lambda: backends[0].events()["calls"] >= calls_before + 201), backends[0].events()

        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: "draining (not ready)" in g.log(), seconds=5), g.log()[-3000:]
        # Within drain_delay the listener still takes new clients and calls.
        with grpc.insecure_channel(g.addr) as late:
            assert late.unary_unary("/test.Echo/Unary")(b"during the delay", timeout=5) == b"during the delay"
        assert "listeners closed" not in g.log(), "the call during drain_delay took too long to tell"
        # After it, the listening socket is gone: connections are refused.
        assert wait_for(lambda: "listeners closed" in g.log(), seconds=5), g.log()[-3000:]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", sleepy_port), timeout=5).close()

        # Both idle connections: GOAWAY 2^31-1, PING, then the final GOAWAY
        # (last stream 0: they opened none), and grelay closes them.
        for raw in (awake, asleep, mute):
            raw.pump(3)
            assert raw.goaways() == [(MAX_ID, 0), (0, 0)], (raw.frames, g.log()[-3000:])
            assert raw.drain_frames() == [GOAWAY, PING, GOAWAY], raw.frames
            assert raw.closed
        # The hibernated one answered the PING without waking its session.
        assert "client connection wakes" not in g.log()

        # Every call in flight finished normally, the long stream too.
        assert [f.result(timeout=30) for f in futs] == [b"call %d" % i for i in range(200)]
        assert [m[:8] for m in stream] == [b"%08d" % i for i in range(7)]
        assert stopped_within(g, 9) == 0
        assert time.monotonic() - t0 < 8 + 1, "exit later than drain_timeout + 1 s"
    finally:
        ch.close()
        awake.close()
        asleep.close()
        mute.close()
    _, drained, cut = drained_counts(g)
    assert (drained, cut) == (201, 0), g.log()[-2000:]  # in flight when the listeners closed: 200 + the stream
    g.stop()  # exit status 0, no sanitizer report


def test_a_stream_opened_between_the_two_goaways_is_served(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(drain_config(port, backends[:1], drain_timeout="5s"), port)
    raw = RawH2(port, answer_ping=False)  # no ACK: the final GOAWAY waits for its 1 s bound
    try:
        raw.pump(0.3)
        g.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not raw.goaways() and time.monotonic() < deadline:
            raw.pump(0.05)
        assert raw.goaways() == [(MAX_ID, 0)], raw.frames
        # The client had a call on its way as the notice came: it is served.
        raw.call(1, "/test.Echo/Unary", b"in between", [("x-delay-ms", "200")])
        raw.pump(5)
        assert raw.goaways() == [(MAX_ID, 0), (1, 0)], raw.frames  # the final GOAWAY counts stream 1 in
        data, fields = raw.answer(1)
        assert fields.get("grpc-status") == "0" and data == b"\0" + struct.pack(">I", 10) + b"in between", fields
        assert raw.closed
        assert stopped_within(g, 5) == 0
    finally:
        raw.close()
    assert drained_counts(g)[1:] == (1, 0)
    g.stop()


def test_a_stream_written_behind_the_ping_ack_is_counted_in_the_final_goaway(backends, grelay_factory):
    """grpc-core writes its PING ACK ahead of the HEADERS of streams it had
    started before it read the GOAWAY, in the same write. Those streams are
    in: the final GOAWAY is built after the whole read, so its last stream
    counts them, and they are served (it once named the stream before them:
    grelay forwarded a call that the client then failed as never processed,
    UNAVAILABLE "GOAWAY received")."""
    port = free_port()
    g = grelay_factory(drain_config(port, backends[:1], drain_timeout="5s", log_level="debug"), port)
    raw = RawH2(port, answer_ping=False)
    try:
        raw.call(1, "/test.Echo/Unary", b"before")
        deadline = time.monotonic() + 5
        while raw.answer(1)[1].get("grpc-status") is None and time.monotonic() < deadline:
            raw.pump(0.05)
        assert raw.answer(1)[1].get("grpc-status") == "0", raw.frames
        g.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while raw.drain_frames() != [GOAWAY, PING] and time.monotonic() < deadline:
            raw.pump(0.05)
        assert raw.drain_frames() == [GOAWAY, PING], raw.frames
        # One write: the PING's ACK, then a call started before the notice was read.
        raw.call(3, "/test.Echo/Unary", b"behind the ack", before=raw.ping_ack())
        raw.pump(5)
        assert raw.goaways() == [(MAX_ID, 0), (3, 0)], (raw.frames, g.log()[-3000:])
        data, fields = raw.answer(3)
        assert fields.get("grpc-status") == "0", (fields, g.log()[-3000:])
        assert data == b"\0" + struct.pack(">I", 14) + b"behind the ack"
        assert raw.closed
        assert stopped_within(g, 5) == 0
    finally:
        raw.close()
    assert drained_counts(g)[1:] == (1, 0)
    g.stop()


def drained_counts(g):
    """(seconds, calls finished, calls cut) from grelay's last log line about the drain."""
    m = re.search(r"drained in ([0-9.]+)s: (\d+) calls? finished, (\d+) cut", g.log())
    assert m, g.log()[-3000:]
    return float(m.group(1)), int(m.group(2)), int(m.group(3))


def test_a_call_that_outlives_drain_timeout_ends_unavailable(backends, grelay_factory):
    port = free_port()
    cfg = drain_config(port, backends[:1], drain_timeout="1s")
    cfg["listeners"][0]["grpc_web"] = True
    g = grelay_factory(cfg, port)
    web = H1(port)
    calls_before = backends[0].events()["calls"]
    with grpc.insecure_channel(g.addr) as ch:
        held = ch.unary_unary("/test.Echo/Unary").future(b"", metadata=[("x-hold", "drain-cut")], timeout=30)
        req = json.dumps({"count": 3, "size": 8, "hold": True, "id": "drain-cut-stream"}).encode()
        stream = ch.unary_stream("/test.Echo/ServerStream")(req, timeout=30)
        assert next(stream) == b"00000000"  # the response has begun: the status comes in trailers
        quick = ch.unary_unary("/test.Echo/Unary").future(b"quick", metadata=[("x-delay-ms", "300")], timeout=30)
        web.request("/test.Echo/Unary", frame(b""), [("content-type", "application/grpc-web+proto"),
                                                     ("x-hold", "drain-cut-web")])
        assert wait_for(lambda: backends[0].events()["calls"] >= calls_before + 4), backends[0].events()
        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)

        assert quick.result(timeout=10) == b"quick"  # finished within drain_timeout
        with pytest.raises(grpc.RpcError) as e:
            held.result(timeout=10)
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.UNAVAILABLE, SHUTDOWN)
        with pytest.raises(grpc.RpcError) as e:
            list(stream)
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.UNAVAILABLE, SHUTDOWN)
        status, headers, body = web.read_response()
        web.close()
        _, trailers = parse_frames(body) if body else ([], headers)
        assert status == 200 and headers.get("connection") == "close", headers
        assert trailers["grpc-status"] == "14", trailers
        assert trailers["grpc-message"] in (SHUTDOWN, "grelay%20is%20shutting%20down"), trailers
        assert stopped_within(g, 5) == 0
        assert time.monotonic() - t0 < 1 + 1, "exit later than drain_timeout + 1 s"
    took, drained, cut = drained_counts(g)
    assert (drained, cut) == (1, 3), g.log()[-2000:]
    g.stop()


def test_a_second_sigterm_cuts_what_is_left(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(drain_config(port, backends[:1], drain_timeout="30s"), port)
    with grpc.insecure_channel(g.addr) as ch:
        held = ch.unary_unary("/test.Echo/Unary").future(b"", metadata=[("x-hold", "drain-twice")], timeout=60)
        assert wait_for(lambda: backends[0].events()["calls"] > 0)
        time.sleep(0.2)
        g.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: "listeners closed" in g.log(), seconds=5), g.log()
        time.sleep(0.3)
        assert not held.done()  # drain_timeout is 30 s: it waits
        g.proc.send_signal(signal.SIGINT)
        with pytest.raises(grpc.RpcError) as e:
            held.result(timeout=10)
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.UNAVAILABLE, SHUTDOWN)
        assert stopped_within(g, 5) == 0  # not the 30 s of drain_timeout
    assert "signal 2 again: not waiting any longer" in g.log()
    assert drained_counts(g)[1:] == (0, 1)
    g.stop()


def test_grpc_web_calls_get_connection_close_and_idle_ones_are_closed(backends, grelay_factory):
    port = free_port()
    cfg = drain_config(port, backends[:1], drain_timeout="10s")
    cfg["listeners"][0]["grpc_web"] = True
    g = grelay_factory(cfg, port)
    busy, idle = H1(port), H1(port)
    sniffing = socket.create_connection(("127.0.0.1", port), timeout=10)  # sends nothing: protocol unknown
    try:
        idle.request("/test.Echo/Unary", frame(b"first"), [("content-type", "application/grpc-web+proto")])
        status, headers, body = idle.read_response()
        assert status == 200 and "connection" not in headers  # keep-alive
        busy.request("/test.Echo/Unary", frame(b"slow"), [("content-type", "application/grpc-web+proto"),
                                                          ("x-delay-ms", "1500")])
        time.sleep(0.3)
        g.proc.send_signal(signal.SIGTERM)
        idle.sock.settimeout(3)
        assert idle.sock.recv(100) == b""  # an idle keep-alive connection is closed at once
        sniffing.settimeout(3)
        assert sniffing.recv(100) == b""  # so is one whose protocol is not known yet
        status, headers, body = busy.read_response()
        msgs, trailers = parse_frames(body)
        assert status == 200 and headers.get("connection") == "close", headers
        assert msgs == [b"slow"] and trailers["grpc-status"] == "0"
        busy.sock.settimeout(3)
        assert busy.sock.recv(100) == b""  # and closed after it
        assert stopped_within(g, 5) == 0
    finally:
        busy.close()
        idle.close()
        sniffing.close()
    assert drained_counts(g)[1:] == (1, 0)
    g.stop()


def test_signals_after_the_drain_do_not_kill_grelay(backends, grelay_factory):
    """A supervisor that keeps sending SIGTERM (or a person pressing Ctrl-C
    again and again) never turns grelay's clean exit into death by the
    signal: once the drain is over, later signals are held, and the exit
    status is 0. Sent every 2 ms from the first, for as long as grelay runs,
    several land after the drain, in the last steps of its exit."""
    for attempt in range(3):
        port = free_port()
        g = grelay_factory(drain_config(port, backends[:1], drain_delay="0s", drain_timeout="5s"), port)
        deadline = time.monotonic() + 15
        sent = 0
        while g.proc.poll() is None and time.monotonic() < deadline:
            g.proc.send_signal(signal.SIGTERM if sent % 2 == 0 else signal.SIGINT)
            sent += 1
            time.sleep(0.002)
        assert stopped_within(g, 10) == 0, (attempt, sent, g.log()[-2000:])
        assert sent >= 2
        g.stop()
