"""Clients that do not read (docs/limits.md, "Clients that do not read"):
what they hold is bounded in time (stream_write_timeout) and in size (the
stream window, connection_buffer), and they cannot stop the calls of other
clients that share their upstream connection."""
import hashlib
import json
import os
import socket
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings

from harness import Backend, free_port, simple_config

CANCEL = 8


def grpc_headers(path):
    return [(":method", "POST"), (":scheme", "http"), (":authority", "test"), (":path", path),
            ("content-type", "application/grpc"), ("te", "trailers")]


def message(payload):
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def asan_env():
    """Under AddressSanitizer, freed memory sits in its quarantine: without
    one, RSS shows what grelay gives back."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": opts + ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
                                   ":allocator_release_to_os_interval_ms=0"}


class RawClient:
    """An HTTP/2 client that reads its socket (so it sees HEADERS and
    RST_STREAM) but, with window=0, never lets a byte of response DATA come:
    SETTINGS_INITIAL_WINDOW_SIZE 0 and no WINDOW_UPDATE, ever."""

    def __init__(self, port, window=0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.c.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.c.initiate_connection()
        self.headers_at, self.reset_at, self.reset_code, self.data = {}, {}, {}, 0
        self.settings = False
        self.flush()
        self.pump(lambda: self.settings, 10)

    def flush(self):
        out = self.c.data_to_send()
        if out:
            self.s.sendall(out)

    def pump(self, done, seconds):
        """Reads and handles frames until done() or seconds pass."""
        deadline = time.monotonic() + seconds
        self.s.settimeout(0.1)
        while not done() and time.monotonic() < deadline:
            try:
                data = self.s.recv(1 << 20)
            except socket.timeout:
                continue
            if not data:
                break
            now = time.monotonic()
            for ev in self.c.receive_data(data):
                if isinstance(ev, h2.events.RemoteSettingsChanged):
                    self.settings = True
                elif isinstance(ev, h2.events.ResponseReceived):
                    self.headers_at[ev.stream_id] = now
                elif isinstance(ev, h2.events.StreamReset):
                    self.reset_at[ev.stream_id] = now
                    self.reset_code[ev.stream_id] = ev.error_code
                elif isinstance(ev, h2.events.DataReceived):
                    self.data += len(ev.data)
            self.flush()
        return done()

    def open(self, path, body, end=True, extra=()):
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, grpc_headers(path) + list(extra))
        if body is not None:
            self.c.send_data(sid, body, end_stream=end)
        return sid

    def close(self):
        self.s.close()


class RssPeak(threading.Thread):
    """Samples grelay's RSS every 20 ms and keeps the highest."""

    def __init__(self, g):
        super().__init__(daemon=True)
        self.g, self.peak, self.stop = g, 0, threading.Event()
        self.start()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.g.rss_kib())
            time.sleep(0.02)

    def done(self):
        self.stop.set()
        self.join(5)
        return self.peak


def settle_rss(g, seconds=3):
    """RSS once grelay's housekeeping (every 0.5 s) had time to trim."""
    time.sleep(seconds)
    return g.rss_kib()


