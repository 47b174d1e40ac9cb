"""Idle HTTP/2 client connections hibernate (their nghttp2 session is freed)
and wake on the next bytes, invisibly to real clients: HPACK, flow control and
stream ids carry on. hibernate_after is 100 ms here; grelay logs each
hibernation and wake-up at debug level, which is how the tests see them."""
import socket
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings

from harness import free_port, simple_config

UNARY = "/test.Echo/Unary"


def start(grelay_factory, backends, after="100ms"):
    port = free_port()
    cfg = simple_config(port, [b.addr for b in backends], listener_extra={"hibernate_after": after})
    cfg["log_level"] = "debug"
    return grelay_factory(cfg, port)


def wait_log(g, text, count, seconds=10):
    """Until grelay's log has text count times (bounded); returns the count."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = g.log().count(text)
        if n >= count:
            return n
        time.sleep(0.05)
    return g.log().count(text)


def test_grpc_client_across_hibernations(backends, grelay_factory):
    """grpcio (C-core: indexes headers in HPACK, BDP pings, its own window
    updates) on one channel: bursts of calls with metadata, a bidi call with
    70 KB messages, and a hibernation between every burst. Bursts of 20 calls
    give the client its HPACK table back (after 16) and take it again."""
    g = start(grelay_factory, backends)
    with grpc.insecure_channel(g.addr) as ch:
        unary = ch.unary_unary(UNARY)
        bidi = ch.stream_stream("/test.Echo/Bidi")
        for cycle in range(6):
            for i in range(20 if cycle % 2 else 3):
                md = (("x-key-%d" % (i % 5), "v" * 50), ("x-same", "s" * 100), ("x-cycle", str(cycle)))
                msg = b"c%d-%d" % (cycle, i)
                assert unary(msg, metadata=md, timeout=10) == msg
            msgs = [b"a", b"b" * 70000, b"c"]
            assert list(bidi(iter(msgs), timeout=10)) == msgs
            assert wait_log(g, "client connection hibernates", cycle + 1) == cycle + 1
        assert unary(b"last", timeout=10) == b"last"
    log = g.log()
    assert log.count("client connection wakes") == 6
    assert "protocol error" not in log and "COMPRESSION" not in log


class RawClient:
    """A python-h2 client that sees every frame grelay sends."""

    def __init__(self, addr, ack_data):
        host, port = addr.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.ack_data = ack_data
        self.next_id = 1

    def call(self, body):
        sid = self.next_id
        self.next_id += 2
        self.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "t"), (":path", UNARY),
                                   ("content-type", "application/grpc"), ("te", "trailers"), ("x-pad", "p" * 60)])
        msg = b"\0" + len(body).to_bytes(4, "big") + body
        for i in range(0, len(msg), 16384):
            self.h2.send_data(sid, msg[i:i + 16384], end_stream=i + 16384 >= len(msg))
        self.sock.sendall(self.h2.data_to_send())
        got, headers = b"", {}
        while True:
            data = self.sock.recv(65536)
            assert data, "grelay closed the connection"
            for ev in self.h2.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    got += ev.data
                    if self.ack_data:
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers.update((k.decode(), v.decode()) for k, v in ev.headers)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise AssertionError("GOAWAY %s" % ev.error_code)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    self.sock.sendall(self.h2.data_to_send())
                    assert headers.get("grpc-status") == "0", headers
                    return got[5:]
            self.sock.sendall(self.h2.data_to_send())

    def idle_until(self, g, count):
        """Reads (and answers) what grelay sends while idle, until its log shows
        count hibernations; returns those events."""
        events = []
        self.sock.settimeout(0.05)
        deadline = time.monotonic() + 10
        while g.log().count("client connection hibernates") < count and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            assert data, "grelay closed an idle connection"
            events += self.h2.receive_data(data)
            self.sock.sendall(self.h2.data_to_send())
        self.sock.settimeout(10)
        assert g.log().count("client connection hibernates") == count
        return events


def test_flow_control_survives_hibernation(backends, grelay_factory):
    """30 calls of 40 KB each way with a hibernation after each: 1.2 MB each
    way, more than the 1 MiB connection windows, so a window lost or doubled
    at any swap would stall or break the connection. While idle the client
    gets only its HPACK table set to 0 and window top-ups."""
    g = start(grelay_factory, backends)
    c = RawClient(g.addr, ack_data=True)
    body = bytes(range(256)) * 160
    for i in range(30):
        assert c.call(body) == body
        for ev in c.idle_until(g, i + 1):
            assert isinstance(ev, (h2.events.RemoteSettingsChanged, h2.events.WindowUpdated,
                                   h2.events.SettingsAcknowledged)), ev
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                assert dict((int(k), v.new_value) for k, v in ev.changed_settings.items()) == {
                    h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0}
            if isinstance(ev, h2.events.WindowUpdated):
                assert ev.stream_id == 0


def test_client_that_never_returns_window(backends, grelay_factory):
    """A client that never sends WINDOW_UPDATE leaves grelay's send window
    below 65535; a new session must not believe it has more. 300-byte
    answers over 12 hibernations: still within the window, all arrive."""
    g = start(grelay_factory, backends)
    c = RawClient(g.addr, ack_data=False)
    for i in range(12):
        body = b"%02d" % i * 150
        assert c.call(body) == body
        c.idle_until(g, i + 1)
        if i == 5:
            # Late frames for streams that ended before the hibernation are
            # frames for closed streams, not a protocol error.
            c.sock.sendall(bytes.fromhex("000004080000000001") + (1000).to_bytes(4, "big") +
                           bytes.fromhex("00000403000000000b") + (8).to_bytes(4, "big"))
    assert c.h2.outbound_flow_control_window > 0  # sanity: the client's own view


def test_hibernate_after_zero_keeps_sessions(backends, grelay_factory):
    """hibernate_after: 0 turns it off: an idle connection keeps its session."""
    g = start(grelay_factory, backends, after="0s")
    with grpc.insecure_channel(g.addr) as ch:
        assert ch.unary_unary(UNARY)(b"x", timeout=10) == b"x"
        time.sleep(0.5)
        assert ch.unary_unary(UNARY)(b"y", timeout=10) == b"y"
    assert "hibernates" not in g.log()


def test_a_connection_with_no_call_sleeps_at_once_and_wakes_for_its_first(backends, grelay_factory):
    """A connection that has opened no call hibernates after 50 ms of quiet,
    whatever hibernate_after says (10 s here), even before the client
    acknowledged grelay's SETTINGS; that ACK alone does not wake it, and its
    first call (HPACK indexing from the default table) wakes it and works.
    grpcio: a channel that connects, then waits, then calls."""
    g = start(grelay_factory, backends, after="10s")
    c = RawClient(g.addr, ack_data=True)
    assert wait_log(g, "client connection hibernates", 1, 5) == 1  # the client has not read a byte yet
    c.sock.settimeout(5)
    events = c.h2.receive_data(c.sock.recv(65536))  # grelay's SETTINGS and window
    assert any(isinstance(ev, h2.events.RemoteSettingsChanged) for ev in events)
    c.sock.sendall(c.h2.data_to_send())  # the SETTINGS ACK, alone
    time.sleep(0.3)
    assert "client connection wakes" not in g.log()
    for i in range(3):
        assert c.call(b"first %d" % i) == b"first %d" % i
    assert g.log().count("client connection wakes") == 1
    with grpc.insecure_channel(g.addr) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        assert wait_log(g, "client connection hibernates", 2, 5) == 2
        assert ch.unary_unary(UNARY)(b"late", timeout=10) == b"late"
    log = g.log()
    assert log.count("client connection wakes") == 2
    assert "protocol error" not in log and "COMPRESSION" not in log
