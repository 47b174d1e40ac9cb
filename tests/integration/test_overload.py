"""The overload guard (overload.max_heap, docs/limits.md "Overload"): above
it new HTTP/2 streams are refused with REFUSED_STREAM, gRPC-Web requests get
UNAVAILABLE, new connections wait in the backlog, and calls in flight go on;
below 90% of it everything is taken again. grelay logs both changes."""
import json
import socket
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings

from grpcweb_client import H1, frame
from harness import Backend, free_port, simple_config
from test_failures import wait_for

MAX_HEAP = 4 * 1024 * 1024
BUFFER = 1024 * 1024  # per call, each way
HOLDERS = 192  # a call nobody reads holds its first upstream window, 32 KiB: 192 hold ~6 MiB


class RawClient:
    """A python-h2 client connection; window=0 makes it a reader that never
    grants a stream any window (grelay buffers what the backend sends)."""

    def __init__(self, port, window=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        if window is not None:
            self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.sock.sendall(self.h2.data_to_send())
        self.next_id = 1

    def start(self, path, body):
        sid = self.next_id
        self.next_id += 2
        self.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "t"), (":path", path),
                                   ("content-type", "application/grpc"), ("te", "trailers")])
        self.h2.send_data(sid, b"\0" + len(body).to_bytes(4, "big") + body, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        return sid

    def events(self, seconds):
        """Frames grelay sends within seconds (acknowledging its SETTINGS and PINGs)."""
        out, deadline = [], time.monotonic() + seconds
        self.sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            out += self.h2.receive_data(data)
            self.sock.sendall(self.h2.data_to_send())
        return out

    def close(self):
        self.sock.close()


def reset_code(client, sid, seconds=5):
    """The error code of the RST_STREAM grelay sends on sid, or None."""
    for e in client.events(seconds):
        if isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
            return e.error_code
        if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
            return "answered"
    return None


def test_overload_refuses_new_streams_and_lets_calls_in_flight_finish(grelay_factory):
    b = Backend("b")
    port = free_port()
    cfg = simple_config(port, [b.addr], listener_extra={"grpc_web": True, "stream_buffer": BUFFER,
                                                        "connection_buffer": "16MiB"},
                        cluster_extra={"stream_buffer": BUFFER, "connection_window": 16 * BUFFER})
    cfg["overload"] = {"max_heap": MAX_HEAP}
    g = grelay_factory(cfg, port)
    try:
        # Connected before the load: a probe connection, a grpcio channel and
        # an HTTP/1.1 (gRPC-Web) connection.
        probe = RawClient(port)
        probe.events(0.3)
        ch = grpc.insecure_channel(g.addr)
        assert ch.unary_unary("/test.Echo/Unary")(b"before", timeout=10) == b"before"
        web = H1(port)
        # A call in flight through all of it: 30 messages, 100 ms apart.
        slow = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 30, "size": 100, "interval_ms": 100}).encode(), timeout=30)
        got = []
        reader = threading.Thread(target=lambda: got.extend(slow))
        reader.start()

        # The load: calls whose client never opens a stream window, so the
        # backend's bytes wait in grelay (stream_buffer each).
        hog = RawClient(port, window=0)
        for _ in range(HOLDERS):
            hog.start("/test.Echo/ServerStream", json.dumps({"count": 64, "size": 65536}).encode())
        hog.events(0.5)
        assert wait_for(lambda: "overload: engaged" in g.log(), seconds=10), g.log()[-3000:]

        # A new stream on a connection made before: refused, not processed.
        assert reset_code(probe, probe.start("/test.Echo/Unary", b"refused")) == h2.errors.ErrorCodes.REFUSED_STREAM
        # A real gRPC client: its transparent retry is refused too; UNAVAILABLE.
        try:
            ch.unary_unary("/test.Echo/Unary")(b"x", timeout=5)
            raise AssertionError("a call began while overloaded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        # gRPC-Web (HTTP/1.1 has no REFUSED_STREAM): a trailers-only UNAVAILABLE.
        web.request("/test.Echo/Unary", frame(b"web"), [("content-type", "application/grpc-web+proto")])
        status, headers, _ = web.read_response()
        assert status == 200 and headers.get("grpc-status") == "14", headers
        assert "overloaded" in headers.get("grpc-message", "")
        # A new connection waits in the backlog: no SETTINGS from grelay.
        waiting = RawClient(port)
        assert waiting.events(1.0) == []

        # The load goes away: the memory comes back and the guard releases.
        hog.close()
        assert wait_for(lambda: "overload: released" in g.log(), seconds=10), g.log()[-3000:]
        # The waiting connection is accepted now, and its calls are served.
        assert reset_code(waiting, waiting.start("/test.Echo/Unary", b"after")) == "answered"
        assert ch.unary_unary("/test.Echo/Unary")(b"after", timeout=10) == b"after"
        reader.join(30)
        assert len(got) == 30  # the call in flight was never cut
        for c in (probe, waiting, web):
            c.close()
        ch.close()
    finally:
        b.stop()
    log = g.log()
    assert log.count("overload: engaged") == 1 and log.count("overload: released") == 1, log[-3000:]