def test_a_thousand_finished_calls_behind_a_client_that_never_reads_are_cut(grelay_factory):
    """The issue's test: 1,024 server-streaming calls whose backend finished
    (2 x 15,000 bytes each, all within the stream window) wait for a client
    whose window is 0. After stream_write_timeout (1 s) each is reset with
    CANCEL, and the ~32 MiB they held comes back."""
    b = Backend("finisher")
    try:
        port = free_port()
        # connection_buffer is raised so that all 1,024 are taken (see the budget's own test)
        g = grelay_factory(simple_config(port, [b.addr], listener_extra={"stream_write_timeout": "1s",
                                                                         "connection_buffer": "64MiB"}),
                           port, env=asan_env())
        with grpc.insecure_channel(g.addr) as ch:  # warm up: sessions, arenas, chunk pool
            ch.unary_unary("/test.Echo/Unary")(b"warm" * 4000, timeout=10)
        base = settle_rss(g)
        peak = RssPeak(g)
        c = RawClient(port)
        body = message(json.dumps({"count": 2, "size": 15000}).encode())
        ids = []
        for i in range(1024):
            ids.append(c.open("/test.Echo/ServerStream", body))
            if i % 64 == 63:
                c.flush()
                c.pump(lambda: False, 0.01)
        c.flush()
        assert c.pump(lambda: len(c.reset_at) == len(ids), 60), \
            "%d of %d calls reset, %d answered" % (len(c.reset_at), len(ids), len(c.headers_at))
        top = peak.done()
        assert len(c.headers_at) == len(ids), sorted(set(c.reset_code.values()))  # each call was answered: its backend finished
        assert c.data == 0
        assert set(c.reset_code.values()) == {CANCEL}
        # Cut after the timeout, not before: each reset came at least about
        # stream_write_timeout after its response began.
        assert min(c.reset_at[i] - c.headers_at[i] for i in ids) > 0.5
        after = settle_rss(g)
        c.close()
        held = top - base
        print("RSS KiB: start %d, peak +%d, after the cut +%d" % (base, held, after - base))
        # 1,024 x 2 chunks of 16 KiB were held (~32 MiB), and are given back:
        # measured +1.2 MiB after the cut in a release build, +5.5-7 MiB under
        # AddressSanitizer (its allocator keeps some), against a peak of +33-46 MiB.
        assert held > 16 * 1024, "peak RSS only %d KiB above the start" % held
        assert after - base < 10 * 1024, "RSS %d KiB above the start after the cut (peak +%d)" % (after - base, held)
    finally:
        b.stop()


def test_slow_readers_do_not_stop_other_clients_on_the_same_upstream_connection(grelay_factory):
    """A few clients open floods (server streams as fast as flow control
    lets them) and never read. Their bytes fill only their own stream
    windows; the one upstream connection (max_connections: 1) keeps its
    connection window, and a real gRPC client on another connection keeps
    succeeding, every call. stream_write_timeout is long: it is not what
    saves the day here. The cluster's connection_window is pinned at 1 MiB
    (its default is 256 MiB): below what the floods' stream windows add up
    to, so a grelay that gave the connection's credit back only when the
    client took the bytes would stall every call here (review,
    2026-12-02: with the default, that regression passed)."""
    b = Backend("shared")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr], listener_extra={"stream_write_timeout": "60s"},
                                         cluster_extra={"max_connections": 1, "connection_window": "1MiB"}), port)
        readers = []
        for _ in range(3):
            c = RawClient(port)
            for _ in range(8):  # 24 x 64 KiB windows: more than the 1 MiB connection window
                c.open("/test.Echo/Flood", message(b""))
            c.flush()
            readers.append(c)
        for c in readers:  # let the floods fill what they can (each 64 KiB stream window)
            c.pump(lambda: False, 0.5)
        ok, failed = 0, []
        with grpc.insecure_channel(g.addr) as ch:
            call = ch.unary_unary("/test.Echo/Unary")
            stream = ch.unary_stream("/test.Echo/ServerStream")
            for i in range(40):
                try:
                    assert call(b"%d" % i * 1000, timeout=5) == b"%d" % i * 1000
                    got = list(stream(json.dumps({"count": 3, "size": 20000}).encode(), timeout=5))
                    assert [len(m) for m in got] == [20000] * 3
                    ok += 1
                except grpc.RpcError as e:
                    failed.append((e.code(), e.details()))
                for c in readers:  # the slow readers keep their sockets read, never their windows
                    c.pump(lambda: False, 0.01)
        assert failed == [] and ok == 40
        assert all(c.data == 0 and not c.reset_at for c in readers)
        for c in readers:
            c.close()
    finally:
        b.stop()


def send_all(c, ids, payload, seconds):
    """Sends payload on each stream (no END_STREAM) as the windows allow."""
    left = {sid: payload for sid in ids}
    deadline = time.monotonic() + seconds
    while left and time.monotonic() < deadline:
        for sid in list(left):
            n = min(len(left[sid]), c.c.local_flow_control_window(sid), c.c.max_outbound_frame_size)
            if n > 0:
                c.c.send_data(sid, left[sid][:n])
                left[sid] = left[sid][n:]
                if not left[sid]:
                    del left[sid]
        c.flush()
        c.pump(lambda: False, 0.02)
    return not left


