"""Header blocks, both ways (docs/limits.md, Header blocks): every field counts
32 + name + value and one field against the limits; a block that decodes far
past them (an HPACK bomb) is cut at once; a backend's response headers, its
1xx blocks and a call's retries hold bounded memory.

Raw HTTP/2 peers are written here by hand (frames and HPACK bytes), because
the attacks need HPACK states python's h2 will not produce, and the backends
need to say what no gRPC server says."""
import os
import select
import socket
import struct
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from h2client import H2Listener, grpc_headers, raw_h2, read_until_closed
from harness import free_port, simple_config

# ---- HPACK and frames by hand (RFC 7541, RFC 9113 4.1). ----


def hpack_int(value, prefix_bits, first=0):
    """An HPACK integer with a prefix_bits prefix; first holds the byte's other bits."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    if isinstance(s, str):
        s = s.encode()
    return hpack_int(len(s), 7) + s  # no Huffman


def literal(name, value, index=False):
    """A literal field with a new name, added to the dynamic table if index."""
    return (b"\x40" if index else b"\x00") + hpack_str(name) + hpack_str(value)


def indexed(i):
    return hpack_int(i, 7, 0x80)


FIRST_DYNAMIC = 62  # the newest dynamic table entry
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def headers_frame(sid, block, end_stream=False):
    return frame(0x1, END_HEADERS | (END_STREAM if end_stream else 0), sid, block)


def request_pseudo(path="/test.Echo/Unary"):
    # :method POST and :scheme http from the static table, then literals.
    return (indexed(3) + indexed(6) + literal(":path", path) + literal(":authority", "test") +
            literal("content-type", "application/grpc") + literal("te", "trailers"))


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# AddressSanitizer keeps freed memory in a quarantine (256 MB by default):
# grelay runs with a small one where RSS is measured, so RSS shows what
# grelay holds, not what ASan delays giving back.
SMALL_QUARANTINE = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8"}


def vm_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# ---- A raw client (python h2) for exact field counts. ----


def call(s, c, sid, headers, seconds=10):
    """Sends one unary call and collects its answer."""
    c.send_headers(sid, headers)
    c.send_data(sid, b"\x00\x00\x00\x00\x02hi", end_stream=True)
    s.sendall(c.data_to_send())
    return read_until_closed(s, c, sid, seconds)


def fields(n):
    return [("x-f%03d" % i, "v") for i in range(n)]


def test_101_fields_are_refused_naming_the_field_limit_and_100_pass(proxy):
    s, c = raw_h2(proxy.port)
    try:
        out = call(s, c, 1, grpc_headers(extra=fields(101 - 6)))  # 6 from grpc_headers, pseudo-headers included
        assert out["headers"] is not None, out
        assert out["headers"][b"grpc-status"] == b"8", out
        assert out["headers"][b"grpc-message"] == b"request headers exceed the listener's limit of 100 fields"
        out = call(s, c, 3, grpc_headers(extra=fields(100 - 6)))
        assert out["data"] == b"\x00\x00\x00\x00\x02hi", out
        assert out["trailers"][b"grpc-status"] == b"0", out
    finally:
        s.close()


def test_grpcio_reads_both_answers_as_resource_exhausted(channel):
    """150 fields: the block is read to its end and answered; 300 (twice
    past the limit): cut with RST_STREAM(ENHANCE_YOUR_CALM), and the
    connection ends; the channel connects again."""
    unary = channel.unary_unary("/test.Echo/Unary")
    for n, details in ((150, "request headers exceed the listener's limit of 100 fields"),
                       (300, "Received RST_STREAM with error code 11")):
        with pytest.raises(grpc.RpcError) as e:
            unary(b"x", timeout=10, metadata=[("x-m%d" % i, "v") for i in range(n)])
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.value.details() == details
    assert unary(b"after", timeout=10, wait_for_ready=True) == b"after"  # on a new connection


def test_the_32_byte_overhead_counts(backends, grelay_factory):
    """50 fields whose names and values sum to ~2,700 bytes fit 4096 bytes
    without the overhead, and do not with it (50 x 32 = 1,600 more)."""
    port = free_port()
    g = grelay_factory(simple_config(port, [backends[0].addr], listener_extra={
        "max_request_headers": 4096, "max_request_header_fields": 1000}), port)
    base = grpc_headers()
    base_len = sum(len(n) + len(v) for n, v in base)
    extra = [("x-f%03d" % i, "v" * 54) for i in range(44)]  # 60 bytes of name and value each
    plain = base_len + sum(len(n) + len(v) for n, v in extra)
    counted = plain + 32 * (len(base) + len(extra))
    assert plain < 4096 < counted
    s, cl = raw_h2(port)
    try:
        out = call(s, cl, 1, base + extra)
        assert out["headers"] is not None and out["headers"][b"grpc-status"] == b"8", out
        assert out["headers"][b"grpc-message"] == (b"request headers exceed the listener's limit of 4096 bytes "
                                                   b"(32 + name + value a field)")
        fewer = extra[:30]
        assert base_len + sum(len(n) + len(v) for n, v in fewer) + 32 * (len(base) + len(fewer)) < 4096
        out = call(s, cl, 3, base + fewer)
        assert out["trailers"] is not None and out["trailers"][b"grpc-status"] == b"0", out
    finally:
        s.close()


def test_request_trailers_over_the_limit_end_the_call(proxy):
    s, c = raw_h2(proxy.port)
    try:
        c.send_headers(1, grpc_headers())
        c.send_data(1, b"\x00\x00\x00\x00\x02hi")
        c.send_headers(1, fields(101), end_stream=True)
        s.sendall(c.data_to_send())
        deadline = time.monotonic() + 10
        status = None
        while status is None and time.monotonic() < deadline:
            data = s.recv(65536)
            assert data, "connection closed"
            for ev in c.receive_data(data):
                if isinstance(ev, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                    h = dict(ev.headers)
                    if b"grpc-status" in h:
                        status = h
                elif isinstance(ev, h2.events.StreamReset):
                    status = {"reset": ev.error_code}
            s.sendall(c.data_to_send())
        assert status is not None and status.get(b"grpc-status") == b"8", status
        assert b"request trailers exceed the listener's limit of 100 fields" in status[b"grpc-message"]
    finally:
        s.close()


# ---- The HPACK bomb. ----

BOMB_VALUE = 4000  # 32 + 6 + 4000 fits the 4,096-byte table grelay advertises
BOMB_REFS = 16000  # one HEADERS frame of ~16 KiB that decodes to ~64 MB


def bomb(port, stop, stats):
    """One attacking connection: the 4 KB field enters the decoder's table
    once, then every request is a 16 KiB block of one-byte references to
    it. Reconnects if grelay closes the connection; reads what grelay
    sends so that its answers never block it."""
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.05)
            continue
        s.settimeout(0)
        out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0)
        first = request_pseudo() + literal("x-bomb", "a" * BOMB_VALUE, index=True)
        sid = 1
        out += headers_frame(sid, first + indexed(FIRST_DYNAMIC) * 100, end_stream=True)
        try:
            s.setblocking(True)
            s.sendall(out)
            while not stop.is_set() and sid < 2 ** 30:
                sid += 2
                s.sendall(headers_frame(sid, request_pseudo() + indexed(FIRST_DYNAMIC) * BOMB_REFS, True))
                stats["blocks"] += 1
                s.setblocking(False)
                try:
                    while s.recv(65536):
                        pass
                    break  # closed by grelay
                except BlockingIOError:
                    pass
                s.setblocking(True)
        except OSError:
            stats["closed"] += 1
        finally:
            s.close()
        stats["conns"] += 1


def test_hpack_bomb_is_cut_while_other_calls_go_on(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [backends[0].addr], listener_extra={"hibernate_after": "0s"}), port,
                       env=SMALL_QUARANTINE)
    pid = g.proc.pid
    with grpc.insecure_channel(g.addr) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        assert unary(b"warm", timeout=10) == b"warm"
        rss_before = vm_kib(pid, "VmRSS")
        cpu_before = proc_cpu_seconds(pid)
        stop = threading.Event()
        stats = {"blocks": 0, "conns": 0, "closed": 0}
        attackers = [threading.Thread(target=bomb, args=(port, stop, stats)) for _ in range(3)]
        for t in attackers:
            t.start()
        ok = failed = 0
        peak = rss_before
        start = time.monotonic()
        try:
            while time.monotonic() - start < 3.0:
                try:
                    assert unary(b"legit", timeout=5) == b"legit"
                    ok += 1
                except grpc.RpcError as e:
                    failed += 1
                    print("legit call failed:", e.code(), e.details())
                peak = max(peak, vm_kib(pid, "VmRSS"))
        finally:
            stop.set()
            for t in attackers:
                t.join(10)
        cpu = proc_cpu_seconds(pid) - cpu_before
    print("bomb: %d blocks (%d MB decoded), legit ok=%d failed=%d, RSS %d -> %d KiB, CPU %.2fs" %
          (stats["blocks"], stats["blocks"] * BOMB_REFS * BOMB_VALUE // 10**6, ok, failed, rss_before, peak, cpu))
    assert stats["blocks"] >= 30, stats  # the attack happened
    assert failed == 0 and ok >= 3
    # Each cut block costs grelay two blocks at the limit (2 x 64 KiB
    # decoded), not the 64 MB it decodes to. Measured under
    # AddressSanitizer: 0.5 ms a block (7 ms before blocks were cut, with
    # 2 legitimate calls in 3 s); the bound is loose, 4 times that.
    assert cpu < 1.0 + stats["blocks"] * 0.002, (cpu, stats)
    assert peak - rss_before < 64 * 1024, (rss_before, peak)
    # The first cut block of a connection ends it (GOAWAY ENHANCE_YOUR_CALM),
    # and grelay reads nothing more of it: every connection held, unread,
    # for the GOAWAY grace, then closed; the attackers reconnected.
    assert "a request header block far past the listener's limits" in g.log()
    assert g.log().count("GOAWAY ENHANCE_YOUR_CALM, held 1s unread") >= stats["conns"] - 3 >= 3, stats


# ---- Misbehaving backends. ----


class RawBackend(H2Listener):
    """A raw HTTP/2 server in this process: python h2 reads the requests and
    handles the connection, answer(conn, sock, sid, state) writes each
    answer's frames by hand. Records the streams grelay reset."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.resets = []
        self.requests = 0
        self.start()

    def serve(self, sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        # pumps: stream id -> [frame to repeat, times left] (answer() may add one)
        state = {"indexed": False, "pumps": {}}
        try:
            while not self.stopping:
                readable, _, _ = select.select([sock], [], [], 0.001 if state["pumps"] else 1.0)
                for sid, pump in list(state["pumps"].items()):
                    sock.sendall(pump[0])
                    pump[1] -= 1
                    if pump[1] == 0:
                        del state["pumps"][sid]
                if not readable:
                    continue
                data = sock.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        with self.lock:
                            self.requests += 1
                        sock.sendall(conn.data_to_send())
                        self.answer(sock, ev.stream_id, state)
                    elif isinstance(ev, h2.events.StreamReset):
                        state["pumps"].pop(ev.stream_id, None)
                        with self.lock:
                            self.resets.append(ev.error_code)
                sock.sendall(conn.data_to_send())
        except OSError:
            return
        finally:
            sock.close()



GRPC_HEAD = indexed(8) + literal("content-type", "application/grpc")  # :status 200


def many_fields(sock, sid, state):
    """2,000 one-byte fields (a name and an empty value) in the response headers."""
    block = GRPC_HEAD + b"".join(literal(bytes([0x61 + i % 26]), b"") for i in range(2000))
    sock.sendall(split_block(sid, block))


def split_block(sid, block, end_stream=False):
    """HEADERS then CONTINUATION frames of at most 16 KiB."""
    chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)] or [b""]
    out = b""
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        flags = (END_HEADERS if last else 0) | (END_STREAM if end_stream and i == 0 else 0)
        out += frame(0x1 if i == 0 else 0x9, flags, sid, chunk)
    return out


