"""The benchmark's C echo backend is a correct gRPC server, as a real gRPC
client (grpcio) sees it: unary and bidi echo, status OK in the trailers."""
import os
import subprocess

import grpc
import pytest

from harness import ROOT, free_port, stop, wait_port

BACKEND = os.path.join(os.path.dirname(os.environ.get("GRELAY_BIN", os.path.join(ROOT, "build-test", "grelay"))),
                       "echo_backend")


@pytest.fixture
def echo():
    port = free_port()
    proc = subprocess.Popen([BACKEND, "127.0.0.1", str(port)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        wait_port(port, proc)
        yield "127.0.0.1:%d" % port
    finally:
        stop(proc)


def test_unary_echo(echo):
    with grpc.insecure_channel(echo) as ch:
        reply, call = ch.unary_unary("/bench.Echo/Unary").with_call(b"x" * 100, timeout=10)
        assert reply == b"x" * 100
        assert call.code() == grpc.StatusCode.OK
        big = bytes(range(256)) * 64
        assert ch.unary_unary("/bench.Echo/Unary")(big, timeout=10) == big


def test_bidi_echo_interleaves(echo):
    import queue
    with grpc.insecure_channel(echo) as ch:
        q = queue.Queue()
        sent = []

        def reqs():
            for i in range(50):
                sent.append(b"m%d" % i)
                yield sent[-1]
                q.get(timeout=10)

        got = []
        it = ch.stream_stream("/bench.Echo/Bidi")(reqs(), timeout=30)
        for r in it:
            got.append(r)
            q.put(r)
        assert got == sent and it.code() == grpc.StatusCode.OK
