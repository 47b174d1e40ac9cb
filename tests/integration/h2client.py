"""A raw HTTP/2 client on Python h2, for tests whose client must do what
grpcio will not (headers past a limit, reading frames one by one)."""
import socket
import time

import h2.config
import h2.connection
import h2.events


def raw_h2(port):
    """A connected h2 client (preface and SETTINGS sent): (socket, H2Connection)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def grpc_headers(path="/test.Echo/Unary", extra=()):
    """A gRPC request's header block."""
    return [(":method", "POST"), (":scheme", "http"), (":authority", "test"), (":path", path),
            ("content-type", "application/grpc"), ("te", "trailers")] + list(extra)


def read_until_closed(s, c, stream_id, seconds=10):
    """Collects response headers, data and trailers of one stream (or its reset)."""
    out = {"headers": None, "data": b"", "trailers": None, "reset": None}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            break
        for ev in c.receive_data(data):
            if getattr(ev, "stream_id", None) != stream_id:
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                out["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                out["data"] += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                out["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamReset):
                out["reset"] = ev.error_code
            if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                s.sendall(c.data_to_send())
                return out
        s.sendall(c.data_to_send())
    return out


class H2Listener:
    """A loopback listener in this process that serves each connection on a
    thread of its own with self.serve(sock) (a subclass writes it: a raw
    HTTP/2 server that misbehaves on purpose). stop() closes it."""

    def __init__(self):
        import threading
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.addr = "127.0.0.1:%d" % self.srv.getsockname()[1]
        self.lock = threading.Lock()
        self.stopping = False
        self._thread = threading.Thread(target=self.accept, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def accept(self):
        import threading
        while not self.stopping:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def serve(self, sock):
        raise NotImplementedError

    def stop(self):
        self.stopping = True
        self.srv.close()