def endless_1xx(sock, sid, state):
    """Informational blocks (:status 103), one a millisecond, until grelay
    resets the stream (at most 20,000)."""
    one = frame(0x1, END_HEADERS, sid, literal(":status", "103") + literal("link", "</x>; rel=preload"))
    state["pumps"][sid] = [one, 20000]


@pytest.fixture
def raw_backend():
    made = []

    def make(answer):
        b = RawBackend(answer)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def fails_each_call_and_resets_upstream(raw_backend, grelay_factory, handler, calls, code, details):
    """Each of `calls` calls to a misbehaving backend fails with code and
    details; grelay resets every upstream stream and its RSS stays bounded."""
    b = raw_backend(handler)
    port = free_port()
    g = grelay_factory(simple_config(port, [b.addr]), port, env=SMALL_QUARANTINE)
    rss_before = vm_kib(g.proc.pid, "VmRSS")
    with grpc.insecure_channel(g.addr) as ch:
        for _ in range(calls):
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
            assert e.value.code() == code
            assert e.value.details() == details
    deadline = time.monotonic() + 5
    while len(b.resets) < calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(b.resets) >= calls, b.resets  # grelay reset every upstream stream
    assert vm_kib(g.proc.pid, "VmRSS") - rss_before < 32 * 1024


