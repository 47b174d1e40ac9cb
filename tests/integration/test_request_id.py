"""x-request-id: grelay generates one (a UUID v4) for a call that has none
and forwards it upstream; one the client sent reaches the backend exactly;
`request_id: {generate: false}` adds none. traceparent and tracestate pass
through untouched. The backend is a real grpcio server (in this process)
that answers with the metadata it received and puts the x-request-id it saw
in its trailers."""
import json
import re
import threading
from concurrent import futures

import grpc
import pytest

from grpcweb_client import web_call
from harness import free_port, simple_config

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


class MetadataBackend:
    """A grpcio server on loopback: /test.Md/Seen answers with a JSON list of
    the [key, value] metadata pairs it received (all of them, repeats
    included) and sends the x-request-id values it saw in its trailers."""

    def __init__(self):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.lock = threading.Lock()
        self.seen = []  # per call: the metadata pairs

        def seen(request, context):
            md = [[k, v] for k, v in context.invocation_metadata()]
            with self.lock:
                self.seen.append(md)
            ids = [v for k, v in md if k == "x-request-id"]
            context.set_trailing_metadata([("x-request-id-seen", i) for i in ids] + [("x-ids-seen", str(len(ids)))])
            return json.dumps(md).encode()

        handler = grpc.method_handlers_generic_handler("test.Md", {"Seen": grpc.unary_unary_rpc_method_handler(seen)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        assert self.port != 0
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def stop(self):
        self.server.stop(grace=None).wait(10)


@pytest.fixture
def md_backend():
    b = MetadataBackend()
    try:
        yield b
    finally:
        b.stop()


def start(grelay_factory, md_backend, generate=None, **listener_extra):
    port = free_port()
    cfg = simple_config(port, [md_backend.addr], routes=[{"match": {"prefix": "/test."}, "cluster": "backend"}],
                        workers=2, listener_extra=listener_extra or None)
    if generate is not None:
        cfg["request_id"] = {"generate": generate}
    return grelay_factory(cfg, port)


def call(g, metadata=()):
    """One call through grelay; -> (metadata the backend received, its trailers)."""
    with grpc.insecure_channel(g.addr) as ch:
        body, c = ch.unary_unary("/test.Md/Seen").with_call(b"", metadata=list(metadata), timeout=10)
    return json.loads(body), c.trailing_metadata()


def values(md, key):
    return [v for k, v in md if k == key]


def test_a_call_without_one_gets_a_generated_uuid_per_call(md_backend, grelay_factory):
    g = start(grelay_factory, md_backend)
    ids = []
    for _ in range(20):
        md, trailers = call(g)
        seen = values(md, "x-request-id")
        assert len(seen) == 1, md
        assert UUID4.match(seen[0]), seen[0]
        assert values(trailers, "x-request-id-seen") == seen  # the trailers say the same
        ids.append(seen[0])
    assert len(set(ids)) == 20


def test_the_id_a_client_sent_reaches_the_backend_exactly(md_backend, grelay_factory):
    g = start(grelay_factory, md_backend)
    for rid in ("client-chosen-id-1", "Not A UUID; with: punctuation/and spaces", "x" * 200):
        md, trailers = call(g, [("x-request-id", rid)])
        assert values(md, "x-request-id") == [rid]
        assert values(trailers, "x-request-id-seen") == [rid]


def test_generate_false_adds_none_and_keeps_the_clients(md_backend, grelay_factory):
    g = start(grelay_factory, md_backend, generate=False)
    md, trailers = call(g)
    assert values(md, "x-request-id") == []
    assert values(trailers, "x-ids-seen") == ["0"]
    md, _ = call(g, [("x-request-id", "kept-anyway")])
    assert values(md, "x-request-id") == ["kept-anyway"]


def test_generate_true_written_is_the_default(md_backend, grelay_factory):
    g = start(grelay_factory, md_backend, generate=True)
    md, _ = call(g)
    assert len(values(md, "x-request-id")) == 1 and UUID4.match(values(md, "x-request-id")[0])


def test_traceparent_and_tracestate_pass_untouched(md_backend, grelay_factory):
    g = start(grelay_factory, md_backend)
    md, _ = call(g, [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE), ("x-request-id", "trace-call")])
    assert values(md, "traceparent") == [TRACEPARENT]
    assert values(md, "tracestate") == [TRACESTATE]
    assert values(md, "x-request-id") == ["trace-call"]
    # Without an x-request-id of its own the trace context still arrives as sent, beside the generated id.
    md, _ = call(g, [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)])
    assert values(md, "traceparent") == [TRACEPARENT]
    assert values(md, "tracestate") == [TRACESTATE]
    assert UUID4.match(values(md, "x-request-id")[0])


def test_grpc_web_calls_get_one_too(md_backend, grelay_factory):
    g = start(grelay_factory, md_backend, grpc_web=True)
    status, _, msgs, trailers = web_call(g.port, "/test.Md/Seen", b"")
    assert status == 200 and trailers["grpc-status"] == "0"
    md = json.loads(msgs[0])
    assert len(values(md, "x-request-id")) == 1 and UUID4.match(values(md, "x-request-id")[0])
    status, _, msgs, _ = web_call(g.port, "/test.Md/Seen", b"", headers=[("x-request-id", "from-the-browser")])
    assert values(json.loads(msgs[0]), "x-request-id") == ["from-the-browser"]
