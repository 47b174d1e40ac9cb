#!/usr/bin/python3
"""A deliberately misbehaving HTTP/2 backend (python h2), for what a real gRPC
server will not do on request: reset streams, answer non-gRPC HTTP.

The last path segment of a call picks the behaviour:
  RstRefused / RstCancel / RstProtocol   RST_STREAM with that code, no response
  RstAfterData                           response HEADERS + one gRPC message, then RST_STREAM(INTERNAL_ERROR)
  Http503                                ":status 503" with an HTML body, no gRPC framing
  Http200Html                            ":status 200" with an HTML body: a web server, not gRPC
  Ok                                     a proper gRPC answer echoing the request, with the
                                         grpc-timeout it received in trailer x-seen-grpc-timeout,
                                         the connection's number in x-conn-id and the
                                         connection-level window the client granted, before the
                                         answer's DATA, in x-conn-window, and the codes of every
                                         RST_STREAM this server has received so far (all
                                         connections), comma-separated, in x-resets
  Hold                                   no answer at all, whatever grpc-timeout says (a server that
                                         does not keep deadlines: only the proxy can end the call)
  Goaway                                 GOAWAY (last stream = this one), then a proper answer
  GoawayRefuseOnce                       the first time: GOAWAY with last stream 0, no answer
                                         (the client must treat the stream as refused); then Ok

Usage: h2_raw_server.py HOST:PORT
"""
import socket
import struct
import sys
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events

HOST, PORT = sys.argv[1].rsplit(":", 1)
counter_lock = threading.Lock()
counters = {"conns": 0, "refused_once": False, "resets": []}


def serve(sock):
    with counter_lock:
        counters["conns"] += 1
        conn_id = counters["conns"]
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    paths, bodies, timeouts = {}, {}, {}
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                paths[ev.stream_id] = dict(ev.headers)[":path"]
                timeouts[ev.stream_id] = dict(ev.headers).get("grpc-timeout", "none")
                bodies[ev.stream_id] = b""
            elif isinstance(ev, h2.events.StreamReset):
                with counter_lock:
                    counters["resets"].append(int(ev.error_code))
            elif isinstance(ev, h2.events.DataReceived):
                bodies[ev.stream_id] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                extra = act(conn, ev.stream_id, paths[ev.stream_id].rsplit("/", 1)[-1], bodies[ev.stream_id],
                            timeouts[ev.stream_id], conn_id)
                if extra:
                    sock.sendall(conn.data_to_send() + extra)
        sock.sendall(conn.data_to_send())


GRPC = [(":status", "200"), ("content-type", "application/grpc")]


def goaway_frame(last_stream_id):
    """A GOAWAY written by hand: h2 would refuse to send anything after its own."""
    return struct.pack(">I", 8)[1:] + bytes([0x7, 0]) + struct.pack(">III", 0, last_stream_id, 0)


def act(conn, sid, what, body, timeout, conn_id):
    codes = {"RstRefused": h2.errors.ErrorCodes.REFUSED_STREAM, "RstCancel": h2.errors.ErrorCodes.CANCEL,
             "RstProtocol": h2.errors.ErrorCodes.PROTOCOL_ERROR}
    if what == "Hold":
        return None
    if what in codes:
        conn.reset_stream(sid, codes[what])
    elif what == "RstAfterData":
        conn.send_headers(sid, GRPC)
        conn.send_data(sid, b"\x00\x00\x00\x00\x05hello")
        conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
    elif what in ("Http503", "Http200Html"):
        status = "503" if what == "Http503" else "200"
        conn.send_headers(sid, [(":status", status), ("content-type", "text/html")])
        conn.send_data(sid, b"<html><body>%s</body></html>" % status.encode(), end_stream=True)
    else:
        if what == "GoawayRefuseOnce":
            with counter_lock:
                first, counters["refused_once"] = not counters["refused_once"], True
            if first:
                return goaway_frame(0)
        prefix = goaway_frame(sid) if what == "Goaway" else b""
        window = conn.outbound_flow_control_window
        conn.send_headers(sid, GRPC)
        conn.send_data(sid, body)
        with counter_lock:
            resets = ",".join(str(c) for c in counters["resets"])
        conn.send_headers(sid, [("grpc-status", "0"), ("x-seen-grpc-timeout", timeout),
                                ("x-conn-id", str(conn_id)), ("x-conn-window", str(window)),
                                ("x-resets", resets)], end_stream=True)
        return prefix + conn.data_to_send() if prefix else None


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, int(PORT)))
    srv.listen(16)
    print("ready", flush=True)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


if __name__ == "__main__":
    main()