def test_requests_sent_upstream_are_not_kept_past_the_connection_budget(grelay_factory):
    """F8: 200 client-streaming calls each send 64 KiB to a backend that
    reads them and does not answer (no END_STREAM yet), on a route without
    retry_policy. Replay copies of what went upstream are bounded by
    connection_buffer (256 KiB here), not 200 x 64 KiB = 12.5 MiB."""
    b = Backend("reader")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr], listener_extra={"connection_buffer": "256KiB"}), port,
                           env=asan_env())
        with grpc.insecure_channel(g.addr) as ch:
            ch.unary_unary("/test.Echo/Unary")(b"warm" * 4000, timeout=10)
        c = RawClient(port, window=65535)
        base = settle_rss(g, 1.5)
        # x-quiet: the backend reads every message but sends no headers yet
        ids = [c.open("/test.Echo/ClientStream", None, extra=[("x-quiet", "1")]) for _ in range(200)]
        c.flush()
        assert send_all(c, ids, message(b"r" * 65531), 60), "the requests did not all go through"
        c.pump(lambda: False, 1.0)
        grown = g.rss_kib() - base
        print("RSS grew by %d KiB" % grown)
        assert not c.reset_at
        assert grown < 6 * 1024, "RSS grew by %d KiB: replay copies kept" % grown
        c.close()
    finally:
        b.stop()


def test_a_connection_over_connection_buffer_gets_no_new_stream(grelay_factory):
    """A client with window 0 opens calls one after another, each answered
    with 30,000 bytes it never takes. Once its calls hold more than
    connection_buffer (1 MiB), its new streams are refused with
    REFUSED_STREAM: the backend does no more work for it. Another client is
    served as usual."""
    b = Backend("budget")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr], listener_extra={"connection_buffer": "1MiB"}), port)
        c = RawClient(port)
        body = message(json.dumps({"count": 2, "size": 15000}).encode())
        ids = []
        for _ in range(60):
            sid = c.open("/test.Echo/ServerStream", body)
            c.flush()
            ids.append(sid)
            assert c.pump(lambda: sid in c.headers_at or sid in c.reset_at, 10)
            c.pump(lambda: False, 0.02)  # its DATA reaches grelay
        answered = [i for i in ids if i in c.headers_at]
        refused = [i for i in ids if c.reset_code.get(i) == 7]
        assert 30 <= len(answered) <= 40, len(answered)  # 1 MiB / 30,000 bytes = 35
        assert refused == ids[len(answered):]
        assert b.events()["calls"] == len(answered)
        with grpc.insecure_channel(g.addr) as ch:
            assert ch.unary_unary("/test.Echo/Unary")(b"fine", timeout=10) == b"fine"
        c.close()
    finally:
        b.stop()


