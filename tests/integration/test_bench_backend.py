"""The benchmark's C echo backend is a correct gRPC server, as a real gRPC
client (grpcio) sees it: unary and bidi echo, status OK in the trailers."""
import os
import subprocess

import grpc
import pytest

from harness import ROOT, free_port, simple_config

BACKEND = os.path.join(os.path.dirname(os.environ.get("GRELAY_BIN", os.path.join(ROOT, "build-test", "grelay"))),
                       "echo_backend")




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


STREAM_LOAD = os.path.join(os.path.dirname(BACKEND), "stream_load")


ALL = [{"match": {"prefix": "/"}, "cluster": "backend"}]


def stream_load(addr, *args):
    host, port = addr.split(":")
    r = subprocess.run([STREAM_LOAD, host, port, *map(str, args)], capture_output=True, text=True, timeout=60)
    f = r.stdout.split()
    return r.returncode, dict(zip(f[0::2], f[1::2])), r.stderr


def test_stream_load_direct_and_through_grelay(echo, grelay_factory):
    """The bidi load generator's messages come back intact, straight from the
    backend and through grelay (2 connections x 3 streams, 4 in flight, 300 B)."""
    rc, out, err = stream_load(echo, 2, 3, 300, 0.5, 4)
    assert rc == 0, err
    assert int(out["messages"]) > 100 and out["errors"] == "0"
    assert int(out["bytes"]) == int(out["messages"]) * 305
    port = free_port()
    grelay_factory(simple_config(port, [echo], routes=ALL), port)
    rc, out, err = stream_load("127.0.0.1:%d" % port, 2, 3, 300, 0.5, 4)
    assert rc == 0, err
    assert int(out["messages"]) > 100 and out["errors"] == "0"


def test_stream_load_reports_a_failed_call(grelay_factory):
    """A call that ends with an error status counts as an error, and the exit
    code says so (here: no endpoint answers, so grelay gives UNAVAILABLE)."""
    port = free_port()
    grelay_factory(simple_config(port, ["127.0.0.1:%d" % free_port()], routes=ALL), port)
    rc, out, err = stream_load("127.0.0.1:%d" % port, 1, 2, 100, 0.5, 1)
    assert rc == 1
    assert out["messages"] == "0" and int(out["errors"]) >= 2
    assert "grpc-status 14" in err
