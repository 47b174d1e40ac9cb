#!/usr/bin/python3
"""The two services of the mesh in a box (docs/mesh.md), real grpcio servers.

Payloads are JSON bytes (no protobuf code generation). Both serve
grpc.health.v1.Health/Check, written by hand: the answer is the protobuf
HealthCheckResponse{status}, two bytes.

  mesh_service.py b NAME LISTEN
      /mesh.B/Echo  request {"delay_ms": N}: answers after N ms with
                    {"replica": NAME, "remaining": the deadline it got, in
                    seconds (grpcio's time_remaining(), from grpc-timeout)}
  mesh_service.py a NAME LISTEN OUTBOUND
      /mesh.A/Call  calls /mesh.B/Echo through its outbound sidecar at
                    OUTBOUND with what is left of its own deadline (as grpc-go
                    and grpc-java propagate deadlines), and answers
                    {"service": NAME, "remaining": its deadline, "b": B's answer};
                    B's failure comes back with B's status and message

Signals: SIGTERM turns the health answer to NOT_SERVING and the process
goes on serving (the sidecar in front of it may still be draining calls to
it: what a Kubernetes preStop hook gives an application); SIGINT, or a
second SIGTERM, stops the server, letting calls in flight end (5 s at most),
and exits 0. "ready" on stdout once it listens.
"""
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

SERVING, NOT_SERVING = 1, 2
KIND, NAME, ADDR = sys.argv[1], sys.argv[2], sys.argv[3]
OUTBOUND = sys.argv[4] if KIND == "a" else None

state = {"health": SERVING, "calls": 0}  # the health answer; calls answered
lock = threading.Lock()
stop_now = threading.Event()


def check(request, context):
    return bytes([0x08, state["health"]])


def b_echo(request, context):
    remaining = context.time_remaining()
    req = json.loads(request or b"{}")
    if req.get("delay_ms"):
        time.sleep(req["delay_ms"] / 1000.0)
    with lock:
        state["calls"] += 1
    return json.dumps({"replica": NAME, "remaining": remaining}).encode()


b_channel = None  # A's one channel to its outbound sidecar


def a_call(request, context):
    remaining = context.time_remaining()
    if remaining is None:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "call /mesh.A/Call with a deadline")
    try:
        reply = b_channel.unary_unary("/mesh.B/Echo")(request, timeout=context.time_remaining())
    except grpc.RpcError as e:
        context.abort(e.code(), "B: %s" % e.details())
    with lock:
        state["calls"] += 1
    return json.dumps({"service": NAME, "remaining": remaining, "b": json.loads(reply)}).encode()


def on_signal(signum, frame):
    if signum == signal.SIGTERM and state["health"] == SERVING:
        state["health"] = NOT_SERVING
    else:
        stop_now.set()


def main():
    global b_channel
    # no SO_REUSEPORT: a replica started while the old one still runs fails to
    # listen instead of sharing its port
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=[("grpc.so_reuseport", 0)])
    handlers = {"Check": grpc.unary_unary_rpc_method_handler(check)}
    health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", handlers)
    if KIND == "a":
        b_channel = grpc.insecure_channel(OUTBOUND)
        app = grpc.method_handlers_generic_handler("mesh.A", {"Call": grpc.unary_unary_rpc_method_handler(a_call)})
    else:
        app = grpc.method_handlers_generic_handler("mesh.B", {"Echo": grpc.unary_unary_rpc_method_handler(b_echo)})
    server.add_generic_rpc_handlers((health, app))
    if server.add_insecure_port(ADDR) == 0:
        print("cannot listen on " + ADDR, file=sys.stderr, flush=True)
        sys.exit(1)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print("ready", flush=True)
    while not stop_now.wait(0.2):
        pass
    server.stop(5).wait(6)
    if b_channel is not None:
        b_channel.close()


if __name__ == "__main__":
    main()
