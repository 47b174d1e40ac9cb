#!/usr/bin/python3
"""A real gRPC server (grpcio) for grelay's integration tests.

Payloads are raw bytes (gRPC does not care what a message holds), so no
protobuf code generation is needed. Every response carries the backend's
name in the `x-backend` initial metadata, so tests can see where a call went.

Methods:
  /test.Echo/Unary         echoes the request; metadata `x-*` comes back as
                           initial metadata and as trailers with suffix `-t`;
                           `x-fail-code: NAME` makes it fail with the request
                           (UTF-8) as the status message; `x-barrier: N`
                           holds the call until N calls are in flight;
                           `x-hold: ID` never answers, records the deadline it was
                           given (time_remaining, in "held") and records ID when
                           cancelled; `x-time-remaining` reports the deadline seen;
                           `x-fail-on: NAME` / `x-hold-on: NAME` fail (trailers-only
                           UNAVAILABLE) or hold only on the backend called NAME;
                           `x-delay-ms: N` answers after N ms (nothing sent before).
  /test.Echo/ServerStream  request JSON {"count", "size", "hold", "id",
                           "interval_ms"}: sends count messages of size bytes,
                           interval_ms apart; with hold, waits after the first
                           message until the client cancels.
  /test.Echo/ClientStream  answers JSON {"messages", "bytes"} after the last one;
                           with `x-quiet`, no response headers before that.
  /test.Echo/Bidi          echoes each message as soon as it arrives.
  /test.Echo/Flood         streams 64 KiB messages (up to 4096) as fast as the
                           peer's flow control lets it; counts them.
  /test.Control/Events     JSON of what happened here: cancellations, flood count,
                           the connections (peers) unary calls came in on.

Usage: echo_server.py NAME HOST:PORT [CERT KEY [CLIENT_CA]]
  with CERT and KEY it serves TLS; with CLIENT_CA it requires client certificates.
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc

NAME = sys.argv[1]
ADDR = sys.argv[2]
MAX_MSG = 16 * 1024 * 1024

state_lock = threading.Lock()
events = {"cancelled": [], "flood_sent": 0, "calls": 0, "peers": [], "held": {}}
barriers = {}


def record(key, value=None):
    with state_lock:
        if isinstance(events[key], list):
            events[key].append(value)
        else:
            events[key] += 1 if value is None else value


def record_cancel_on_termination(context, call_id):
    """Records call_id when the RPC ends without the handler finishing it.
    grpcio runs termination callbacks however the RPC ends, even when it
    never resumes a streaming handler that was cancelled mid-write."""
    done = {"finished": False}

    def on_end():
        if not done["finished"]:
            record("cancelled", call_id)

    context.add_callback(on_end)
    return done


def initial_md(context):
    md = [("x-backend", NAME)]
    for k, v in context.invocation_metadata():
        if k.startswith("x-") and not k.startswith("x-fail"):
            md.append((k, v))
    return md


def unary(request, context):
    record("calls")
    md0 = dict(context.invocation_metadata())
    if NAME in md0.get("x-fail-on", "").split(","):
        # Trailers-only failure (nothing sent before the status).
        context.abort(grpc.StatusCode.UNAVAILABLE, "%s is failing on purpose" % NAME)
    if NAME in md0.get("x-hold-on", "").split(","):
        md0["x-hold"] = "hold-on-" + NAME
    with state_lock:
        if context.peer() not in events["peers"]:
            events["peers"].append(context.peer())
    md = md0
    if "x-delay-ms" in md:
        time.sleep(int(md["x-delay-ms"]) / 1000.0)
    remaining = context.time_remaining()
    md_out = initial_md(context)
    if remaining is not None:
        md_out.append(("x-time-remaining", "%.6f" % remaining))
    if "x-hold" in md:
        # Never answers: waits for the client (or grelay) to cancel.
        with state_lock:
            events["held"][md["x-hold"]] = remaining
        record_cancel_on_termination(context, md["x-hold"])
        deadline = time.monotonic() + 30
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        return b""
    context.send_initial_metadata(md_out)
    trailers = []
    for k, v in context.invocation_metadata():
        if k.startswith("x-") and not k.startswith("x-fail"):
            if k.endswith("-bin"):
                trailers.append((k[:-4] + "-t-bin", v))
            else:
                trailers.append((k + "-t", v))
    context.set_trailing_metadata(trailers)
    if "x-barrier" in md:
        # Blocks until x-barrier calls with the same key are here at once:
        # proves that many calls are in flight together.
        with state_lock:
            b = barriers.setdefault(md.get("x-barrier-key", ""), threading.Barrier(int(md["x-barrier"])))
        try:
            b.wait(timeout=20)
        except threading.BrokenBarrierError:
            context.abort(grpc.StatusCode.ABORTED, "barrier broken: calls were not concurrent")
    if "x-fail-code" in md:
        context.abort(grpc.StatusCode[md["x-fail-code"]], request.decode("utf-8"))
    return request


def server_stream(request, context):
    record("calls")
    req = json.loads(request or b"{}")
    context.send_initial_metadata(initial_md(context))
    count, size = int(req.get("count", 3)), int(req.get("size", 8))
    done = record_cancel_on_termination(context, req.get("id", "")) if req.get("hold") else {}
    for i in range(count):
        if i and req.get("interval_ms"):
            time.sleep(req["interval_ms"] / 1000.0)
        yield (b"%08d" % i + b"x" * max(0, size - 8))[:max(size, 8)]
        if req.get("hold") and i == 0:
            deadline = time.monotonic() + 30
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not context.is_active():
                return
    done["finished"] = True


def client_stream(request_iterator, context):
    record("calls")
    if "x-quiet" not in dict(context.invocation_metadata()):
        context.send_initial_metadata(initial_md(context))
    n = total = 0
    for msg in request_iterator:
        n += 1
        total += len(msg)
    return json.dumps({"messages": n, "bytes": total}).encode()


def bidi(request_iterator, context):
    record("calls")
    context.send_initial_metadata(initial_md(context))
    for msg in request_iterator:
        yield msg


def flood(request, context):
    record("calls")
    context.send_initial_metadata(initial_md(context))
    chunk = b"f" * 65536
    for _ in range(4096):
        if not context.is_active():
            return
        yield chunk
        record("flood_sent")


def control_events(request, context):
    with state_lock:
        return json.dumps(events).encode()


def main():
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=256),
        options=[("grpc.max_receive_message_length", MAX_MSG), ("grpc.max_send_message_length", MAX_MSG)],
    )
    echo = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Flood": grpc.unary_stream_rpc_method_handler(flood),
    })
    control = grpc.method_handlers_generic_handler("test.Control", {
        "Events": grpc.unary_unary_rpc_method_handler(control_events),
    })
    server.add_generic_rpc_handlers((echo, control))
    if len(sys.argv) > 4:
        read = lambda p: open(p, "rb").read()
        client_ca = read(sys.argv[5]) if len(sys.argv) > 5 else None
        creds = grpc.ssl_server_credentials([(read(sys.argv[4]), read(sys.argv[3]))], root_certificates=client_ca,
                                            require_client_auth=client_ca is not None)
        port = server.add_secure_port(ADDR, creds)
    else:
        port = server.add_insecure_port(ADDR)
    if port == 0:
        print("cannot listen on " + ADDR, file=sys.stderr, flush=True)
        sys.exit(1)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
