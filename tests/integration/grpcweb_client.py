"""A byte-exact gRPC-Web client over raw HTTP/1.1, for checking grelay's
translation without a browser in between."""
import base64
import socket
import struct
import time


def frame(payload, flag=0):
    return bytes([flag]) + struct.pack(">I", len(payload)) + payload


def b64_segments(data):
    """Decodes base64 that may hold padding between segments, quantum by
    quantum, as browser clients do."""
    out = b""
    for i in range(0, len(data) - len(data) % 4, 4):
        out += base64.b64decode(data[i:i + 4])
    return out


def parse_frames(body):
    """-> (messages, trailers dict or None)"""
    msgs, trailers, i = [], None, 0
    while i + 5 <= len(body):
        flag, n = body[i], struct.unpack(">I", body[i + 1:i + 5])[0]
        payload = body[i + 5:i + 5 + n]
        assert len(payload) == n, "truncated frame"
        if flag & 0x80:
            trailers = {}
            for line in payload.decode().split("\r\n"):
                if line:
                    k, v = line.split(":", 1)
                    trailers[k.strip()] = v.strip()
        else:
            msgs.append(payload)
        i += 5 + n
    assert i == len(body), "junk after the last frame"
    return msgs, trailers


class H1:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, raw):
        self.sock.sendall(raw)

    def request(self, path, body=b"", headers=(), method="POST", chunks=None):
        head = "%s %s HTTP/1.1\r\nhost: grelay.test\r\n" % (method, path)
        for k, v in headers:
            head += "%s: %s\r\n" % (k, v)
        if chunks is not None:
            head += "transfer-encoding: chunked\r\n\r\n"
            raw = head.encode()
            for c in chunks:
                raw += b"%x\r\n" % len(c) + c + b"\r\n"
            raw += b"0\r\n\r\n"
        else:
            head += "content-length: %d\r\n\r\n" % len(body)
            raw = head.encode() + body
        self.send(raw)

    def _fill(self, deadline):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by grelay")
        self.buf += data

    def read_head(self, seconds=10):
        deadline = time.monotonic() + seconds
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def read_chunk(self, seconds=10):
        """One chunk of a chunked body; b"" at its end."""
        deadline = time.monotonic() + seconds
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        size_line, self.buf = self.buf.split(b"\r\n", 1)
        n = int(size_line, 16)
        while len(self.buf) < n + 2:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read_response(self, seconds=10):
        status, headers = self.read_head(seconds)
        body = b""
        if headers.get("transfer-encoding") == "chunked":
            while True:
                c = self.read_chunk(seconds)
                if not c:
                    break
                body += c
        else:
            n = int(headers.get("content-length", "0"))
            while len(self.buf) < n:
                self._fill(None)
            body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body


def one_request(port, path, body=b"", headers=(), method="POST"):
    """One request on a fresh HTTP/1.1 connection; -> (status, headers, body)."""
    c = H1(port)
    try:
        c.request(path, body, list(headers), method=method)
        return c.read_response()
    finally:
        c.close()


def web_call(port, path, payload, text=False, headers=(), chunks=None):
    """One gRPC-Web unary call; -> (status, headers, messages, trailers)."""
    c = H1(port)
    try:
        body = frame(payload)
        ct = "application/grpc-web-text" if text else "application/grpc-web+proto"
        if text:
            body = base64.b64encode(body)
        c.request(path, body, [("content-type", ct), ("x-grpc-web", "1")] + list(headers),
                  chunks=None if chunks is None else chunks(body))
        status, h, raw = c.read_response()
        if text:
            raw = b64_segments(raw)
        msgs, trailers = parse_frames(raw)
        return status, h, msgs, trailers
    finally:
        c.close()