def test_2000_response_fields_fail_the_call_and_reset_upstream(raw_backend, grelay_factory):
    fails_each_call_and_resets_upstream(raw_backend, grelay_factory, many_fields, 5, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        "upstream response headers exceed grelay's limit of 1000 fields")


def test_endless_1xx_blocks_fail_the_call(raw_backend, grelay_factory):
    fails_each_call_and_resets_upstream(raw_backend, grelay_factory, endless_1xx, 3, grpc.StatusCode.INTERNAL,
                                        "upstream sent more than 5 informational (1xx) responses")


PAD_VALUE = 4000


def big_unavailable(sock, sid, state):
    """A trailers-only UNAVAILABLE whose headers decode to ~240 KiB (60
    references to a 4 KB table entry), under grelay's 256 KiB limit."""
    block = GRPC_HEAD + literal("grpc-status", "14") + literal("grpc-message", "try again")
    if not state["indexed"]:
        block += literal("x-pad", "p" * PAD_VALUE, index=True)
        state["indexed"] = True
    block += indexed(FIRST_DYNAMIC) * 59
    sock.sendall(split_block(sid, block, end_stream=True))


def test_retries_reuse_the_memory_of_earlier_attempts(raw_backend, grelay_factory):
    """30 calls at once, 11 attempts each, ~240 KiB of response headers per
    attempt: kept, that would be 30 x 11 x 240 KiB = 77 MiB; reused, about
    30 x 240 KiB = 7 MiB. VmHWM is grelay's peak."""
    b = raw_backend(big_unavailable)
    port = free_port()
    routes = [{"match": {"prefix": "/test."}, "cluster": "backend",
               "retry_policy": {"retry_on": ["unavailable"], "num_retries": 10,
                                "backoff": {"base_interval": "50ms", "max_interval": "100ms"}}}]
    g = grelay_factory(simple_config(port, [b.addr], routes=routes), port, env=SMALL_QUARANTINE)
    # The last attempt's headers reach the client: let it take them.
    with grpc.insecure_channel(g.addr, options=[("grpc.max_metadata_size", 1 << 20)]) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        with pytest.raises(grpc.RpcError) as e:
            unary(b"x", timeout=20)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        hwm_before = vm_kib(g.proc.pid, "VmHWM")
        requests_before = b.requests
        futures = [unary.future(b"x", timeout=30) for _ in range(30)]
        for f in futures:
            assert f.exception() is not None and f.code() == grpc.StatusCode.UNAVAILABLE
    attempts = b.requests - requests_before
    hwm = vm_kib(g.proc.pid, "VmHWM")
    print("retries: %d attempts, VmHWM %d -> %d KiB" % (attempts, hwm_before, hwm))
    assert attempts == 30 * 11
    assert hwm - hwm_before < 40 * 1024, (hwm_before, hwm)
