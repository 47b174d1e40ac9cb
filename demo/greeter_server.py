#!/usr/bin/python3
"""Demo backend: a plain gRPC server (grpcio) with a Greeter service.

Messages are UTF-8 text rather than protobuf, so the demo needs no code
generation; grelay forwards gRPC frames without looking inside them.

  /demo.Greeter/SayHello          "Ada" -> "Hello, Ada! (from backend-1)"
  /demo.Greeter/StreamGreetings   "Ada" -> five greetings, 200 ms apart

Usage: greeter_server.py NAME HOST:PORT
"""
import socket
import sys
import time
from concurrent import futures

import grpc

NAME, ADDR = sys.argv[1], sys.argv[2]


def say_hello(request, context):
    context.send_initial_metadata([("x-backend", NAME)])
    return ("Hello, %s! (from %s)" % (request.decode("utf-8") or "stranger", NAME)).encode("utf-8")


def stream_greetings(request, context):
    context.send_initial_metadata([("x-backend", NAME)])
    who = request.decode("utf-8") or "stranger"
    for i in range(5):
        yield ("Greeting %d of 5 for %s (from %s)" % (i + 1, who, NAME)).encode("utf-8")
        time.sleep(0.2)


def serve_on(addr):
    """A started server on addr, or None if the port cannot be bound."""
    # No SO_REUSEPORT (grpcio's default): a second demo's backend on this
    # port fails to start instead of sharing it with this one.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Greeter", {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
        "StreamGreetings": grpc.unary_stream_rpc_method_handler(stream_greetings),
    }),))
    try:
        if server.add_insecure_port(addr) == 0:
            return None
    except RuntimeError:
        return None
    server.start()
    return server


def bindable(addr):
    """Whether addr can be bound now (asked with a plain socket, so that a
    port still held logs nothing)."""
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
            return True
        except OSError:
            return False


def listening(addr):
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def main():
    # 50051-50053 lie in Linux's ephemeral range (32768-60999): a connection
    # some client made from one of them and closed stays in TIME_WAIT for
    # 60 s, and the port cannot be bound meanwhile. Wait that out (nothing
    # accepts there); a port another server listens on is an error at once.
    deadline = time.monotonic() + 65
    if not bindable(ADDR):
        print("%s is held by a connection made from it (TIME_WAIT lasts 60 s); waiting, 60 s at most" % ADDR, flush=True)
    while not bindable(ADDR):
        if listening(ADDR):
            sys.exit("cannot listen on %s: another server listens there" % ADDR)
        if time.monotonic() > deadline:
            sys.exit("cannot listen on " + ADDR)
        time.sleep(0.5)
    server = serve_on(ADDR)
    if server is None:
        sys.exit("cannot listen on " + ADDR)
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
