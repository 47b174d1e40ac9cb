"""Upstream pools: streams share connections up to the limit, new connections
open when all are full, and past max_connections calls wait in a bounded line."""
import json
import socket
import subprocess
import time

import grpc
import pytest

from harness import PY, Backend, concurrent_calls, free_port, simple_config, stop


@pytest.fixture
def solo():
    b = Backend("solo")
    yield b
    b.stop()


def test_one_upstream_connection_carries_many_streams(solo, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [solo.addr]), port)
    concurrent_calls(g.addr, 150, "many")
    assert len(solo.events()["peers"]) == 1


def test_full_connections_make_the_pool_open_more(solo, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [solo.addr], cluster_extra={"max_streams_per_connection": 10}), port)
    concurrent_calls(g.addr, 40, "forty")
    assert len(solo.events()["peers"]) == 4


def test_calls_wait_in_line_for_a_free_slot(solo, grelay_factory):
    port = free_port()
    extra = {"max_connections": 1, "max_streams_per_connection": 2}
    g = grelay_factory(simple_config(port, [solo.addr], cluster_extra=extra), port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        futs = [call.future(b"%d" % i, timeout=30) for i in range(30)]
        assert [f.result() for f in futs] == [b"%d" % i for i in range(30)]
    assert len(solo.events()["peers"]) == 1


def test_a_full_line_answers_unavailable_and_the_line_drains(solo, grelay_factory):
    port = free_port()
    extra = {"max_connections": 1, "max_streams_per_connection": 1, "max_pending": 2}
    g = grelay_factory(simple_config(port, [solo.addr], cluster_extra=extra), port)
    with grpc.insecure_channel(g.addr) as ch:
        held = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 2, "size": 8, "hold": True, "id": "line"}).encode(), timeout=30)
        next(held)  # holds the only stream slot
        call = ch.unary_unary("/test.Echo/Unary")
        queued = [call.future(b"q%d" % i, timeout=30) for i in range(2)]
        with pytest.raises(grpc.RpcError) as e:
            call(b"overflow", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "too many calls waiting" in e.value.details()
        assert not any(f.done() for f in queued)
        held.cancel()
        assert [f.result() for f in queued] == [b"q0", b"q1"]


# A strict HTTP/2 backend (python h2) that sends its SETTINGS 300 ms late,
# with MAX_CONCURRENT_STREAMS 1 and MAX_HEADER_LIST_SIZE 2048, and holds
# every client to them from the first byte: a stream past the first open
# one is refused (REFUSED_STREAM), a header block over 2048 bytes (RFC 9113
# counting) ends the connection, as grpcio does. It echoes unary calls and
# writes what it saw to the file named by argv[2].
LATE_SETTINGS_SERVER = r"""
import json, socket, sys, threading, time
import h2.config, h2.connection, h2.errors, h2.events, h2.exceptions, h2.settings
host, port = sys.argv[1].rsplit(":", 1)
stats, lock = {"conns": 0, "requests": 0, "refused": 0, "oversized": 0, "errors": 0}, threading.Lock()
def note(key):
    with lock:
        stats[key] += 1
        with open(sys.argv[2], "w") as f:
            json.dump(stats, f)
GRPC = [(b":status", b"200"), (b"content-type", b"application/grpc")]
def serve(sock):
    note("conns")
    time.sleep(0.3)  # the client's preface and first requests are in by now
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    conn.local_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1, h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 2048})
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    open_streams, bodies = set(), {}
    while True:
        data = sock.recv(65536)
        if not data:
            return
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            note("errors")
            sock.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                if sum(32 + len(n) + len(v) for n, v in ev.headers) > 2048:
                    note("oversized")
                    conn.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
                    sock.sendall(conn.data_to_send())
                    sock.close()
                    return
                if open_streams:
                    note("refused")
                    conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    continue
                note("requests")
                open_streams.add(ev.stream_id)
                bodies[ev.stream_id] = b""
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id in bodies:
                    bodies[ev.stream_id] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in open_streams:
                conn.send_headers(ev.stream_id, GRPC)
                conn.send_data(ev.stream_id, bodies.pop(ev.stream_id))
                conn.send_headers(ev.stream_id, [(b"grpc-status", b"0")], end_stream=True)
                open_streams.discard(ev.stream_id)
        sock.sendall(conn.data_to_send())
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, int(port)))
srv.listen(64)
print("ready", flush=True)
while True:
    s, _ = srv.accept()
    threading.Thread(target=serve, args=(s,), daemon=True).start()
"""


def test_a_new_connection_sends_one_stream_until_the_backends_settings(grelay_factory, tmp_path):
    """A burst of 20 calls on a fresh upstream connection to a backend whose
    SETTINGS (1 stream, 2048-byte header lists) come late: grelay sends one
    stream before them, and a call whose headers are over 4 KiB waits for
    them: no call is refused by the backend, no connection is ended by it,
    the calls with 5 KiB of metadata get grelay's own RESOURCE_EXHAUSTED and
    every other call succeeds."""
    stats_path = tmp_path / "stats.json"
    bport = free_port()
    proc = subprocess.Popen([PY, "-c", LATE_SETTINGS_SERVER, "127.0.0.1:%d" % bport, str(stats_path)],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        port = free_port()
        g = grelay_factory(simple_config(port, ["127.0.0.1:%d" % bport]), port)
        big = [("x-big", "a" * 5000)]
        with grpc.insecure_channel(g.addr) as ch:
            call = ch.unary_unary("/test.Echo/Unary")
            first = call.future(b"call 0", metadata=big, timeout=30)  # the first stream: held for the SETTINGS
            time.sleep(0.05)
            rest = [call.future(b"call %d" % i, metadata=big if i % 5 == 0 else (), timeout=30) for i in range(1, 20)]
            outcomes = []
            for i, f in enumerate([first] + rest):
                try:
                    outcomes.append(("ok", f.result()))
                except grpc.RpcError as e:
                    outcomes.append((e.code(), e.details()))
        for i, (what, detail) in enumerate(outcomes):
            if i % 5 == 0:
                assert what == grpc.StatusCode.RESOURCE_EXHAUSTED, (i, what, detail)
                assert "SETTINGS_MAX_HEADER_LIST_SIZE" in detail
            else:
                assert (what, detail) == ("ok", b"call %d" % i), (i, what, detail)
        stats = json.loads(stats_path.read_text())
        assert stats["refused"] == 0 and stats["oversized"] == 0 and stats["errors"] == 0, stats
        assert stats["requests"] == 16, stats
        assert stats["conns"] <= 8, stats  # max_connections: no connection opened for nothing
    finally:
        stop(proc)


@pytest.mark.parametrize("window,want", [(None, 256 * 1024 * 1024), ("2MiB", 2 * 1024 * 1024)])
def test_the_backend_may_write_the_clusters_connection_window_ahead(raw_backend, grelay_factory, window, want):
    """The connection-level window grelay grants a backend is the cluster's
    connection_window, 256 MiB unless set: grelay gives it back as bytes
    arrive, so it bounds no memory, and at 1 MiB a busy grpc-go backend ran
    out of it and sent HEADERS ahead of DATA (docs/performance.md, One call
    a connection). h2_raw_server reports the window it may write into."""
    port = free_port()
    extra = {"connection_window": window} if window else None
    grelay_factory(simple_config(port, [raw_backend.addr], routes=[{"match": {"prefix": "/"}, "cluster": "backend"}],
                                 cluster_extra=extra), port)
    with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
        _, call = ch.unary_unary("/raw.Svc/Ok").with_call(b"\x01\x02", timeout=10)
    assert dict(call.trailing_metadata())["x-conn-window"] == str(want)


def test_calls_waiting_for_a_connection_that_never_comes_up_go_to_another_endpoint(solo, grelay_factory):
    """Half of a burst goes to an endpoint that accepts TCP but never sends
    SETTINGS: one call rides its connection, the others wait in its line.
    When connect_timeout ends that connection, the calls in line are retried
    on the healthy endpoint with the one that rode it, as if they had been
    on it: none waits out max_pending_time."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(64)  # never accepted: the kernel completes the handshake, nothing answers
    try:
        port = free_port()
        extra = {"connect_timeout": "1s", "max_pending_time": "3s"}
        g = grelay_factory(simple_config(port, ["127.0.0.1:%d" % dead.getsockname()[1], solo.addr],
                                         cluster_extra=extra), port)
        with grpc.insecure_channel(g.addr) as ch:
            call = ch.unary_unary("/test.Echo/Unary")
            futs = [call.future(b"%d" % i, timeout=30) for i in range(30)]
            outcomes = []
            for f in futs:
                try:
                    outcomes.append(f.result())
                except grpc.RpcError as e:
                    outcomes.append((e.code(), e.details()))
        assert outcomes == [b"%d" % i for i in range(30)]
    finally:
        dead.close()