def test_a_grpc_web_client_that_never_reads_its_socket_is_closed_after_stream_write_timeout(grelay_factory):
    """HTTP/1.1 cannot reset one response: a gRPC-Web client that never
    reads its socket has its connection closed once the flood it asked for
    has waited stream_write_timeout (1 s) in grelay, and its upstream
    stream is reset (the backend stops)."""
    b = Backend("web-flood")
    try:
        port = free_port()
        config = simple_config(port, [b.addr], listener_extra={"stream_write_timeout": "1s", "grpc_web": True})
        config["log_level"] = "debug"
        g = grelay_factory(config, port)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        body = message(b"")
        s.sendall(b"POST /test.Echo/Flood HTTP/1.1\r\nhost: test\r\ncontent-type: application/grpc-web+proto\r\n"
                  b"content-length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 30
        marker = "took none of the response for stream_write_timeout"
        while marker not in g.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker in g.log()
        sent = b.events()["flood_sent"]
        time.sleep(1)
        assert b.events()["flood_sent"] == sent  # the backend was told to stop
        assert sent < 4096
        s.close()
        with grpc.insecure_channel(g.addr) as ch:
            assert ch.unary_unary("/test.Echo/Unary")(b"fine", timeout=10) == b"fine"
    finally:
        b.stop()


class UnreadSocketClient(RawClient):
    """An HTTP/2 client with 2 GiB windows (stream and connection) and a
    4 KiB receive buffer that does not read its socket until told to: a
    proxy can write to it only as far as the kernel's buffers go. Keeps a
    SHA-256 of each stream's DATA and whether it ended with grpc-status 0."""

    def __init__(self, port):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.s.settimeout(10)
        self.s.connect(("127.0.0.1", port))
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.c.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0x7FFFFFFF})
        self.c.initiate_connection()
        self.c.increment_flow_control_window(0x7FFFFFFF - 65535)
        self.headers_at, self.reset_at, self.reset_code, self.data = {}, {}, {}, 0
        self.sha, self.ok = {}, set()
        self.settings = False
        self.flush()
        self.pump(lambda: self.settings, 10)

    def pump(self, done, seconds):
        deadline = time.monotonic() + seconds
        self.s.settimeout(0.1)
        while not done() and time.monotonic() < deadline:
            try:
                data = self.s.recv(1 << 20)
            except socket.timeout:
                continue
            if not data:
                break
            for ev in self.c.receive_data(data):
                if isinstance(ev, h2.events.RemoteSettingsChanged):
                    self.settings = True
                elif isinstance(ev, h2.events.DataReceived):
                    self.data += len(ev.data)
                    self.sha.setdefault(ev.stream_id, hashlib.sha256()).update(ev.data)
                elif isinstance(ev, h2.events.TrailersReceived):
                    if (b"grpc-status", b"0") in ev.headers:
                        self.ok.add(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    self.reset_code[ev.stream_id] = ev.error_code
            self.flush()
        return done()


def test_streams_behind_a_client_that_does_not_read_hold_at_most_connection_buffer(grelay_factory):
    """2 clients x 24 server streams of 48 x 16 KiB messages (768 KiB a
    stream, 36 MiB in all), clients that do not read their sockets. The
    cluster's stream_buffer is 1 MiB, so before the windows started small
    each stream could hold 1 MiB (24 MiB a connection). Upstream windows
    start at 32 KiB and grow only within connection_buffer (1 MiB), so
    grelay's RSS grows by about a connection_buffer per connection. A grpcio
    client on another connection keeps succeeding meanwhile; then the
    clients read, and every stream ends with every byte."""
    b = Backend("bulk")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr],
                                         listener_extra={"connection_buffer": "1MiB", "stream_write_timeout": "60s"},
                                         cluster_extra={"stream_buffer": "1MiB"}), port, env=asan_env())
        count, size, streams = 48, 16384, 24
        expected = hashlib.sha256(b"".join(message((b"%08d" % i + b"x" * (size - 8))) for i in range(count)))
        with grpc.insecure_channel(g.addr) as ch:
            ch.unary_unary("/test.Echo/Unary")(b"warm" * 4000, timeout=10)
            base = settle_rss(g, 1.5)
            peak = RssPeak(g)
            clients = [UnreadSocketClient(port) for _ in range(2)]
            body = message(json.dumps({"count": count, "size": size}).encode())
            ids = [[c.open("/test.Echo/ServerStream", body) for _ in range(streams)] for c in clients]
            for c in clients:
                c.flush()
            call = ch.unary_unary("/test.Echo/Unary")
            for i in range(20):  # ~2 s: the backends fill what grelay lets them
                assert call(b"%d" % i * 100, timeout=5) == b"%d" % i * 100
                time.sleep(0.1)
            top = peak.done() - base
            print("RSS KiB: start %d, peak +%d" % (base, top))
            for c in clients:
                assert c.pump(lambda: len(c.ok) == streams, 120), "%d of %d streams ended" % (len(c.ok), streams)
            for c, sids in zip(clients, ids):
                assert c.ok == set(sids) and not c.reset_code
                assert all(c.sha[s].digest() == expected.digest() for s in sids)
                c.close()
        # Per connection: its connection_buffer (1 MiB) of queued response,
        # plus a partly filled 16 KiB chunk per stream; 3 MiB of slack for
        # sessions and the allocator. Measured with the ASan build (its
        # quarantine off): +3.3 MiB; +7 MiB when windows grow past
        # connection_buffer, +44 MiB when they start at stream_buffer.
        bound = 2 * (1024 + streams * 16) + 3 * 1024
        assert top < bound, "RSS grew by %d KiB, over %d KiB" % (top, bound)
    finally:
        b.stop()
