"""Hand-built HTTP/2 frames and a raw client connection, for attack drivers
that must send what a conforming library refuses to send.

Only the standard library: frames are built byte by byte, header
blocks by hand (HPACK literals and indexes, RFC 7541) so every byte on the
wire is the one the attack needs.
"""
import errno
import select
import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, \
    S_MAX_HEADER_LIST_SIZE = range(1, 7)
CANCEL = 0x8
ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 4: "SETTINGS_TIMEOUT",
          5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR",
          10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + struct.pack(">I", sid) + payload


def settings(pairs=()):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def settings_ack():
    return frame(SETTINGS, ACK, 0)


def rst(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def ping(data=b"abcdefgh"):
    return frame(PING, 0, 0, data)


# ---- HPACK by hand (RFC 7541) ----

def hint(value, prefix_bits, first=0):
    """An HPACK integer with an N-bit prefix; first holds the pattern bits above it."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hstr(s):
    if isinstance(s, str):
        s = s.encode()
    return hint(len(s), 7) + s


def lit(name, value):
    """Literal header field without indexing, new name (0000 0000)."""
    return b"\x00" + hstr(name) + hstr(value)


def lit_indexed_name(index, value):
    """Literal without indexing, name from the static table."""
    return hint(index, 4) + hstr(value)


def lit_incremental(name, value):
    """Literal with incremental indexing (01 00 0000): enters the dynamic table."""
    return b"\x40" + hstr(name) + hstr(value)


def indexed(index):
    return hint(index, 7, 0x80)


def table_size_update(size):
    return hint(size, 5, 0x20)


def request_block(path="/bench.Echo/Unary", authority="127.0.0.1", extra=b""):
    """A gRPC request's header block, stateless (nothing enters the dynamic table)."""
    return (indexed(3)                       # :method POST
            + indexed(6)                     # :scheme http
            + lit_indexed_name(4, path)      # :path
            + lit_indexed_name(1, authority)  # :authority
            + lit_indexed_name(31, "application/grpc")  # content-type
            + lit("te", "trailers") + extra)


def grpc_msg(body=b""):
    return b"\x00" + struct.pack(">I", len(body)) + body


def headers(sid, block, end_stream=False, end_headers=True):
    return frame(HEADERS, (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0), sid, block)


def call(sid, body=b"", extra=b"", path="/bench.Echo/Unary"):
    """HEADERS + one DATA frame carrying a gRPC message and END_STREAM."""
    return headers(sid, request_block(path, extra=extra)) + frame(DATA, END_STREAM, sid, grpc_msg(body))


# ---- a raw client connection ----

def wait_fd(sock, events, seconds):
    """poll(2) on one socket (select(2) cannot take the fds past 1024 that
    the connection floods reach)."""
    p = select.poll()
    p.register(sock, events)
    p.poll(int(seconds * 1000))


class Conn:
    """One TCP connection speaking raw HTTP/2 (or raw bytes). It reads only
    when told to (poll()), so a driver decides whether it is a reader."""

    def __init__(self, port, stats, rcvbuf=None, preface=True, client_settings=(), timeout=5):
        self.stats = stats
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        stats["connections"] = stats.get("connections", 0) + 1
        self.buf = b""
        self.closed = False
        self.next_sid = 1
        self.ended = 0              # streams the peer ended (END_STREAM or RST_STREAM)
        self.peer_settings = {}
        self.conn_window = 65535    # our send window toward the peer, connection level
        self.got_settings = False
        self.out = b""               # bytes not yet accepted by the kernel
        self.h2 = True               # parse what arrives as HTTP/2 frames (False: read and drop)
        if preface:
            self.send(PREFACE + settings(client_settings))

    def sid(self):
        s = self.next_sid
        self.next_sid += 2
        return s

    def fileno(self):
        return self.sock.fileno()

    def send(self, data, wait=0.0):
        """Queues data and writes what the kernel takes; with wait, keeps trying
        that long. Returns False once the connection is gone."""
        if self.closed:
            return False
        self.out += data
        deadline = time.monotonic() + wait
        while self.out:
            try:
                n = self.sock.send(self.out)
                self.out = self.out[n:]
                self.stats["bytes_sent"] = self.stats.get("bytes_sent", 0) + n
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.stats["send_blocked"] = self.stats.get("send_blocked", 0) + 1
                    return True
                wait_fd(self.sock, select.POLLOUT, max(0.0, min(0.05, deadline - time.monotonic())))
            except OSError as e:
                self._gone("send: " + errno.errorcode.get(e.errno, str(e.errno)))
                return False
        return True

    def pending(self):
        return len(self.out)

    def poll(self, answer=True):
        """Reads what has arrived and parses frames: ACKs SETTINGS and PINGs
        when answer, counts GOAWAY/RST_STREAM and ended streams."""
        if self.closed:
            return False
        while True:
            try:
                d = self.sock.recv(262144)
            except BlockingIOError:
                break
            except OSError as e:
                self._gone("recv: " + errno.errorcode.get(e.errno, str(e.errno)))
                return False
            if not d:
                self._gone("closed by proxy")
                return False
            self.stats["bytes_received"] = self.stats.get("bytes_received", 0) + len(d)
            if self.h2:
                self.buf += d
        reply = b""
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]
            if ftype == SETTINGS and not flags & ACK:
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.peer_settings[k] = v
                self.got_settings = True
                if answer:
                    reply += settings_ack()
            elif ftype == PING and not flags & ACK and answer:
                reply += frame(PING, ACK, 0, payload)
            elif ftype == GOAWAY:
                code = ERRORS.get(int.from_bytes(payload[4:8], "big"), "?")
                key = "goaway_" + code
                self.stats[key] = self.stats.get(key, 0) + 1
            elif ftype == RST_STREAM:
                code = ERRORS.get(int.from_bytes(payload[:4], "big"), "?")
                key = "rst_" + code
                self.stats[key] = self.stats.get(key, 0) + 1
                self.ended += 1
            elif ftype in (HEADERS, DATA) and flags & END_STREAM:
                self.ended += 1
                self.stats["streams_answered"] = self.stats.get("streams_answered", 0) + 1
            elif ftype == WINDOW_UPDATE and sid == 0:
                self.conn_window += int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if reply:
            self.send(reply)
        return True

    def wait_settings(self, seconds=3):
        deadline = time.monotonic() + seconds
        while not self.got_settings and not self.closed and time.monotonic() < deadline:
            wait_fd(self.sock, select.POLLIN, 0.05)
            self.poll()
        return self.got_settings

    def _gone(self, why):
        if not self.closed:
            self.closed = True
            key = "conn_end: " + why
            self.stats[key] = self.stats.get(key, 0) + 1
            try:
                self.sock.close()
            except OSError:
                pass

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
