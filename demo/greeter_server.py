#!/usr/bin/python3
"""Demo backend: a plain gRPC server (grpcio) with a Greeter service.

Messages are UTF-8 text rather than protobuf, so the demo needs no code
generation; grelay forwards gRPC frames without looking inside them.

  /demo.Greeter/SayHello          "Ada" -> "Hello, Ada! (from backend-1)"
  /demo.Greeter/StreamGreetings   "Ada" -> five greetings, 200 ms apart

Usage: greeter_server.py NAME HOST:PORT
"""
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


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Greeter", {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
        "StreamGreetings": grpc.unary_stream_rpc_method_handler(stream_greetings),
    }),))
    if server.add_insecure_port(ADDR) == 0:
        sys.exit("cannot listen on " + ADDR)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
